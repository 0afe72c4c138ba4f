//! The uplink's topic tree, in one place for both sides: a gateway builds its topics here and the
//! company's tools parse them here. `gh/v1/{city}/{district}/{street}/{community}/{gateway}` with
//! the channels below it, and the order topics a gateway listens on at each level above it. The
//! tree mirrors the administrative hierarchy, so each level subscribes with wildcards and the
//! company broker's ACLs scope each level.
use std::borrow::Cow;

/// Every topic of this protocol starts here.
pub const ROOT: &str = "gh/v1";

/// A gateway's place in the tree: the administrative codes above it and its own id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct GatewayPath {
    /// 4 digits, e.g. 3301.
    pub city: String,
    /// 6 digits, e.g. 330106.
    pub district: String,
    /// 9 digits, e.g. 330106001.
    pub street: String,
    /// 12 digits, e.g. 330106001001.
    pub community: String,
    pub gateway: String,
}

/// What a gateway sends (or is sent) below its path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// `EventBatch`: passages, denials, plate reads.
    Events,
    /// `AlarmBatch`.
    Alarms,
    /// `Status`, retained; the broker's last will says offline.
    Status,
    /// `StatsBatch`: counts per period.
    Stats,
    /// `CommandResult`: what became of each order.
    CmdResult,
    /// `SignedCommand`: orders for this gateway alone.
    Cmd,
    /// `DeviceTwin`, retained, one topic per device.
    Twin(String),
}

impl Channel {
    /// The topic's tail below the gateway's path.
    pub fn name(&self) -> Cow<'static, str> {
        match self {
            Channel::Events => "events".into(),
            Channel::Alarms => "alarms".into(),
            Channel::Status => "status".into(),
            Channel::Stats => "stats".into(),
            Channel::CmdResult => "cmd/result".into(),
            Channel::Cmd => "cmd".into(),
            Channel::Twin(device) => format!("twin/{device}").into(),
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Some(match s {
            "events" => Channel::Events,
            "alarms" => Channel::Alarms,
            "status" => Channel::Status,
            "stats" => Channel::Stats,
            "cmd/result" => Channel::CmdResult,
            "cmd" => Channel::Cmd,
            _ => {
                let device = s.strip_prefix("twin/")?;
                if device.is_empty() || device.contains('/') {
                    return None;
                }
                Channel::Twin(device.to_string())
            }
        })
    }
}

/// A gateway's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `gh/v1/{city}/{district}/{street}/{community}/{gateway}`.
    base: String,
    /// The gateway's own order topic, then `_all/cmd` at the community, street and district.
    orders: Vec<String>,
}

impl Topics {
    pub fn new(p: &GatewayPath) -> Topics {
        let district = format!("{ROOT}/{}/{}", p.city, p.district);
        let street = format!("{district}/{}", p.street);
        let community = format!("{street}/{}", p.community);
        let base = format!("{community}/{}", p.gateway);
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

    pub fn channel(&self, channel: &Channel) -> String {
        format!("{}/{}", self.base, channel.name())
    }

    /// Where signed orders for this gateway arrive.
    pub fn orders(&self) -> &[String] {
        &self.orders
    }
}

/// The gateway and channel a topic names; `None` for anything else (an order for a whole street
/// or district, a topic of another protocol). An order for a whole community reads as gateway
/// `_all`, channel `Cmd`.
pub fn parse(topic: &str) -> Option<(GatewayPath, Channel)> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
    let mut parts = rest.splitn(6, '/');
    let mut next = || {
        parts
            .next()
            .filter(|p| !p.is_empty() && *p != "+" && *p != "#")
    };
    let path = GatewayPath {
        city: next()?.to_string(),
        district: next()?.to_string(),
        street: next()?.to_string(),
        community: next()?.to_string(),
        gateway: next()?.to_string(),
    };
    let channel = Channel::parse(parts.next()?)?;
    Some((path, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw1() -> GatewayPath {
        GatewayPath {
            gateway: "gw-1".into(),
            city: "3301".into(),
            district: "330106".into(),
            street: "330106001".into(),
            community: "330106001001".into(),
        }
    }

    #[test]
    fn a_gateway_hears_its_own_orders_and_those_of_every_level_above() {
        let t = Topics::new(&gw1());
        assert_eq!(
            t.channel(&Channel::Events),
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

    #[test]
    fn every_channel_a_gateway_builds_parses_back_to_itself() {
        let t = Topics::new(&gw1());
        let channels = [
            Channel::Events,
            Channel::Alarms,
            Channel::Status,
            Channel::Stats,
            Channel::CmdResult,
            Channel::Cmd,
            Channel::Twin("gate-1".into()),
        ];
        for c in channels {
            assert_eq!(parse(&t.channel(&c)), Some((gw1(), c)));
        }
        for other in [
            "gh/v1/3301/330106/_all/cmd",
            "gh/v1/3301/330106/330106001/_all/cmd",
            "gh/v1/3301/330106/330106001/330106001001/gw-1/twin/",
            "gh/v1/3301/330106/330106001/330106001001/gw-1/twin/a/b",
            "gh/v1/3301/330106/330106001/330106001001/gw-1/nonsense",
            "gh/v1/3301/330106/330106001/330106001001/+/events",
            "gh/v2/3301/330106/330106001/330106001001/gw-1/events",
            "devices/thermal-1/event",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }
}
