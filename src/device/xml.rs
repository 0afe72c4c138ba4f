//! XML events (Hikvision's `EventNotificationAlert` and kin) turned into JSON, so one profile's
//! JSON pointers read a terminal whether it speaks JSON or XML. The root element is the document:
//! `<EventNotificationAlert><eventType>heartBeat</eventType>…` becomes `{"eventType":"heartBeat",…}`.
//! An element with children is an object, one with only text a string (profiles read numbers
//! from strings), a name repeated among siblings an array; attributes and namespaces are dropped.
use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::{Map, Value};

/// Deeper than this is not an event: refused rather than followed.
const MAX_DEPTH: usize = 32;

/// The document as JSON; `None` when it is not well-formed XML (or too deep).
pub fn to_json(xml: &[u8]) -> Option<Value> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    // Each open element: its name, the children so far, its text so far.
    let mut stack: Vec<(String, Map<String, Value>, String)> = Vec::new();
    let mut root = None;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).ok()? {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH || root.is_some() {
                    return None;
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                stack.push((name, Map::new(), String::new()));
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let (_, parent, _) = stack.last_mut()?;
                insert(parent, name, Value::String(String::new()));
            }
            Event::Text(t) => {
                let text = t.decode().ok()?;
                let text = quick_xml::escape::unescape(&text).ok()?;
                stack.last_mut()?.2.push_str(&text);
            }
            Event::CData(t) => {
                let text = String::from_utf8_lossy(&t.into_inner()).into_owned();
                stack.last_mut()?.2.push_str(&text);
            }
            Event::GeneralRef(r) => {
                // An entity (`&amp;`) between text pieces.
                let name = String::from_utf8_lossy(&r.into_inner()).into_owned();
                let entity = format!("&{name};");
                let text = quick_xml::escape::unescape(&entity).ok()?;
                stack.last_mut()?.2.push_str(&text);
            }
            Event::End(_) => {
                let (name, children, text) = stack.pop()?;
                let value = if children.is_empty() {
                    Value::String(text)
                } else {
                    Value::Object(children)
                };
                match stack.last_mut() {
                    Some((_, parent, _)) => insert(parent, name, value),
                    None => root = Some(value),
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return None;
    }
    root
}

fn insert(map: &mut Map<String, Value>, name: String, value: Value) {
    match map.get_mut(&name) {
        None => {
            map.insert(name, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(first) => {
            let first = std::mem::take(first);
            map.insert(name, Value::Array(vec![first, value]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_isapi_alert_reads_like_its_json_form() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">
<ipAddress>192.168.1.64</ipAddress><dateTime>2026-11-29T13:00:00+08:00</dateTime>
<eventType>AccessControllerEvent</eventType>
<AccessControllerEvent><serialNo>7</serialNo><employeeNoString>R&amp;1</employeeNoString>
<currTemperature>36.5</currTemperature><x/></AccessControllerEvent>
<item>1</item><item>2</item>
</EventNotificationAlert>"#;
        let v = to_json(xml).unwrap();
        assert_eq!(v["eventType"], "AccessControllerEvent");
        assert_eq!(v["AccessControllerEvent"]["serialNo"], "7");
        assert_eq!(v["AccessControllerEvent"]["employeeNoString"], "R&1");
        assert_eq!(v["AccessControllerEvent"]["x"], "");
        assert_eq!(v["item"], serde_json::json!(["1", "2"]));
    }

    #[test]
    fn broken_or_deep_documents_are_refused() {
        assert_eq!(to_json(b"<a><b></a>"), None);
        assert_eq!(to_json(b"<a><b>"), None);
        assert_eq!(to_json(b"not xml"), None);
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(to_json(deep.as_bytes()), None);
        assert_eq!(to_json(b"<a>1</a><b>2</b>"), None, "one root");
    }

    proptest::proptest! {
        // The plain-test side of `fuzz/fuzz_targets/http_bodies.rs`.
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024)) {
            let _ = to_json(&data);
        }
    }
}
