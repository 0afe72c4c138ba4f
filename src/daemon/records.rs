//! The pure mapping of the decision core's outputs to the uplink's protobuf records: indices
//! become lane and device ids, enums become the wire's. No I/O, no clock (the time is given).
use crate::decision::barrier::{Arm, BarrierInputs};
use crate::decision::{
    Alarm, AlarmKind, CredentialKind, Decision, Direction, Policy, StateReport, SubjectKind,
};
use crate::proto::v1;
use crate::store::outbox::Record;

/// An event of one device (its lane looked up).
pub fn device_event(policy: &Policy, device: usize, now_ms: i64, body: v1::event::Body) -> Record {
    let dev = &policy.devices[device];
    Record::Event(v1::Event {
        gateway_time_ms: now_ms,
        lane: policy.lanes[dev.lane].id.clone(),
        device: dev.id.clone(),
        body: Some(body),
        ..Default::default()
    })
}

/// What became of a command to a gate (sent, confirmed, uncertain, refused with why).
pub fn command_outcome(
    policy: &Policy,
    device: usize,
    command: &str,
    outcome: &str,
    detail: &str,
    now_ms: i64,
) -> Record {
    let body = v1::event::Body::CommandOutcome(v1::CommandOutcome {
        command: command.into(),
        outcome: outcome.into(),
        detail: detail.into(),
    });
    device_event(policy, device, now_ms, body)
}

/// The lane's fever threshold in force and whether `celsius` is at or above it, for the record:
/// the forms read the verdict from the record, never from a threshold of their own.
fn fever_fields(policy: &Policy, lane: usize, celsius: Option<f64>) -> (Option<f32>, bool) {
    match celsius {
        Some(t) => (
            policy.lanes.get(lane).map(|l| l.fever_threshold_c as f32),
            policy.is_fever(lane, t),
        ),
        None => (None, false),
    }
}

/// The passage record of one decision.
pub fn passage(policy: &Policy, d: Decision, now_ms: i64) -> Record {
    let latency_us = u32::try_from(d.received.elapsed().as_micros()).unwrap_or(u32::MAX);
    let (fever_threshold_c, fever) = fever_fields(policy, d.lane, d.temperature_c);
    Record::Event(v1::Event {
        gateway_time_ms: now_ms,
        lane: policy.lanes[d.lane].id.clone(),
        device: policy.devices[d.device].id.clone(),
        body: Some(v1::event::Body::Passage(v1::PassageDecision {
            subject_kind: match d.subject_kind {
                SubjectKind::Resident => v1::SubjectKind::Resident,
                SubjectKind::Visitor => v1::SubjectKind::Visitor,
                SubjectKind::Plate => v1::SubjectKind::Plate,
                SubjectKind::Unknown => v1::SubjectKind::Unknown,
            } as i32,
            subject_id: d.subject_id,
            temperature_c: d.temperature_c.map(|t| t as f32),
            verdict: if d.allow {
                v1::Verdict::Allow
            } else {
                v1::Verdict::Deny
            } as i32,
            reason: d.reason.as_str().to_string(),
            decision_latency_us: latency_us,
            cause: d.cause,
            rule: d.rule.to_string(),
            device_flag_disagrees: d.device_flag_disagrees,
            direction: match d.direction {
                Direction::In => v1::Direction::In,
                Direction::Out => v1::Direction::Out,
            } as i32,
            mode: d.mode.as_str().to_string(),
            operator_id: d.operator.as_ref().map(|o| o.0.clone()).unwrap_or_default(),
            operator_reason: d.operator.map(|o| o.1).unwrap_or_default(),
            not_actuated: d.not_actuated,
            device_clock_offset_ms: d.device_clock_offset_ms,
            medium: match d.credential {
                Some(CredentialKind::Person) => v1::Medium::Person,
                Some(CredentialKind::Card) => v1::Medium::Card,
                Some(CredentialKind::Plate) => v1::Medium::Plate,
                None => v1::Medium::Remote,
            } as i32,
            household: d.household,
            fever_threshold_c,
            fever,
        })),
        ..Default::default()
    })
}

/// A reading no identification took, recorded on its own.
pub fn reading(
    policy: &Policy,
    lane: usize,
    device: usize,
    temperature_c: f64,
    cause: String,
    now_ms: i64,
) -> Record {
    let (fever_threshold_c, fever) = fever_fields(policy, lane, Some(temperature_c));
    Record::Event(v1::Event {
        gateway_time_ms: now_ms,
        lane: policy.lanes[lane].id.clone(),
        device: policy.devices[device].id.clone(),
        body: Some(v1::event::Body::Reading(v1::Reading {
            temperature_c: temperature_c as f32,
            cause,
            fever_threshold_c,
            fever,
        })),
        ..Default::default()
    })
}

pub fn alarm(policy: &Policy, a: Alarm, now_ms: i64) -> Record {
    Record::Alarm(v1::Alarm {
        gateway_time_ms: now_ms,
        lane: a
            .lane
            .map(|l| policy.lanes[l].id.clone())
            .unwrap_or_default(),
        device: a
            .device
            .map(|d| policy.devices[d].id.clone())
            .unwrap_or_default(),
        kind: match a.kind {
            AlarmKind::Fever => v1::AlarmKind::Fever,
            AlarmKind::LowConfidence => v1::AlarmKind::LowConfidence,
            AlarmKind::CommandUncertain => v1::AlarmKind::CommandOutcomeUncertain,
            AlarmKind::QuarantineExit => v1::AlarmKind::QuarantineExit,
            AlarmKind::OutingOverdue => v1::AlarmKind::OutingOverdue,
            AlarmKind::FireMode => v1::AlarmKind::FireMode,
            AlarmKind::Tamper => v1::AlarmKind::Tamper,
            AlarmKind::DeviceClock => v1::AlarmKind::DeviceClock,
            AlarmKind::FireInputCleared => v1::AlarmKind::FireInputCleared,
            AlarmKind::FireInputUnknown => v1::AlarmKind::FireInputUnknown,
            AlarmKind::ClockJump => v1::AlarmKind::ClockJump,
            AlarmKind::CommandNotSent => v1::AlarmKind::CommandNotSent,
        } as i32,
        detail: a.detail,
        temperature_c: a.temperature_c.map(|t| t as f32),
        subject_id: a.subject_id,
        cause: a.cause,
        ..Default::default()
    })
}

/// An alarm of the gateway itself (at start: a damaged store, a refused list).
pub fn gateway_alarm(kind: v1::AlarmKind, detail: String, now_ms: i64) -> Record {
    Record::Alarm(v1::Alarm {
        gateway_time_ms: now_ms,
        kind: kind as i32,
        detail,
        ..Default::default()
    })
}

/// A device's link went down or came back.
pub fn link_alarm(status: &v1::DeviceStatus, online: bool, detail: &str, now_ms: i64) -> Record {
    let kind = if online {
        v1::AlarmKind::DeviceOnline
    } else {
        v1::AlarmKind::DeviceOffline
    };
    Record::Alarm(v1::Alarm {
        gateway_time_ms: now_ms,
        lane: status.lane.clone(),
        device: status.id.clone(),
        kind: kind as i32,
        detail: detail.to_string(),
        ..Default::default()
    })
}

/// A client on the device endpoint broke its rules; `status` is the device when it had
/// authenticated.
pub fn misbehaving_alarm(status: Option<&v1::DeviceStatus>, detail: &str, now_ms: i64) -> Record {
    Record::Alarm(v1::Alarm {
        gateway_time_ms: now_ms,
        lane: status.map(|s| s.lane.clone()).unwrap_or_default(),
        device: status.map(|s| s.id.clone()).unwrap_or_default(),
        kind: v1::AlarmKind::DeviceMisbehaving as i32,
        detail: detail.to_string(),
        ..Default::default()
    })
}

/// A gate's answer to our last command to it (`code` 0: accepted). Accepted is not opened: a
/// gate without read-back cannot say more.
pub fn command_answer(last_command: &str, code: i64) -> v1::event::Body {
    v1::event::Body::CommandOutcome(v1::CommandOutcome {
        command: last_command.into(),
        outcome: if code == 0 { "accepted" } else { "rejected" }.into(),
        detail: if code == 0 {
            String::new()
        } else {
            format!("code {code}")
        },
    })
}

/// A device's report about itself (an MQTT camera's barrier status, loop input, command reply);
/// a heartbeat leaves no record. `stored`: the device stored it and uploaded it late.
pub fn state_report(
    state: StateReport,
    last_command: &str,
    stored: bool,
) -> Option<v1::event::Body> {
    Some(match state {
        StateReport::Arm(arm) => v1::event::Body::DeviceState(v1::DeviceState {
            readable: arm != Arm::Unknown,
            arm: arm.as_str().into(),
            stored,
            ..Default::default()
        }),
        StateReport::Loop(on) => v1::event::Body::DeviceState(v1::DeviceState {
            readable: true,
            arm: Arm::Unknown.as_str().into(),
            arming_loop: on,
            stored,
            ..Default::default()
        }),
        StateReport::Ack(code) => command_answer(last_command, code),
        StateReport::Heartbeat => return None,
    })
}

/// An interlocked barrier's inputs (`None`: unreadable), arm and fault code.
pub fn barrier_state(inputs: Option<BarrierInputs>, arm: Arm, fault: u16) -> v1::event::Body {
    v1::event::Body::DeviceState(v1::DeviceState {
        readable: inputs.is_some(),
        arm: arm.as_str().into(),
        safety_loop: inputs.is_some_and(|i| i.safety_loop),
        arming_loop: inputs.is_some_and(|i| i.arming_loop),
        fault_code: fault.into(),
        stored: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{DevicePolicy, LanePolicy, Mode, Quota, Reason, Role};
    use std::time::Instant;

    fn policy() -> Policy {
        Policy {
            plausible_min_c: 30.0,
            plausible_max_c: 43.0,
            quota: Quota {
                outings: 2,
                days: 7,
                overdue_h: 4,
            },
            min_plate_confidence: 80,
            barrier_confirm_ms: 4000,
            stale_event_ms: 30_000,
            lanes: vec![LanePolicy {
                id: "east-1".into(),
                fever_threshold_c: 37.3,
                gate: Some(1),
                join: None,
                anti_passback: false,
                direction: Direction::In,
            }],
            devices: vec![
                DevicePolicy {
                    id: "thermal-1".into(),
                    lane: 0,
                    role: Role::Thermal,
                    calibration_offset_c: 0.0,
                    direction: None,
                },
                DevicePolicy {
                    id: "gate-1".into(),
                    lane: 0,
                    role: Role::Turnstile,
                    calibration_offset_c: 0.0,
                    direction: None,
                },
            ],
        }
    }

    #[test]
    fn a_passage_carries_ids_verdict_reason_and_cause_but_no_index() {
        let d = Decision {
            lane: 0,
            device: 0,
            direction: Direction::Out,
            mode: Mode::Epidemic,
            subject_kind: SubjectKind::Resident,
            subject_id: "R000001".into(),
            temperature_c: Some(37.6),
            allow: false,
            reason: Reason::Fever,
            rule: "fever_threshold",
            device_flag_disagrees: true,
            cause: vec!["serial-9".into()],
            received: Instant::now(),
            gate: Some(1),
            vehicle: false,
            confidence: None,
            operator: None,
            not_actuated: false,
            device_clock_offset_ms: None,
            credential: None,
            household: String::new(),
        };
        let Record::Event(e) = passage(&policy(), d, 1234) else {
            panic!("a passage is an event");
        };
        assert_eq!(
            (e.lane.as_str(), e.device.as_str()),
            ("east-1", "thermal-1")
        );
        assert_eq!(e.gateway_time_ms, 1234);
        let Some(v1::event::Body::Passage(p)) = e.body else {
            panic!("a passage body");
        };
        assert_eq!(p.verdict, v1::Verdict::Deny as i32);
        assert_eq!(p.reason, "fever");
        assert_eq!(p.rule, "fever_threshold");
        assert_eq!(p.subject_kind, v1::SubjectKind::Resident as i32);
        assert_eq!(p.direction, v1::Direction::Out as i32);
        assert_eq!(p.mode, "epidemic");
        assert_eq!(p.cause, ["serial-9"]);
        assert_eq!(p.temperature_c, Some(37.6f32));
        assert!(p.device_flag_disagrees);
    }

    #[test]
    fn alarms_and_device_reports_map_to_their_wire_kinds() {
        let a = Alarm {
            kind: AlarmKind::CommandUncertain,
            lane: Some(0),
            device: Some(1),
            subject_id: String::new(),
            temperature_c: None,
            detail: "no read-back".into(),
            cause: Vec::new(),
        };
        let Record::Alarm(a) = alarm(&policy(), a, 5) else {
            panic!("an alarm record");
        };
        assert_eq!(a.kind, v1::AlarmKind::CommandOutcomeUncertain as i32);
        assert_eq!((a.lane.as_str(), a.device.as_str()), ("east-1", "gate-1"));

        let v1::event::Body::CommandOutcome(o) =
            state_report(StateReport::Ack(3), "open", false).unwrap()
        else {
            panic!("an ack is a command outcome");
        };
        assert_eq!(
            (o.command.as_str(), o.outcome.as_str()),
            ("open", "rejected")
        );
        assert_eq!(o.detail, "code 3");
        let v1::event::Body::DeviceState(s) =
            state_report(StateReport::Arm(Arm::Up), "", false).unwrap()
        else {
            panic!("an arm report is a device state");
        };
        assert!(s.readable);
        assert_eq!(s.arm, Arm::Up.as_str());
        let v1::event::Body::DeviceState(s) = barrier_state(None, Arm::Unknown, 7) else {
            panic!("a barrier state");
        };
        assert!(!s.readable);
        assert_eq!(s.fault_code, 7);
    }
}
