//! Who is asking, and what they may see. A login is checked against its argon2id hash; a
//! session is a random token in an HttpOnly, SameSite=Strict cookie (Secure under TLS), kept in
//! the database by its SHA-256 only; every POST carries the session's CSRF token (the login
//! form a cookie-bound one of its own); failed logins are limited per user and per address.
//! The scope rules — which community, street or district a person may see — are `permit_*`,
//! here and nowhere else.
use super::who::{Role, Who};
use super::{layout, store, App, Failure};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SESSION_COOKIE: &str = "gh_session";
const LOGIN_COOKIE: &str = "gh_login";
/// A session lasts a working day.
pub const SESSION_MS: i64 = 12 * 3_600_000;

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    gatehouse_contract::hex::to_hex(&b)
}

pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    gatehouse_contract::hex::to_hex(&sha2::Sha256::digest(token.as_bytes()))
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The client's address: the peer's, or — when the peer is the company's TLS proxy — the last
/// address the proxy put in `X-Forwarded-For` (the only one it vouches for).
pub fn client_address(app: &App, peer: SocketAddr, headers: &HeaderMap) -> String {
    if app.trusted_proxy == Some(peer.ip()) {
        // The rightmost entry only (what a client sent itself comes before it); one that does
        // not read as an address is no one's word.
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|a| a.trim().parse::<std::net::IpAddr>().ok());
        if let Some(a) = forwarded {
            return a.to_string();
        }
    }
    peer.ip().to_string()
}

fn address(app: &App, parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| client_address(app, c.0, &parts.headers))
        .unwrap_or_default()
}

#[axum::async_trait]
impl FromRequestParts<Arc<App>> for Who {
    type Rejection = Failure;
    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Who, Failure> {
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or(Failure::SignIn)?;
        let mut who = store::session(app.db(), &token_hash(token), now_ms())
            .await?
            .ok_or(Failure::SignIn)?;
        who.address = address(app, parts);
        Ok(who)
    }
}

/// A POST's CSRF token, checked against the session's.
pub fn check_csrf(who: &Who, given: &str) -> Result<(), Failure> {
    if same(&who.csrf, given) {
        Ok(())
    } else {
        Err(Failure::Csrf)
    }
}

pub async fn permit_community(app: &App, who: &Who, community: &str) -> Result<(), Failure> {
    let ok = match who.role {
        Role::Company => true,
        Role::Community => who.scope == community,
        // The codes nest (a community's holds its street's, a street's its district's), and
        // every gateway of the community must say the same.
        Role::Street | Role::District => {
            community.starts_with(&who.scope)
                && match store::community_parents(app.db(), community).await? {
                    Some((street, district)) => {
                        (who.role == Role::Street && who.scope == street)
                            || (who.role == Role::District && who.scope == district)
                    }
                    None => false,
                }
        }
    };
    ok.then_some(()).ok_or(Failure::Forbidden)
}

pub async fn permit_street(app: &App, who: &Who, street: &str) -> Result<(), Failure> {
    let ok = match who.role {
        Role::Company => true,
        Role::Street => who.scope == street,
        Role::District => {
            street.starts_with(&who.scope)
                && store::street_district(app.db(), street).await?.as_deref()
                    == Some(who.scope.as_str())
        }
        Role::Community => false,
    };
    ok.then_some(()).ok_or(Failure::Forbidden)
}

pub fn permit_district(who: &Who, district: &str) -> Result<(), Failure> {
    let ok = who.role == Role::Company || (who.role == Role::District && who.scope == district);
    ok.then_some(()).ok_or(Failure::Forbidden)
}

pub fn permit_company(who: &Who) -> Result<(), Failure> {
    (who.role == Role::Company)
        .then_some(())
        .ok_or(Failure::Forbidden)
}

/// Login attempts per user and per address, over a sliding quarter of an hour. An attempt is
/// counted *before* its password is checked (and forgiven when it succeeds), so a burst of
/// parallel guesses cannot all slip in under the limit; past the limit a login is refused before
/// any hashing. Keys are hashed (a long made-up name costs no memory), and the table is bounded.
/// At most `VERIFYING` passwords are hashed at once (each argon2 verification takes 19 MiB and a
/// core for a while): more logins at the same moment are asked to try again.
pub struct Limiter {
    attempts: Mutex<HashMap<(u8, u64), Vec<Instant>>>,
    keys: std::collections::hash_map::RandomState,
    pub verifying: tokio::sync::Semaphore,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            attempts: Mutex::default(),
            keys: Default::default(),
            verifying: tokio::sync::Semaphore::new(VERIFYING),
        }
    }
}

const WINDOW: Duration = Duration::from_secs(15 * 60);
const PER_USER: usize = 5;
const PER_ADDRESS: usize = 20;
const VERIFYING: usize = 4;
const MAX_KEYS: usize = 100_000;

/// What the limiter says of one login attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Go on (counted; forgiven if it succeeds).
    Allowed,
    /// Refused; `first` when this refusal is the one that reached the limit (audited once).
    Limited { first: bool },
}

impl Limiter {
    fn key(&self, kind: u8, s: &str) -> (u8, u64) {
        use std::hash::BuildHasher;
        (kind, self.keys.hash_one(s))
    }

    /// Checks and counts an attempt, in one step.
    pub fn attempt(&self, user: &str, address: &str) -> Attempt {
        let Ok(mut m) = self.attempts.lock() else {
            return Attempt::Limited { first: false };
        };
        let now = Instant::now();
        if m.len() > MAX_KEYS {
            m.retain(|_, v| v.last().is_some_and(|t| now.duration_since(*t) < WINDOW));
            // Still full (a flood from many addresses): the keys idle longest go first.
            if m.len() > MAX_KEYS {
                let mut lasts: Vec<Instant> =
                    m.values().filter_map(|v| v.last().copied()).collect();
                lasts.sort_unstable();
                let cut = lasts[lasts.len() - MAX_KEYS * 9 / 10];
                m.retain(|_, v| v.last().is_some_and(|t| *t >= cut));
            }
        }
        let (u, a) = (self.key(0, user), self.key(1, address));
        let mut count = |k| {
            let v: &mut Vec<Instant> = m.entry(k).or_default();
            v.retain(|t| now.duration_since(*t) < WINDOW);
            v.len()
        };
        let (nu, na) = (count(u), count(a));
        let limited = nu >= PER_USER || na >= PER_ADDRESS;
        // A refused attempt counts too (the window slides on while the guessing goes on), up to
        // one past the limit: the count stays bounded, and reaching it is seen once.
        for (k, n, limit) in [(u, nu, PER_USER), (a, na, PER_ADDRESS)] {
            if n <= limit {
                m.entry(k).or_default().push(now);
            }
        }
        if limited {
            Attempt::Limited {
                first: nu == PER_USER || na == PER_ADDRESS,
            }
        } else {
            Attempt::Allowed
        }
    }

    /// A login that succeeded: its user's count starts again, its address's attempt forgiven.
    pub fn succeeded(&self, user: &str, address: &str) {
        let (u, a) = (self.key(0, user), self.key(1, address));
        if let Ok(mut m) = self.attempts.lock() {
            m.remove(&u);
            if let Some(v) = m.get_mut(&a) {
                v.pop();
            }
        }
    }
}

/// argon2id, the crate's defaults (19 MiB, 2 passes): OWASP's recommended minimum.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
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

/// A hash no password matches, checked when the user does not exist: the answer takes as long
/// as for a real user, so timing does not tell which names exist.
static NOBODY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password(&random_token()).unwrap_or_default());

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

fn login_response(app: &App, code: StatusCode, error: Option<&str>) -> Response {
    let token = random_token();
    let page = layout::bare(
        app,
        app.t("login"),
        html! {
            form.login method="post" action="/login" {
                h1 { (app.t("app")) }
                @if let Some(e) = error { p.error role="alert" { (e) } }
                input type="hidden" name="csrf" value=(token);
                label { (app.t("user")) input name="name" autocomplete="username" required autofocus; }
                label { (app.t("password")) input name="password" type="password" autocomplete="current-password" required; }
                button type="submit" { (app.t("login")) }
            }
        },
    );
    let secure = if app.secure { "; Secure" } else { "" };
    (
        code,
        [(
            header::SET_COOKIE,
            format!("{LOGIN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/login{secure}"),
        )],
        page,
    )
        .into_response()
}

pub async fn login_page(State(app): State<Arc<App>>) -> Response {
    login_response(&app, StatusCode::OK, None)
}

pub async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, Failure> {
    let address = client_address(&app, peer, &headers);
    if !cookie(&headers, LOGIN_COOKIE).is_some_and(|c| same(c, &f.csrf)) {
        return Err(Failure::Csrf);
    }
    // What is kept of a name from outside: no more than a real one can be.
    let name: String = f.name.chars().take(64).collect();
    let limited = || {
        login_response(
            &app,
            StatusCode::TOO_MANY_REQUESTS,
            Some(app.t("login_limited")),
        )
    };
    match app.limiter.attempt(&name, &address) {
        Attempt::Allowed => {}
        Attempt::Limited { first } => {
            if first {
                store::audit(app.db(), &name, &address, "login_limited", "").await?;
            }
            return Ok(limited());
        }
    }
    // Hashing is costly: a few at a time, the rest asked to try again.
    let Ok(_permit) = app.limiter.verifying.try_acquire() else {
        return Ok(limited());
    };
    let user = if f.name.len() > 64 || f.password.len() > 1024 {
        None
    } else {
        store::user(app.db(), &name).await?
    };
    let hash = match &user {
        Some(u) if !u.disabled => u.hash.clone(),
        _ => NOBODY.clone(),
    };
    let password = f.password.clone();
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|u| ok && !u.disabled) else {
        store::audit(app.db(), &name, &address, "login_failed", "").await?;
        return Ok(login_response(
            &app,
            StatusCode::UNAUTHORIZED,
            Some(app.t("login_failed")),
        ));
    };
    app.limiter.succeeded(&name, &address);
    let token = random_token();
    let now = now_ms();
    store::open_session(
        app.db(),
        &token_hash(&token),
        &user.name,
        &random_token(),
        now,
        now + SESSION_MS,
    )
    .await?;
    store::audit(app.db(), &user.name, &address, "login", "").await?;
    let secure = if app.secure { "; Secure" } else { "" };
    Ok((
        [(
            header::SET_COOKIE,
            format!(
                "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
                SESSION_MS / 1000
            ),
        )],
        Redirect::to("/"),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(app): State<Arc<App>>,
    who: Who,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Failure> {
    check_csrf(&who, &f.csrf)?;
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        store::close_session(app.db(), &token_hash(token)).await?;
    }
    store::audit(app.db(), &who.name, &who.address, "logout", "").await?;
    Ok((
        [(
            header::SET_COOKIE,
            format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )],
        Redirect::to("/login"),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::{Attempt, Limiter};

    #[test]
    fn attempts_are_counted_before_the_password_and_forgiven_after() {
        let l = Limiter::default();
        for _ in 0..5 {
            assert_eq!(l.attempt("wang", "192.0.2.1"), Attempt::Allowed);
        }
        // The sixth, even if it is right, is refused before any hashing; audited once.
        assert_eq!(
            l.attempt("wang", "192.0.2.1"),
            Attempt::Limited { first: true }
        );
        assert_eq!(
            l.attempt("wang", "192.0.2.9"),
            Attempt::Limited { first: false }
        );
        // Another user from the same address goes on, until the address's own limit.
        assert_eq!(l.attempt("li", "192.0.2.1"), Attempt::Allowed);
        l.succeeded("li", "192.0.2.1");
        for i in 0..14 {
            assert_eq!(
                l.attempt(&format!("u{i}"), "192.0.2.1"),
                Attempt::Allowed,
                "{i}"
            );
        }
        assert_eq!(
            l.attempt("zhao", "192.0.2.1"),
            Attempt::Limited { first: true }
        );
        // A success forgives its user's count.
        let l = Limiter::default();
        for _ in 0..4 {
            l.attempt("chen", "192.0.2.2");
        }
        l.succeeded("chen", "192.0.2.2");
        assert_eq!(l.attempt("chen", "192.0.2.2"), Attempt::Allowed);
    }

    #[test]
    fn the_nobody_hash_parses_and_matches_nothing() {
        assert!(argon2::password_hash::PasswordHash::new(&super::NOBODY).is_ok());
        assert!(!super::verify_password("", &super::NOBODY));
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = super::hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify_password("correct horse", &h));
        assert!(!super::verify_password("correct hors", &h));
    }
}
