//! The rules, in the order they apply (the module docs of `decision` list them): one
//! identification in, exactly one decision out, with one reason code and the rule that gave it.
use super::machine::{release, Core, Reading};
use super::policy::{calibrate, DAY_MS};
use super::registry::{PlateHolder, ResidentStatus};
use super::subject::{resolve, Subject};
use super::vocabulary::{
    Alarm, AlarmKind, CredentialKind, Decision, Direction, Mode, Observation, Output, Reason,
    SubjectKind,
};

impl Core {
    /// The rules, in order (module docs). Emits exactly one decision.
    pub(super) fn decide(
        &mut self,
        obs: Observation,
        joined: Option<Reading>,
        out: &mut Vec<Output>,
    ) {
        let Some(dev) = self.policy.devices.get(obs.device) else {
            return;
        };
        let li = dev.lane;
        let lane = &self.policy.lanes[li];
        if let Some(r) = &joined {
            release(&r.held, out);
        }
        // A redelivery (its first delivery never acknowledged: the gateway stopped before the
        // decision was durable — but maybe after its command went out) is decided and recorded,
        // never acted on: one identification never opens twice.
        let late = obs.redelivered;
        let stored = obs.decoded.stored == Some(true);
        let unreadable = obs.decoded.unreadable.is_some();
        let mut ev = obs.decoded;
        let now = obs.now_ms;
        let own_t = ev
            .temperature_c
            .map(|t| calibrate(t, dev.calibration_offset_c));
        let (temperature_c, abnormal) = match (&joined, own_t) {
            (_, Some(t)) => (Some(t), ev.device_abnormal),
            (Some(r), None) => (Some(r.temperature_c), r.device_abnormal),
            (None, None) => (None, None),
        };
        let mut cause = Vec::with_capacity(1 + usize::from(joined.is_some()));
        cause.push(std::mem::take(&mut ev.event_id));
        cause.extend(joined.map(|r| r.cause));
        let direction = dev.direction.unwrap_or(lane.direction);
        let mut d = Decision {
            lane: li,
            device: obs.device,
            direction,
            mode: self.mode,
            subject_kind: SubjectKind::Unknown,
            subject_id: String::new(),
            temperature_c,
            allow: false,
            reason: Reason::Ok,
            rule: "",
            device_flag_disagrees: false,
            cause,
            received: obs.received,
            gate: lane.gate,
            vehicle: false,
            confidence: None,
            operator: None,
            not_actuated: false,
            // Its clock minus ours: what the record says of how far the device's clock is off.
            device_clock_offset_ms: self.clocks.get(&obs.device).map(|c| -c.offset_ms),
            credential: Some(ev.credential),
            household: String::new(),
        };
        d.vehicle = ev.credential == CredentialKind::Plate;
        d.confidence = ev.confidence;
        if let Some(dir) = ev.direction {
            d.direction = dir;
        }
        let subject = ev
            .subject
            .take()
            .and_then(|id| resolve(&self.registry, ev.credential, id));
        let subject = subject.map(|(id, s)| {
            d.subject_kind = match s {
                Subject::Resident(_) => SubjectKind::Resident,
                Subject::Visitor(_) => SubjectKind::Visitor,
                Subject::Vehicle(_) => SubjectKind::Plate,
            };
            d.subject_id = id;
            d.household = household_of(&self.registry, &s).to_string();
            s
        });
        let fever = temperature_c.is_some_and(|t| self.policy.is_fever(li, t));
        d.device_flag_disagrees = temperature_c.is_some() && abnormal.is_some_and(|a| a != fever);
        if fever {
            let t = temperature_c.unwrap_or_default();
            out.push(Output::Alarm(self.fever_alarm(
                li,
                obs.device,
                &d.subject_id,
                t,
                d.cause.clone(),
            )));
        }

        let verdict = if stored {
            (false, Reason::StaleEvent, "stale_event")
        } else if unreadable {
            (false, Reason::InvalidReading, "unreadable_event")
        } else {
            self.rules(&d, subject.as_ref(), now)
        };
        let (allow, reason, rule) = verdict;
        d.allow = allow;
        d.reason = reason;
        d.rule = rule;
        if reason == Reason::LowConfidence {
            out.push(Output::Alarm(Alarm {
                kind: AlarmKind::LowConfidence,
                lane: Some(li),
                device: Some(obs.device),
                subject_id: String::new(),
                temperature_c: None,
                detail: format!(
                    "plate read with confidence {} below {}: please check the vehicle",
                    d.confidence.unwrap_or(0),
                    self.policy.min_plate_confidence
                ),
                cause: d.cause.clone(),
            }));
        }
        if reason == Reason::Quarantined && direction == Direction::Out {
            out.push(Output::Alarm(Alarm {
                kind: AlarmKind::QuarantineExit,
                lane: Some(li),
                device: Some(obs.device),
                subject_id: d.subject_id.clone(),
                temperature_c: None,
                detail: "a quarantined resident tried to leave".into(),
                cause: d.cause.clone(),
            }));
        }
        if late || stored {
            d.not_actuated = true;
            d.gate = None;
        }
        if allow && !late && !stored {
            self.passed(&d, subject.as_ref(), now, out);
        }
        // An interlocked barrier opens through its interlock; a denial sends it nothing.
        let mut barrier_out = None;
        if let Some(g) = d.gate {
            if let Some(b) = self.barriers.get_mut(&g) {
                d.gate = None;
                if allow {
                    let mut b_out = Vec::new();
                    b.open(now, &mut b_out);
                    barrier_out = Some((g, b_out));
                }
            }
        }
        out.push(Output::Decision(d));
        if let Some((g, b_out)) = barrier_out {
            self.barrier_outputs(g, b_out, out);
        }
    }

    pub(super) fn rules(
        &self,
        d: &Decision,
        subject: Option<&Subject>,
        now: i64,
    ) -> (bool, Reason, &'static str) {
        let lane = &self.policy.lanes[d.lane];
        let deny = |reason, rule| (false, reason, rule);
        if self.mode == Mode::Fire {
            return (true, Reason::FireMode, "fire_mode");
        }
        if d.vehicle {
            return self.vehicle_rules(d, subject, now);
        }
        if let Some(t) = d.temperature_c {
            // NaN fails both comparisons, so it must be caught here as implausible.
            if !self.policy.plausible(t) {
                return deny(Reason::InvalidReading, "plausible_range");
            }
            if self.policy.is_fever(d.lane, t) {
                return deny(Reason::Fever, "fever_threshold");
            }
        } else if self.mode.requires_temperature() {
            return deny(Reason::NoTemperature, "temperature_required");
        }
        let Some(subject) = subject else {
            return deny(Reason::UnknownSubject, "registry");
        };
        match subject {
            // A plate read decides by the vehicle rules; it never reaches here.
            Subject::Vehicle(_) => return deny(Reason::UnknownSubject, "registry"),
            Subject::Resident(r) => {
                // A wrong clock never locks a resident out: `valid_until` waits for a trusted one.
                let past = self.clock_trusted && now > r.valid_until_ms;
                if r.status == ResidentStatus::Suspended || past {
                    return deny(Reason::Expired, "registry_validity");
                }
                if r.status == ResidentStatus::Quarantined
                    || self.registry.household_quarantined(r.household)
                {
                    return deny(Reason::Quarantined, "quarantine");
                }
                if self.mode == Mode::Lockdown
                    && d.direction == Direction::Out
                    && self.clock_trusted
                {
                    let household = self.registry.household_id(r);
                    let q = self.policy.quota;
                    let window = i64::from(q.days) * DAY_MS;
                    let used = self.outings.get(household).map_or(0, |t| {
                        t.iter()
                            .filter(|&&at| (0..window).contains(&(now - at)))
                            .count()
                    });
                    if used >= q.outings as usize {
                        return deny(Reason::QuotaExceeded, "outing_quota");
                    }
                }
            }
            // An expired pass is `expired` whatever the mode (the README's order): the visitor
            // and the guard learn what is wrong with the pass itself first.
            Subject::Visitor(i) => {
                if let Err(reason) = self.pass_admits(*i, d.direction, now) {
                    return deny(reason, "visitor_pass");
                }
                if self.mode == Mode::Lockdown {
                    return deny(Reason::Lockdown, "lockdown_residents_only");
                }
            }
        }
        if lane.anti_passback
            && d.direction == Direction::In
            && self.inside.contains(&subject.key(&d.subject_id))
        {
            return deny(Reason::AntiPassback, "anti_passback");
        }
        (true, Reason::Ok, subject.rule())
    }

    /// A visitor pass (for a person or a vehicle) admits now: inside its window, and with a use
    /// left when entering (leaving never uses one).
    pub(super) fn pass_admits(
        &self,
        pass: u32,
        direction: Direction,
        now: i64,
    ) -> Result<(), Reason> {
        let Some(p) = self.registry.pass(pass) else {
            return Err(Reason::UnknownSubject);
        };
        // A pass's window read on a clock that may be decades off admits anyone or no one.
        if !self.clock_trusted {
            return Err(Reason::ClockUnsynced);
        }
        let used = self.pass_used.get(&p.id).copied().unwrap_or(0);
        let used_up = direction == Direction::In && used >= p.uses;
        if now < p.valid_from_ms || now > p.valid_until_ms || used_up {
            return Err(Reason::Expired);
        }
        Ok(())
    }

    /// Vehicles: a read too uncertain to act on, unknown, blacklisted, expired, lockdown.
    pub(super) fn vehicle_rules(
        &self,
        d: &Decision,
        subject: Option<&Subject>,
        now: i64,
    ) -> (bool, Reason, &'static str) {
        let lane = &self.policy.lanes[d.lane];
        let deny = |reason, rule| (false, reason, rule);
        if d.confidence.unwrap_or(0) < self.policy.min_plate_confidence {
            return deny(Reason::LowConfidence, "plate_confidence");
        }
        let lockdown = self.mode == Mode::Lockdown;
        let rule = match subject {
            None => return deny(Reason::UnknownSubject, "plate_registry"),
            Some(Subject::Vehicle(p)) => {
                match p.holder {
                    PlateHolder::Blacklisted => return deny(Reason::Blacklisted, "blacklist"),
                    PlateHolder::Resident { valid_until_ms, .. }
                        if self.clock_trusted && now > valid_until_ms =>
                    {
                        return deny(Reason::Expired, "plate_validity")
                    }
                    _ => {}
                }
                if lockdown && !p.lockdown_allowed {
                    return deny(Reason::Lockdown, "lockdown_allow_list");
                }
                match p.holder {
                    PlateHolder::AllowListed => "lockdown_allow_list",
                    _ => "resident_vehicle",
                }
            }
            Some(Subject::Visitor(i)) => {
                if let Err(reason) = self.pass_admits(*i, d.direction, now) {
                    return deny(reason, "visitor_vehicle_pass");
                }
                if lockdown {
                    return deny(Reason::Lockdown, "lockdown_allow_list");
                }
                "visitor_vehicle_pass"
            }
            Some(Subject::Resident(_)) => "resident",
        };
        if lane.anti_passback && d.direction == Direction::In {
            if let Some(s) = subject {
                if self.inside.contains(&s.key(&d.subject_id)) {
                    return deny(Reason::AntiPassback, "anti_passback");
                }
            }
        }
        (true, Reason::Ok, rule)
    }
}

/// The household a subject belongs to, for the record: empty for plates that belong to none.
fn household_of<'r>(registry: &'r super::registry::Registry, s: &Subject) -> &'r str {
    match s {
        Subject::Resident(r) => registry.household_id(r),
        Subject::Visitor(i) => registry
            .pass(*i)
            .map_or("", |p| registry.household_name(p.host_household)),
        Subject::Vehicle(p) => match p.holder {
            super::registry::PlateHolder::Resident { household, .. } => {
                registry.household_name(household)
            }
            _ => "",
        },
    }
}
