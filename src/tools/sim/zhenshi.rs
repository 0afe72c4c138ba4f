//! Simulated Zhenshi IVS plate camera (`zhenshi-ivs`): builds its `ivs_result` payloads.
use base64::Engine;

/// One plate read as the camera publishes it on `device/{sn}/message/up/ivs_result`.
/// `direction`: 4 towards the camera, 3 away, 0 unknown.
pub fn ivs_result(plateid: u64, plate: &str, confidence: u8, direction: u8) -> String {
    let license = base64::engine::general_purpose::STANDARD.encode(plate.as_bytes());
    serde_json::json!({
        "id": plateid,
        "sn": "e5ad4f1c-3c6f0a10",
        "name": "ivs_result",
        "payload": {
            "AlarmInfoPlate": {
                "channel": 0,
                "deviceName": "IVS",
                "serialno": "e5ad4f1c-3c6f0a10",
                "result": {
                    "PlateResult": {
                        "license": license,
                        "colorType": 1,
                        "confidence": confidence,
                        "direction": direction,
                        "triggerType": 8,
                        "plateid": plateid,
                        "timeStamp": { "Timeval": { "sec": 1_764_300_000u64, "usec": 0 } }
                    }
                }
            }
        }
    })
    .to_string()
}
