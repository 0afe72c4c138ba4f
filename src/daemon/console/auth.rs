//! Who is at the console: logins against the users file, sessions, CSRF tokens, the login
//! limiter. Sessions live in the daemon's memory (a restart asks everyone to log in again —
//! which is also how a page learns the daemon restarted); a cookie holds a 256-bit random
//! token, the daemon only its SHA-256.
use super::users::{self, Role, User};
use crate::hex::to_hex;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// A session lasts a guard's shift and a half, then a new login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at once; past it the oldest ends.
const SESSIONS_MAX: usize = 64;
/// Login attempts counted per name and per address in the window, before the password is
/// hashed: past them the attempt is refused unhashed.
const PER_NAME: usize = 5;
const PER_ADDRESS: usize = 20;
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Names and addresses the limiter remembers.
const LIMITER_KEYS: usize = 4096;

#[derive(Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    /// The hash the user logged in with: a reset (or disable) ends the session.
    hash: String,
    until: Instant,
    /// Said once on the next page (the result of an action).
    pub flash: Option<String>,
}

pub struct Auth {
    users: Mutex<UsersCache>,
    sessions: Mutex<HashMap<String, Session>>,
    attempts: Mutex<Attempts>,
}

struct UsersCache {
    path: PathBuf,
    /// The file's mtime, length and inode when read (a save renames a new file in).
    seen: Option<(SystemTime, u64, u64)>,
    users: Vec<User>,
}

#[derive(Default)]
struct Attempts {
    by_key: HashMap<String, VecDeque<Instant>>,
}

fn token_hash(token: &str) -> String {
    to_hex(&Sha256::digest(token.as_bytes()))
}

pub fn new_token() -> String {
    to_hex(&crate::random_bytes::<32>())
}

impl Auth {
    pub fn new(path: PathBuf) -> Auth {
        let users = users::load(&path).unwrap_or_else(|e| {
            tracing::error!(error = %e, "Console: users file unreadable; nobody can log in until it is fixed.");
            Vec::new()
        });
        Auth {
            users: Mutex::new(UsersCache {
                seen: file_stamp(&path),
                path,
                users,
            }),
            sessions: Mutex::new(HashMap::new()),
            attempts: Mutex::new(Attempts::default()),
        }
    }

    /// The user as the file says now (read again when it changed).
    fn user(&self, name: &str) -> Option<User> {
        let mut c = self.users.lock().unwrap_or_else(|p| p.into_inner());
        // A stat a request (about a microsecond): a change counts from the next request.
        let stamp = file_stamp(&c.path);
        if stamp != c.seen {
            match users::load(&c.path) {
                Ok(u) => c.users = u,
                Err(e) => {
                    // A half-edited file lets nobody in rather than the old list.
                    tracing::error!(error = %e, "Console: users file unreadable.");
                    c.users.clear();
                }
            }
            c.seen = stamp;
        }
        c.users.iter().find(|u| u.name == name).cloned()
    }

    /// The session a cookie names, if it is still good (its user still enabled, with the same
    /// role and password); the flash is taken.
    pub fn session(&self, token: &str, take_flash: bool) -> Option<Session> {
        let key = token_hash(token);
        let found = self.sessions().get(&key).cloned()?;
        let user = self.user(&found.user);
        let good = found.until > Instant::now()
            && user.is_some_and(|u| u.enabled && u.role == found.role && u.hash == found.hash);
        let mut sessions = self.sessions();
        if !good {
            sessions.remove(&key);
            return None;
        }
        let s = sessions.get_mut(&key)?;
        let out = s.clone();
        if take_flash {
            s.flash = None;
        }
        Some(out)
    }

    pub fn set_flash(&self, token: &str, flash: String) {
        if let Some(s) = self.sessions().get_mut(&token_hash(token)) {
            s.flash = Some(flash);
        }
    }

    pub fn end(&self, token: &str) {
        self.sessions().remove(&token_hash(token));
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the attempt before any hashing; `Err` if the name or the address is over its
    /// limit.
    pub fn attempt(&self, name: &str, from: IpAddr) -> Result<(), &'static str> {
        let mut a = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let keys = [
            (format!("n:{name}"), PER_NAME),
            (format!("a:{}", from.to_canonical()), PER_ADDRESS),
        ];
        for (key, max) in &keys {
            if let Some(q) = a.by_key.get_mut(key) {
                while q.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
                    q.pop_front();
                }
                if q.len() >= *max {
                    return Err("too many login attempts; wait 15 minutes");
                }
            }
        }
        if a.by_key.len() >= LIMITER_KEYS {
            a.by_key
                .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) <= WINDOW));
        }
        if a.by_key.len() >= LIMITER_KEYS {
            // Flooded with names: every new one is refused until the window passes.
            return Err("too many login attempts; wait 15 minutes");
        }
        for (key, _) in keys {
            a.by_key.entry(key).or_default().push_back(now);
        }
        Ok(())
    }

    /// Checks the password (slow: call off the async threads) and opens a session: its token.
    pub fn login(&self, name: &str, password: &str) -> Option<(String, Session)> {
        let user = self.user(name);
        // A name that does not exist costs a hash too: the time does not tell which do.
        let hash = user.as_ref().map_or(NOBODY.as_str(), |u| u.hash.as_str());
        let ok = users::verify_password(password, hash);
        let user = user.filter(|u| ok && u.enabled)?;
        let token = new_token();
        let session = Session {
            user: user.name.clone(),
            role: user.role,
            csrf: new_token(),
            hash: user.hash.clone(),
            until: Instant::now() + SESSION_LIFETIME,
            flash: None,
        };
        let mut sessions = self.sessions();
        let now = Instant::now();
        sessions.retain(|_, s| s.until > now);
        if sessions.len() >= SESSIONS_MAX {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.until)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(token_hash(&token), session.clone());
        // A good login clears the name's count (not the address's).
        drop(sessions);
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_key
            .remove(&format!("n:{name}"));
        Some((token, session))
    }
}

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// A hash no password matches, checked for a name that does not exist.
static NOBODY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| users::hash_password(&new_token()).unwrap_or_default());

/// Compares two tokens in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}
