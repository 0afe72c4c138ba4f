//! The uplink's topic tree, in one place: `gh/v1/{city}/{district}/{street}/{community}/{gateway}`
//! with the channels below it, and the order topics a gateway listens on at each level above it.
//! The tree mirrors the administrative hierarchy, so each level subscribes with wildcards and the
//! company broker's ACLs scope each level.
use crate::config::GatewaySection;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `gh/v1/{city}/{district}/{street}/{community}/{gateway}`.
    base: String,
    /// The gateway's own order topic, then `_all/cmd` at the community, street and district.
    orders: Vec<String>,
}

impl Topics {
    pub fn new(g: &GatewaySection) -> Topics {
        let district = format!("gh/v1/{}/{}", g.city, g.district);
        let street = format!("{district}/{}", g.street);
        let community = format!("{street}/{}", g.community);
        let base = format!("{community}/{}", g.id);
        Topics {
            orders: vec![
                format!("{base}/cmd"),
                format!("{community}/_all/cmd"),
                format!("{street}/_all/cmd"),
                format!("{district}/_all/cmd"),
            ],
            base,
        }
    }

    /// The gateway's own topics hang below this.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `events`, `alarms`, `status`, `stats`, `cmd/result`, `twin/{device}`.
    pub fn channel(&self, channel: &str) -> String {
        format!("{}/{channel}", self.base)
    }

    /// Where signed orders for this gateway arrive.
    pub fn orders(&self) -> &[String] {
        &self.orders
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_hears_its_own_orders_and_those_of_every_level_above() {
        let t = Topics::new(&GatewaySection {
            id: "gw-1".into(),
            city: "3301".into(),
            district: "330106".into(),
            street: "330106001".into(),
            community: "330106001001".into(),
        });
        assert_eq!(
            t.channel("events"),
            "gh/v1/3301/330106/330106001/330106001001/gw-1/events"
        );
        assert_eq!(
            t.orders(),
            [
                "gh/v1/3301/330106/330106001/330106001001/gw-1/cmd",
                "gh/v1/3301/330106/330106001/330106001001/_all/cmd",
                "gh/v1/3301/330106/330106001/_all/cmd",
                "gh/v1/3301/330106/_all/cmd",
            ]
        );
    }
}
