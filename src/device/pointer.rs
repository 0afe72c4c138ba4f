//! JSON pointers (RFC 6901) as the device decoders look them up, a dozen per event.
use serde_json::Value;

/// `v.pointer(pointer)` (RFC 6901) without its two allocations per token: a decode looks up a
/// dozen pointers per event, on every event. Only a pointer with an escape (`~0`, `~1`), which
/// no shipped profile has, takes serde_json's way.
pub fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        return Some(v);
    }
    if pointer.contains('~') {
        return v.pointer(pointer);
    }
    pointer
        .strip_prefix('/')?
        .split('/')
        .try_fold(v, |target, token| match target {
            Value::Object(map) => map.get(token),
            // As serde_json: no sign and no leading zero in an index.
            Value::Array(list)
                if !token.starts_with('+') && (token == "0" || !token.starts_with('0')) =>
            {
                token.parse::<usize>().ok().and_then(|i| list.get(i))
            }
            _ => None,
        })
}
