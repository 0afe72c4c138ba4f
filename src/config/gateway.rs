//! `[gateway]`: this gateway's id and its place in the administrative tree.
use super::problems::Problems;
use serde::Deserialize;

/// Where this gateway sits in the administrative tree (docs/ARCHITECTURE.md, "Contracts").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    pub id: String,
    /// 4 digits, e.g. 3301.
    pub city: String,
    /// 6 digits, e.g. 330106.
    pub district: String,
    /// 9 digits, e.g. 330106001.
    pub street: String,
    /// 12 digits, e.g. 330106001001.
    pub community: String,
}

impl GatewaySection {
    /// This gateway's place in the uplink's topic tree.
    pub fn path(&self) -> gatehouse_contract::topics::GatewayPath {
        gatehouse_contract::topics::GatewayPath {
            city: self.city.clone(),
            district: self.district.clone(),
            street: self.street.clone(),
            community: self.community.clone(),
            gateway: self.id.clone(),
        }
    }
}

impl GatewaySection {
    pub(super) fn problems(&self, path: &str, out: &mut Problems) {
        out.id_is_safe(path, &self.id);
        let codes = [
            ("city", &self.city, 4, None),
            ("district", &self.district, 6, Some(&self.city)),
            ("street", &self.street, 9, Some(&self.district)),
            ("community", &self.community, 12, Some(&self.street)),
        ];
        for (name, code, len, parent) in codes {
            let at = format!("{path}.{name}");
            if code.len() != len || !code.bytes().all(|b| b.is_ascii_digit()) {
                out.add(at, format!("{code:?} must be {len} digits"));
            } else if let Some(parent) = parent {
                if !code.starts_with(parent.as_str()) {
                    out.add(at, format!("{code:?} does not lie under {parent:?}"));
                }
            }
        }
    }
}
