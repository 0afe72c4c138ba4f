use super::*;
use crate::device::Profiles;
use crate::mqtt_client::BrokerUrl;

#[test]
fn production_security_refuses_plain_mqtt_anonymity_and_readable_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gw.key");
    std::fs::write(&key, "k").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(dir.path().join("gw.pem"), "c").unwrap();
    let text = |uplink: &str| {
        format!(
            "[gateway]\nid = \"gw\"\ncity = \"3301\"\ndistrict = \"330106\"\nstreet = \"330106001\"\ncommunity = \"330106001001\"\n[uplink]\nsecurity = \"production\"\n{uplink}\n"
        )
    };
    let problems = |uplink: &str| -> Vec<String> {
        let path = dir.path().join("g.toml");
        std::fs::write(&path, text(uplink)).unwrap();
        Config::load(&path)
            .unwrap()
            .problems(&Profiles::builtin())
            .iter()
            .map(|p| p.to_string())
            .collect()
    };
    let p = problems("url = \"mqtt://h:1883\"");
    assert!(p.iter().any(|p| p.contains("needs mqtts://")), "{p:?}");
    assert!(p.iter().any(|p| p.contains("anonymous uplink")), "{p:?}");
    let p = problems("url = \"mqtts://h\"\nclient_cert = \"gw.pem\"\nclient_key = \"gw.key\"");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("readable by others (mode 644)"), "{p:?}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        problems("url = \"mqtts://h\"\nclient_cert = \"gw.pem\"\nclient_key = \"gw.key\""),
        Vec::<String>::new()
    );
}

#[test]
fn serial_devices_need_a_port_with_sane_settings_shared_alike() {
    let text = r#"
[gateway]
id = "gw"
city = "3301"
district = "330106"
street = "330106001"
community = "330106001001"
[uplink]
url = "mqtt://127.0.0.1:1883"
[[lanes]]
id = "l1"
[[lanes.devices]]
id = "face"
role = "identifier"
profile = "rs485-face-id"
[[lanes.devices]]
id = "card"
role = "identifier"
profile = "rs485-wiegand-reader"
serial = { path = "/dev/ttyS1", baud = 9601 }
[[lanes.devices]]
id = "card2"
role = "identifier"
profile = "rs485-wiegand-reader"
serial = { path = "/dev/ttyS1", baud = 9600 }
[[lanes.devices]]
id = "gate"
role = "turnstile"
profile = "generic-gate-mqtt"
serial = { path = "/dev/ttyS2" }
"#;
    let c: Config = toml::from_str(text).unwrap();
    let problems: Vec<String> = c
        .problems(&Profiles::builtin())
        .iter()
        .map(|p| p.to_string())
        .collect();
    let expect = [
        "lanes[0].devices[0].serial: profile \"rs485-face-id\" is serial",
        "lanes[0].devices[1].serial: baud must be a standard rate",
        "lanes[0].devices[2].serial: /dev/ttyS1 is shared with another device under different settings",
        "lanes[0].devices[3].serial: profile \"generic-gate-mqtt\" is not a serial-frame device",
    ];
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    for (p, e) in problems.iter().zip(expect) {
        assert!(p.starts_with(e), "{p:?} should start with {e:?}");
    }
}

#[test]
fn broker_urls_parse_with_default_ports_and_credentials() {
    assert_eq!(
        BrokerUrl::parse("mqtts://iot.example.com").unwrap(),
        BrokerUrl {
            tls: true,
            host: "iot.example.com".into(),
            port: 8883
        }
    );
    assert_eq!(
        BrokerUrl::parse("mqtt://127.0.0.1:2883").unwrap().port,
        2883
    );
    assert!(BrokerUrl::parse("http://x:1").is_err());
    assert!(BrokerUrl::parse("mqtt://:1883").is_err());
    assert!(BrokerUrl::parse("localhost:1883").is_err());
    assert!(BrokerUrl::parse("mqtt://u:p@h:1").is_err());
}
