//! `gatehouse status`: the running daemon's state as the guard or a technician at the box reads
//! it — mode, clock, uplink, outbox, lists, each lane's devices with when they were last heard.
//! Asked over the control socket (`status`), printed as a table.
use serde_json::Value;
use std::fmt::Write;

/// The table for one `status` reply (a JSON object).
pub fn render(reply: &Value, now_ms: i64) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let yes =
        |v: &Value, t: &str, f: &str| if v.as_bool() == Some(true) { t } else { f }.to_string();
    let mut out = String::new();
    let clock = &reply["clock"];
    let rows = [
        (
            "gateway",
            format!(
                "{} (gatehouse {})",
                s(&reply["gateway"]),
                s(&reply["version"])
            ),
        ),
        ("mode", s(&reply["mode"])),
        (
            "clock",
            format!(
                "{} {}, {} jumps seen",
                crate::timefmt::rfc3339(reply["time_ms"].as_i64().unwrap_or(0)),
                yes(
                    &clock["synced"],
                    "synced",
                    "NOT SYNCED: visitor passes and orders wait"
                ),
                n(&clock["jumps"])
            ),
        ),
        (
            "uplink",
            format!(
                "{}, {} published, {} acknowledged",
                yes(&reply["uplink"]["connected"], "connected", "DISCONNECTED"),
                n(&reply["uplink"]["published"]),
                n(&reply["uplink"]["acked"])
            ),
        ),
        (
            "outbox",
            format!(
                "{} records waiting ({} KiB), {} dropped since the store was made{}",
                n(&reply["outbox"]["depth"]),
                n(&reply["outbox"]["bytes"]) / 1024,
                n(&reply["outbox"]["evicted"]),
                // Absent in an older daemon's reply: durable.
                if reply["outbox"]["durable"] == false {
                    "; NOT DURABLE: the store cannot be written, devices are acknowledged from \
                     memory and records wait in memory only"
                } else {
                    ""
                }
            ),
        ),
        (
            "lists",
            format!(
                "registry version {}{}",
                n(&reply["registry_version"]),
                yes(
                    &reply["needs_snapshot"],
                    " (none synced: needs a snapshot)",
                    ""
                )
            ),
        ),
        ("decisions", n(&reply["decisions"]).to_string()),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<10} {v}");
    }
    let _ = writeln!(
        out,
        "\n{:<14} {:<18} {:<24} {:<8} {:<14} state",
        "lane", "device", "profile", "link", "last heard"
    );
    for d in reply["devices"].as_array().into_iter().flatten() {
        let seen = d["last_seen_ms"].as_i64().unwrap_or(0);
        let heard = if seen == 0 {
            "never".to_string()
        } else {
            format!("{} s ago", (now_ms - seen).max(0) / 1000)
        };
        let _ = writeln!(
            out,
            "{:<14} {:<18} {:<24} {:<8} {:<14} {}",
            s(&d["lane"]),
            s(&d["id"]),
            s(&d["profile"]),
            yes(&d["online"], "online", "OFFLINE"),
            heard,
            state(d)
        );
    }
    out
}

/// A barrier's arm, a fire input's reading (in capitals when it blocks the fire reset), or "-".
fn state(d: &serde_json::Value) -> String {
    let arm = d["arm"].as_str().filter(|a| !a.is_empty());
    let fire = d["fire_input"].as_str().filter(|f| !f.is_empty());
    match (arm, fire) {
        (Some(arm), _) => arm.to_string(),
        (None, Some("normal")) => "fire input normal".to_string(),
        (None, Some(f)) => format!("fire input {}", f.to_uppercase()),
        (None, None) => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_table_names_what_is_wrong_in_capitals() {
        let reply = serde_json::json!({
            "gateway": "gw-1", "version": "0.1.0", "mode": "normal", "registry_version": 7,
            "needs_snapshot": false, "time_ms": 1_800_000_000_000i64,
            "clock": {"synced": false, "jumps": 1},
            "uplink": {"connected": false, "published": 3, "acked": 2},
            "outbox": {"depth": 5, "bytes": 4096, "evicted": 0, "durable": false},
            "decisions": 9,
            "devices": [{"id": "cam-1", "lane": "car-in", "profile": "zhenshi", "online": false,
                         "last_seen_ms": 1_800_000_000_000i64 - 42_000, "arm": "down"},
                        {"id": "fire-1", "lane": "fire", "profile": "modbus-fire-input",
                         "online": false, "last_seen_ms": 0, "arm": "", "fire_input": "unknown"}],
        });
        let t = super::render(&reply, 1_800_000_000_000);
        assert!(t.contains("NOT SYNCED"), "{t}");
        assert!(t.contains("DISCONNECTED"), "{t}");
        assert!(t.contains("registry version 7"), "{t}");
        assert!(
            t.contains("cam-1") && t.contains("OFFLINE") && t.contains("42 s ago"),
            "{t}"
        );
        assert!(t.contains("fire input UNKNOWN"), "{t}");
        assert!(t.contains("NOT DURABLE"), "{t}");
    }
}
