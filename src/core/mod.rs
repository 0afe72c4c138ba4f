//! The decision core: a pure, synchronous function of (policy, registry, observation, time) to a
//! decision. No sockets, clocks or disks in here — time is passed in — so every rule is testable in
//! microseconds and the hot path takes no locks.
//!
//! The rules, in the order they apply (DESIGN.md §5):
//! 1. a temperature outside the plausible range → deny `invalid_reading` (measure again);
//! 2. a temperature at or above the lane's threshold → deny `fever`, and raise a fever alarm;
//! 3. nobody recognised, or not in the registry → deny `unknown_subject`;
//! 4. suspended, or past `valid_until` → deny `expired`;
//! 5. quarantined → deny `quarantined`;
//! 6. otherwise allow `ok`.
//!
//! The device's own "abnormal temperature" flag never decides; a disagreement is recorded.
pub mod registry;

pub use registry::{Registry, RegistryBuilder, Resident, ResidentStatus};

use crate::profiles::Decoded;

/// Why a decision went the way it did. The codes are stable: upstream statistics key on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Ok,
    Fever,
    InvalidReading,
    NoTemperature,
    UnknownSubject,
    Expired,
    Quarantined,
    QuotaExceeded,
    Lockdown,
    Blacklisted,
    LowConfidence,
    AntiPassback,
    FireMode,
    RemoteOpen,
    DeviceFault,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Fever => "fever",
            Reason::InvalidReading => "invalid_reading",
            Reason::NoTemperature => "no_temperature",
            Reason::UnknownSubject => "unknown_subject",
            Reason::Expired => "expired",
            Reason::Quarantined => "quarantined",
            Reason::QuotaExceeded => "quota_exceeded",
            Reason::Lockdown => "lockdown",
            Reason::Blacklisted => "blacklisted",
            Reason::LowConfidence => "low_confidence",
            Reason::AntiPassback => "anti_passback",
            Reason::FireMode => "fire_mode",
            Reason::RemoteOpen => "remote_open",
            Reason::DeviceFault => "device_fault",
        }
    }
}

/// What the core knows about a lane.
#[derive(Debug, Clone)]
pub struct LanePolicy {
    pub id: String,
    pub fever_threshold_c: f64,
    /// The device (index into [`Policy::devices`]) that receives this lane's commands.
    pub gate: Option<usize>,
}

/// What the core knows about a device.
#[derive(Debug, Clone)]
pub struct DevicePolicy {
    pub id: String,
    /// Index into [`Policy::lanes`].
    pub lane: usize,
    pub calibration_offset_c: f64,
}

/// The rules in force, fixed at start (modes and remote changes come later through here).
#[derive(Debug, Clone)]
pub struct Policy {
    pub plausible_min_c: f64,
    pub plausible_max_c: f64,
    pub lanes: Vec<LanePolicy>,
    pub devices: Vec<DevicePolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    Resident,
    Unknown,
}

/// One decision for one subject at one lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub lane: usize,
    pub device: usize,
    pub subject_kind: SubjectKind,
    /// Registry id; empty when the subject is unknown (strangers leave no id upstream).
    pub subject_id: String,
    /// Calibrated, rounded to 0.01 °C.
    pub temperature_c: Option<f64>,
    pub allow: bool,
    pub reason: Reason,
    /// The rule that decided, for the audit trail.
    pub rule: &'static str,
    pub device_flag_disagrees: bool,
    pub fever_alarm: bool,
    /// Where the command goes (device index), if the lane has a gate.
    pub gate: Option<usize>,
}

/// Decides one observation from `device`. `None` when the observation is no identification
/// attempt at all (no subject and no temperature: a heartbeat, a door event).
pub fn decide(
    policy: &Policy,
    registry: &Registry,
    device: usize,
    ev: &Decoded,
    now_ms: i64,
) -> Option<Decision> {
    let dev = policy.devices.get(device)?;
    let lane = policy.lanes.get(dev.lane)?;
    if ev.subject.is_none() && ev.temperature_c.is_none() {
        return None;
    }
    let temperature_c = ev
        .temperature_c
        .map(|t| ((t + dev.calibration_offset_c) * 100.0).round() / 100.0);
    let mut d = Decision {
        lane: dev.lane,
        device,
        subject_kind: SubjectKind::Unknown,
        subject_id: String::new(),
        temperature_c,
        allow: false,
        reason: Reason::Ok,
        rule: "",
        device_flag_disagrees: false,
        fever_alarm: false,
        gate: lane.gate,
    };
    let resident = ev
        .subject
        .as_deref()
        .and_then(|id| registry.get(id).map(|r| (id, r)));
    if let Some((id, _)) = resident {
        d.subject_kind = SubjectKind::Resident;
        d.subject_id = id.to_string();
    }

    let deny = |mut d: Decision, reason: Reason, rule: &'static str| {
        d.reason = reason;
        d.rule = rule;
        Some(d)
    };
    if let Some(t) = temperature_c {
        // NaN fails both comparisons below, so it must be caught here as implausible.
        let plausible = t >= policy.plausible_min_c && t <= policy.plausible_max_c;
        if !plausible {
            return deny(d, Reason::InvalidReading, "plausible_range");
        }
        let fever = t >= lane.fever_threshold_c;
        d.device_flag_disagrees = ev.device_abnormal.is_some_and(|flag| flag != fever);
        if fever {
            d.fever_alarm = true;
            return deny(d, Reason::Fever, "fever_threshold");
        }
    }
    let Some((_, r)) = resident else {
        return deny(d, Reason::UnknownSubject, "registry");
    };
    if r.status == ResidentStatus::Suspended || now_ms > r.valid_until_ms {
        return deny(d, Reason::Expired, "registry_validity");
    }
    if r.status == ResidentStatus::Quarantined {
        return deny(d, Reason::Quarantined, "quarantine");
    }
    d.allow = true;
    d.reason = Reason::Ok;
    d.rule = "resident";
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> Policy {
        Policy {
            plausible_min_c: 30.0,
            plausible_max_c: 43.0,
            lanes: vec![LanePolicy {
                id: "east-1".into(),
                fever_threshold_c: 37.3,
                gate: Some(1),
            }],
            devices: vec![
                DevicePolicy {
                    id: "thermal-1".into(),
                    lane: 0,
                    calibration_offset_c: 0.0,
                },
                DevicePolicy {
                    id: "gate-1".into(),
                    lane: 0,
                    calibration_offset_c: 0.0,
                },
            ],
        }
    }

    fn registry() -> Registry {
        let mut b = RegistryBuilder::default();
        b.insert("R1", "H1", ResidentStatus::Active, i64::MAX);
        b.insert("R2", "H1", ResidentStatus::Suspended, i64::MAX);
        b.insert("R3", "H2", ResidentStatus::Active, 1_000);
        b.insert("R4", "H3", ResidentStatus::Quarantined, i64::MAX);
        b.build(0)
    }

    fn ev(subject: Option<&str>, t: Option<f64>) -> Decoded {
        Decoded {
            event_id: "1".into(),
            subject: subject.map(str::to_string),
            temperature_c: t,
            device_abnormal: None,
        }
    }

    fn reason(subject: Option<&str>, t: Option<f64>) -> (bool, Reason) {
        let d = decide(&policy(), &registry(), 0, &ev(subject, t), 2_000).unwrap();
        (d.allow, d.reason)
    }

    #[test]
    fn each_rule_gives_its_reason_code() {
        assert_eq!(reason(Some("R1"), Some(36.5)), (true, Reason::Ok));
        assert_eq!(reason(Some("R1"), None), (true, Reason::Ok));
        assert_eq!(reason(Some("R1"), Some(37.3)), (false, Reason::Fever));
        assert_eq!(
            reason(Some("R1"), Some(29.9)),
            (false, Reason::InvalidReading)
        );
        assert_eq!(
            reason(Some("R1"), Some(43.1)),
            (false, Reason::InvalidReading)
        );
        assert_eq!(
            reason(Some("R1"), Some(f64::NAN)),
            (false, Reason::InvalidReading)
        );
        assert_eq!(
            reason(Some("X9"), Some(36.5)),
            (false, Reason::UnknownSubject)
        );
        assert_eq!(reason(None, Some(36.5)), (false, Reason::UnknownSubject));
        assert_eq!(reason(Some("R2"), Some(36.5)), (false, Reason::Expired));
        assert_eq!(reason(Some("R3"), Some(36.5)), (false, Reason::Expired));
        assert_eq!(reason(Some("R4"), Some(36.5)), (false, Reason::Quarantined));
    }

    #[test]
    fn nothing_to_decide_without_subject_or_temperature() {
        assert_eq!(decide(&policy(), &registry(), 0, &ev(None, None), 0), None);
    }

    #[test]
    fn fever_denies_even_when_device_says_normal_and_the_disagreement_is_recorded() {
        let mut e = ev(Some("R1"), Some(38.0));
        e.device_abnormal = Some(false);
        let d = decide(&policy(), &registry(), 0, &e, 0).unwrap();
        assert!(!d.allow && d.fever_alarm && d.device_flag_disagrees);
        assert_eq!(d.gate, Some(1));
    }

    #[test]
    fn calibration_offset_applies_before_the_threshold() {
        let mut p = policy();
        p.devices[0].calibration_offset_c = 0.4;
        let d = decide(&p, &registry(), 0, &ev(Some("R1"), Some(36.9)), 0).unwrap();
        assert_eq!((d.reason, d.temperature_c), (Reason::Fever, Some(37.3)));
    }

    #[test]
    fn strangers_leave_no_id() {
        let d = decide(&policy(), &registry(), 0, &ev(Some("V123"), Some(36.5)), 0).unwrap();
        assert_eq!(
            (d.subject_kind, d.subject_id.as_str()),
            (SubjectKind::Unknown, "")
        );
    }

    proptest! {
        #[test]
        fn a_reading_at_or_above_threshold_never_opens(t in 37.3f64..200.0, who in "R[0-9]") {
            let d = decide(&policy(), &registry(), 0, &ev(Some(&who), Some(t)), 0).unwrap();
            prop_assert!(!d.allow);
        }

        #[test]
        fn an_allowed_decision_always_says_ok(t in proptest::option::of(-50f64..100.0), who in "[RX][0-9]", now in 0i64..5000) {
            if let Some(d) = decide(&policy(), &registry(), 0, &ev(Some(&who), t), now) {
                prop_assert_eq!(d.allow, d.reason == Reason::Ok);
            }
        }
    }
}
