//! What each device may do on the endpoint: the topics it may publish on and the command topic
//! it may subscribe to.
use crate::config::secrets::Secret;

/// One MQTT device as the endpoint knows it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Index in the lane plan.
    pub device: usize,
    /// Its id, which is also its MQTT username.
    pub id: String,
    pub secret: Secret,
    /// Where it must connect from, where the config says (`from`).
    pub from: Option<std::net::IpAddr>,
    /// The topics it may publish on: its events and status topics.
    pub publishes: Vec<String>,
    /// The topic gate commands reach it on, if it takes any.
    pub command_topic: Option<String>,
    /// Its status: every packet it sends (a PINGREQ too) says it is alive.
    pub live: std::sync::Arc<crate::sources::DeviceLive>,
}

impl Identity {
    /// Whether a SUBSCRIBE filter is the device's own: it matches its command topic, its levels
    /// up to the one naming the device are literal (a wildcard after it, as cameras use for
    /// `device/ID/message/down/#`, is fine; `devices/+/cmd` could match another device's and is
    /// not), and it matches nothing any other device publishes or receives. Commands are routed
    /// by device anyway, so this only refuses what would be a try at reading others' traffic —
    /// and counts it.
    pub fn may_subscribe(&self, filter: &str, others: &[String]) -> bool {
        let Some(own) = &self.command_topic else {
            return false;
        };
        let own_levels: Vec<&str> = own.split('/').collect();
        // The level naming the device; a topic without its id must be subscribed exactly.
        let fixed = own_levels
            .iter()
            .position(|l| l.contains(self.id.as_str()))
            .unwrap_or(own_levels.len() - 1);
        let literal_prefix = filter
            .split('/')
            .zip(&own_levels)
            .take(fixed + 1)
            .filter(|(f, o)| f == *o)
            .count()
            == fixed + 1;
        rumqttc::valid_filter(filter)
            && literal_prefix
            && rumqttc::matches(own, filter)
            && !others.iter().any(|t| rumqttc::matches(t, filter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::secrets::Secret;

    #[test]
    fn a_device_subscribes_to_its_own_commands_only() {
        let gate = Identity {
            device: 1,
            id: "gate-1".into(),
            secret: Secret::None,
            from: None,
            publishes: vec![],
            command_topic: Some("devices/gate-1/cmd".into()),
            live: Default::default(),
        };
        let others = vec![
            "devices/thermal-1/event".to_string(),
            "devices/gate-2/cmd".to_string(),
        ];
        assert!(gate.may_subscribe("devices/gate-1/cmd", &others));
        assert!(gate.may_subscribe("devices/gate-1/#", &others));
        assert!(!gate.may_subscribe("#", &others));
        assert!(!gate.may_subscribe("devices/+/cmd", &others));
        assert!(!gate.may_subscribe("devices/thermal-1/event", &others));
    }
}
