//! The hourly rollups, kept up to date at ingest so that a form is a read, not a scan: what each
//! newly stored record adds to its gateway's lane and hour. Only records stored for the first
//! time are counted (a redelivered batch adds nothing). Pure: the caller gives the zone and the
//! time of receipt.
use super::decode::{Gw, Row, Who};
use chrono::TimeZone;
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const HOUR_MS: i64 = 3_600_000;

/// The counts of one lane and hour, in the order of [`COLUMNS`].
pub type Counts = [i64; COLUMNS.len()];

/// The rollup's counters, the one list the schema, the ingest and the forms share.
pub const COLUMNS: [&str; 16] = [
    // People let through, by who and which way (what `StatsBatch` counts as entries, exits).
    "residents_in",
    "residents_out",
    "visitors_in",
    "visitors_out",
    // Let through with nobody identified: remote opens, allow-listed plates.
    "others_in",
    "others_out",
    // Vehicles let through (by plate), and of them visitors' cars.
    "vehicles_in",
    "vehicles_out",
    "visitor_vehicles_in",
    "visitor_vehicles_out",
    // Denied (acted on), by reason in `rollup_denials`.
    "denied",
    // Recorded, never acted on (a redelivery after a restart, a device's stored event): not in
    // the gateway's statistics, shown apart.
    "not_actuated",
    // Temperatures taken, and how many at or above the lane's threshold.
    "screened",
    "fevers",
    // Fevers as the gateway's statistics count them (for the reconciliation).
    "counted_fevers",
    // Records that arrived after their day had ended (from an outbox, after an outage).
    "amended",
];

/// The counters a gateway's `StatsBatch` counts too (entries, exits, vehicles, denials): what
/// the forms reconcile.
pub const COUNTED_BY_GATEWAY: [&str; 9] = [
    "residents_in",
    "residents_out",
    "visitors_in",
    "visitors_out",
    "others_in",
    "others_out",
    "vehicles_in",
    "vehicles_out",
    "denied",
];

pub fn col(name: &str) -> usize {
    COLUMNS.iter().position(|c| *c == name).unwrap_or(0)
}

/// One lane of one gateway in one UTC hour.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub gw: Arc<Gw>,
    pub lane: String,
    pub hour_ms: i64,
}

#[derive(Debug, Default, PartialEq)]
pub struct Deltas {
    pub counts: BTreeMap<Key, Counts>,
    /// Denials by reason: (key, reason) → n.
    pub denials: BTreeMap<(Key, String), i64>,
}

impl Deltas {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.denials.is_empty()
    }
}

/// The local day (as `YYYY-MM-DD`) of a moment.
pub fn local_day(tz: Tz, ms: i64) -> String {
    tz.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// What `stored` (rows stored for the first time) adds, received at `now_ms`.
pub fn deltas<'a>(stored: impl IntoIterator<Item = &'a Row>, tz: Tz, now_ms: i64) -> Deltas {
    let today = local_day(tz, now_ms);
    let mut d = Deltas::default();
    for row in stored {
        let (gw, lane, at_ms) = match row {
            Row::Passage(p) => (&p.gw, &p.lane, p.at_ms),
            Row::Temperature(t) => (&t.gw, &t.lane, t.at_ms),
            _ => continue,
        };
        let key = Key {
            gw: gw.clone(),
            lane: lane.clone(),
            hour_ms: at_ms.div_euclid(HOUR_MS) * HOUR_MS,
        };
        let late = local_day(tz, at_ms) < today;
        let c = d.counts.entry(key.clone()).or_insert([0; COLUMNS.len()]);
        let mut add = |name: &str| c[col(name)] += 1;
        match row {
            Row::Passage(p) => {
                if late {
                    add("amended");
                }
                if p.not_actuated {
                    add("not_actuated");
                } else if !p.allowed {
                    add("denied");
                    *d.denials.entry((key, p.reason.clone())).or_insert(0) += 1;
                } else {
                    let dir = if p.inbound { "in" } else { "out" };
                    if p.vehicle {
                        add(&format!("vehicles_{dir}"));
                        if p.who == Who::Visitor {
                            add(&format!("visitor_vehicles_{dir}"));
                        }
                    } else {
                        add(&format!("{}s_{dir}", p.who.as_str()));
                    }
                }
            }
            Row::Temperature(t) => {
                add("screened");
                if t.fever {
                    add("fevers");
                }
                if t.counted_fever {
                    add("counted_fevers");
                }
                // A lone reading is a record of its own; a passage's temperature is not.
                if late && t.lone {
                    add("amended");
                }
            }
            _ => {}
        }
    }
    d
}
