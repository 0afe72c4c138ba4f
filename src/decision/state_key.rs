//! The keys of the durable state (the store's `state` table), in one place: the core's counters
//! and mode, and the wiring's command ids and statistics. Each key is `kind/id`; the store keeps
//! them as opaque strings, so the text form below is the on-disk format and must not change.

/// One entry of the durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateKey {
    /// The mode in force (value: its name).
    Mode,
    /// The mode the config file last asked for (value: its name), so a changed file applies once.
    ConfigMode,
    /// A lane's fever threshold set from above (value: f64 LE).
    Threshold(String),
    /// A subject inside, by its inside-set key (no value).
    Inside(String),
    /// Entries used on a visitor pass (value: u32 LE).
    PassUses(String),
    /// A resident out in lockdown since (value: unix ms, i64 LE).
    OutSince(String),
    /// A household's lockdown exits in the quota window (value: unix ms, i64 LE each).
    Outings(String),
    /// A signed order applied, kept until it expires (value: expiry, unix ms i64 LE).
    OrderApplied(String),
    /// A device event decided (or recorded), by `{device}:{event id}[@{device time}]` (value:
    /// when, unix ms i64 LE): a redelivery is acked without deciding again.
    Seen(String),
    /// An observation held until its outcome is decided (value: [`super::held::Held`]).
    Held(String),
    /// The statistics period in progress (value: `StatsBatch`).
    StatsNow,
    /// A finished statistics batch not yet acknowledged upstream, by its `seq` (value:
    /// `StatsBatch`; stores from before batches had numbers keyed it by its period's start).
    StatsBatch(u64),
    /// The highest statistics batch `seq` ever given out (value: u64 LE), so numbers are not
    /// reused even when every batch is acknowledged and gone.
    StatsSeq,
}

impl StateKey {
    pub fn encode(&self) -> String {
        match self {
            StateKey::Mode => "mode/".into(),
            StateKey::ConfigMode => "config_mode/".into(),
            StateKey::Threshold(lane) => format!("threshold/{lane}"),
            StateKey::Inside(key) => format!("in/{key}"),
            StateKey::PassUses(pass) => format!("pass/{pass}"),
            StateKey::OutSince(person) => format!("out/{person}"),
            StateKey::Outings(household) => format!("quota/{household}"),
            StateKey::OrderApplied(id) => format!("cmd/{id}"),
            StateKey::Seen(id) => format!("seen/{id}"),
            StateKey::Held(id) => format!("held/{id}"),
            StateKey::StatsNow => "stats_now/".into(),
            StateKey::StatsBatch(seq) => format!("stats/{seq}"),
            StateKey::StatsSeq => "stats_seq/".into(),
        }
    }

    /// `None` for a key of no known kind (written by a newer version, or damaged).
    pub fn decode(key: &str) -> Option<StateKey> {
        let (kind, id) = key.split_once('/')?;
        let id = id.to_string();
        Some(match kind {
            "mode" => StateKey::Mode,
            "config_mode" => StateKey::ConfigMode,
            "threshold" => StateKey::Threshold(id),
            "in" => StateKey::Inside(id),
            "pass" => StateKey::PassUses(id),
            "out" => StateKey::OutSince(id),
            "quota" => StateKey::Outings(id),
            "cmd" => StateKey::OrderApplied(id),
            "seen" => StateKey::Seen(id),
            "held" => StateKey::Held(id),
            "stats_now" => StateKey::StatsNow,
            "stats" => StateKey::StatsBatch(id.parse().ok()?),
            "stats_seq" => StateKey::StatsSeq,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::StateKey::*;
    use super::*;

    #[test]
    fn every_key_reads_back_as_itself() {
        for k in [
            Mode,
            ConfigMode,
            Threshold("east-1".into()),
            Inside("R:R000001".into()),
            PassUses("P1".into()),
            OutSince("R1".into()),
            Outings("H1".into()),
            OrderApplied("cmd-1/x".into()),
            Seen("thermal-1:9@1800000000000".into()),
            Held("face-2/1800000000000/e1".into()),
            StatsNow,
            StatsBatch(1_800_000_000_000),
            StatsSeq,
        ] {
            assert_eq!(StateKey::decode(&k.encode()), Some(k));
        }
        assert_eq!(StateKey::decode("nonsense"), None);
        assert_eq!(StateKey::decode("stats/notanumber"), None);
    }
}
