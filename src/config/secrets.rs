//! Device secrets for the device endpoint: a password from the secrets file or a salted hash in
//! the config, and how a CONNECT's password is checked against one.
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// How a device proves it is itself.
#[derive(Debug, Clone)]
pub enum Secret {
    /// No secret configured: development only, and still bound to its topics (production mode
    /// refuses it on a non-loopback listener).
    None,
    /// From the secrets file.
    Plain(String),
    /// `sha256:SALT:HASH` (hex) from the config: SHA-256 of salt ‖ password.
    Hash { salt: Vec<u8>, hash: [u8; 32] },
}

impl Secret {
    /// Parses `sha256:SALT_HEX:HASH_HEX`. Device passwords are machine-generated (128 random bits,
    /// `gatehouse device-secret`), so a salted SHA-256 is as strong as a slow hash here, and a
    /// flood of CONNECTs can't make the box burn seconds of CPU on key stretching.
    pub fn parse_hash(s: &str) -> Result<Secret, String> {
        let mut parts = s.split(':');
        let (Some("sha256"), Some(salt), Some(hash), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(
                "expected sha256:SALT:HASH (hex; `gatehouse device-secret` prints one)".into(),
            );
        };
        let salt = crate::hex::parse_hex(salt).map_err(|_| "salt is not hex")?;
        let hash = crate::hex::parse_hex(hash)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or("hash is not 64 hex digits")?;
        Ok(Secret::Hash { salt, hash })
    }

    pub fn hash_of(salt: &[u8], password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(salt);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether `password` proves this identity. Compared in constant time.
    pub fn admits(&self, password: Option<&str>) -> bool {
        match (self, password) {
            (Secret::None, _) => true,
            (Secret::Plain(p), Some(given)) => {
                same(&Secret::hash_of(b"", p), &Secret::hash_of(b"", given))
            }
            (Secret::Hash { salt, hash }, Some(given)) => same(hash, &Secret::hash_of(salt, given)),
            (_, None) => false,
        }
    }
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the secrets file: one `DEVICE_ID PASSWORD` per line, `#` comments. It must be readable
/// by its owner only (the check is the caller's: production refuses it, development warns).
pub fn read_secrets(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(id), Some(pw), None) => {
                if out.insert(id.to_string(), pw.to_string()).is_some() {
                    return Err(format!("{}:{}: {id} given twice", path.display(), n + 1));
                }
            }
            _ => {
                return Err(format!(
                    "{}:{}: expected `DEVICE_ID PASSWORD`",
                    path.display(),
                    n + 1
                ))
            }
        }
    }
    Ok(out)
}

/// A new random device password and its `password_hash` line for the config.
pub fn generate() -> (String, String) {
    let bytes = crate::random_bytes::<24>();
    let password = crate::hex::to_hex(&bytes[..16]);
    let salt = &bytes[16..];
    let hash = Secret::hash_of(salt, &password);
    let line = format!(
        "sha256:{}:{}",
        crate::hex::to_hex(salt),
        crate::hex::to_hex(&hash)
    );
    (password, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_admits_its_password_only() {
        let (pw, line) = generate();
        let s = Secret::parse_hash(&line).unwrap();
        assert!(s.admits(Some(&pw)));
        assert!(!s.admits(Some("guess")));
        assert!(!s.admits(None));
        assert!(Secret::parse_hash("md5:00:00").is_err());
        assert!(Secret::parse_hash("sha256:zz:00").is_err());
    }
}
