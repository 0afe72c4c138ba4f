//! The console's logins: one file (`[console] users`), a line a person —
//! `NAME ROLE enabled|disabled ARGON2ID-HASH` — written by `gatehouse console-user` and read by
//! the daemon, again whenever it changes (a disabled guard's session ends at their next request).
//! Nobody is there by default.
use anyhow::Context;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sees the gate, registers visitors, opens a lane with a reason, acknowledges alarms.
    Guard,
    /// What a guard may, and changes the mode (never out of fire: that stays at the box).
    Supervisor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Guard => "guard",
            Role::Supervisor => "supervisor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "guard" => Some(Role::Guard),
            "supervisor" => Some(Role::Supervisor),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub enabled: bool,
    pub hash: String,
}

/// A name that is safe in a line of the file, a log and a record: 1–32 of letters, digits,
/// `.`, `_`, `-`.
pub fn name_ok(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub fn parse(text: &str) -> Result<Vec<User>, String> {
    let mut users: Vec<User> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}", i + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        let [name, role, state, hash] = words[..] else {
            return Err(bad("expected NAME ROLE enabled|disabled HASH"));
        };
        if !name_ok(name) {
            return Err(bad("a name is 1-32 letters, digits, '.', '_' or '-'"));
        }
        let role = Role::parse(role).ok_or_else(|| bad("the role is guard or supervisor"))?;
        let enabled = match state {
            "enabled" => true,
            "disabled" => false,
            _ => return Err(bad("the state is enabled or disabled")),
        };
        if !hash.starts_with("$argon2id$") {
            return Err(bad("the hash is an argon2id hash ($argon2id$…)"));
        }
        if users.iter().any(|u| u.name == name) {
            return Err(bad("a name given twice"));
        }
        users.push(User {
            name: name.into(),
            role,
            enabled,
            hash: hash.into(),
        });
    }
    Ok(users)
}

pub fn render(users: &[User]) -> String {
    let mut s = String::from("# gatehouse console logins: written by `gatehouse console-user`.\n");
    for u in users {
        let state = if u.enabled { "enabled" } else { "disabled" };
        s.push_str(&format!(
            "{} {} {state} {}\n",
            u.name,
            u.role.as_str(),
            u.hash
        ));
    }
    s
}

/// Reads the file; a missing file is no users (the console then lets nobody in).
pub fn load(path: &Path) -> anyhow::Result<Vec<User>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

/// Writes the file whole (a temporary file renamed over it), readable by its owner and group
/// only: the hashes are slow to crack, not impossible.
pub fn save(path: &Path, users: &[User]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    // Made private: never readable by others, not even for a moment under a loose umask.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)
        .and_then(|mut f| f.write_all(render(users).as_bytes()))
        .with_context(|| tmp.display().to_string())?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640))?;
    // Keep the group the installer gave the old file (the daemon's).
    if let Ok(old) = std::fs::metadata(path) {
        use std::os::unix::fs::MetadataExt;
        let _ = std::os::unix::fs::chown(&tmp, None, Some(old.gid()));
    }
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())
}

/// argon2id with the crate's defaults (19 MiB, 2 passes): OWASP's recommended minimum. About
/// 0.1 s on the box's Cortex-A53 cores; the console hashes one login at a time.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&crate::random_bytes::<16>())
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A password of 16 letters and digits (about 92 bits), without look-alikes: what
/// `console-user add` prints when none is given on stdin.
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    crate::random_bytes::<16>()
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_reads_back_what_was_written_and_refuses_what_is_not_a_login() {
        let users = vec![
            User {
                name: "guard-1".into(),
                role: Role::Guard,
                enabled: true,
                hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            },
            User {
                name: "chief".into(),
                role: Role::Supervisor,
                enabled: false,
                hash: "$argon2id$v=19$x".into(),
            },
        ];
        assert_eq!(parse(&render(&users)).unwrap(), users);
        for bad in [
            "a guard enabled",
            "a<b guard enabled $argon2id$x",
            "a admin enabled $argon2id$x",
            "a guard maybe $argon2id$x",
            "a guard enabled sha256:x",
            "a guard enabled $argon2id$x\na supervisor enabled $argon2id$y",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_password_verifies_against_its_hash_only() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct hors", &h));
        assert!(!verify_password("x", "not a hash"));
    }
}
