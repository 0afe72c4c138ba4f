//! `[commands]`: signed orders from above — the keys trusted to sign them, what each may do, and
//! the limits every order is checked against.
use super::problems::Problems;
use serde::Deserialize;

/// Signed orders from above (`[commands]`): the keys trusted to sign them, and what each may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersSection {
    /// A command issued further ahead of this gateway's clock than this is refused.
    #[serde(default = "default_max_skew_s")]
    pub max_skew_s: u64,
    /// An order valid for longer than this, or issued longer ago, is refused; so replay ids are
    /// kept at most this long.
    #[serde(default = "default_max_lifetime_s")]
    pub max_lifetime_s: u64,
    /// A list snapshot or delta whose version is further ahead of the gateway's than this is
    /// refused (a version near the top of the range would freeze sync for good).
    #[serde(default = "default_max_version_step")]
    pub max_version_step: u64,
    /// Deprecated: `[clock] trusted` (what it meant before the clock had a section of its own);
    /// still read, so a config written for an older gatehouse keeps starting after an upgrade.
    #[serde(default)]
    pub trust_clock: bool,
    #[serde(default)]
    pub keys: Vec<KeySection>,
}

impl Default for OrdersSection {
    fn default() -> Self {
        Self {
            max_skew_s: default_max_skew_s(),
            max_lifetime_s: default_max_lifetime_s(),
            max_version_step: default_max_version_step(),
            trust_clock: false,
            keys: Vec::new(),
        }
    }
}

fn default_max_skew_s() -> u64 {
    60
}

fn default_max_lifetime_s() -> u64 {
    24 * 3600
}

fn default_max_version_step() -> u64 {
    1_000_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    pub id: String,
    /// Ed25519 public key, 64 hex digits (`gatehouse-company keygen` prints one).
    pub public_key: String,
    /// The levels of the tree it may address: gateway, community, street, district.
    pub levels: Vec<crate::orders::Level>,
    /// What it may send: set_mode, fire, remote_open, registry, set_threshold, ping. `fire` is
    /// apart from `set_mode`: give it to the company's emergency key only.
    pub kinds: Vec<crate::orders::Kind>,
}

impl OrdersSection {
    pub(super) fn problems(&self, path: &str, out: &mut Problems) {
        if self.max_skew_s > 24 * 3600 {
            out.add(
                format!("{path}.max_skew_s"),
                format!("{} s; at most a day", self.max_skew_s),
            );
        }
        if !(60..=7 * 24 * 3600).contains(&self.max_lifetime_s) {
            out.add(
                format!("{path}.max_lifetime_s"),
                format!(
                    "{} s; an order may live 60 s to 7 days",
                    self.max_lifetime_s
                ),
            );
        }
        if self.max_version_step == 0 {
            out.add(
                format!("{path}.max_version_step"),
                "0 would refuse every list sync",
            );
        }
        for (i, k) in self.keys.iter().enumerate() {
            if let Err(e) = crate::orders::parse_public_key(&k.public_key) {
                out.add(format!("{path}.keys[{i}].public_key"), e);
            }
            if k.levels.is_empty() || k.kinds.is_empty() {
                out.add(
                    format!("{path}.keys[{i}]"),
                    "levels and kinds must name at least one each",
                );
            }
        }
    }
}
