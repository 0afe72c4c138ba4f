//! Who is asking, and what they may see. A login is checked against its argon2id hash; a
//! session is a random token in an HttpOnly, SameSite=Strict cookie (Secure under TLS), kept in
//! the database by its SHA-256 only; every POST carries the session's CSRF token (the login
//! form a cookie-bound one of its own); failed logins are limited per user and per address.
//! The scope rules — which community, street or district a person may see — are `permit_*`,
//! here and nowhere else.
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

/// The level a person works at; their scope is that level's code (the company's is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Community,
    Street,
    District,
    Company,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Community => "community",
            Role::Street => "street",
            Role::District => "district",
            Role::Company => "company",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Community, Role::Street, Role::District, Role::Company]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// The signed-in person.
#[derive(Debug, Clone)]
pub struct Who {
    pub name: String,
    pub role: Role,
    pub scope: String,
    pub csrf: String,
    pub address: String,
}

impl Who {
    /// Their first page.
    pub fn home(&self) -> String {
        match self.role {
            Role::Community => format!("/c/{}", self.scope),
            Role::Street => format!("/s/{}", self.scope),
            Role::District => format!("/d/{}", self.scope),
            Role::Company => "/fleet".into(),
        }
    }
}

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

fn address(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
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
        who.address = address(parts);
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
        Role::Street | Role::District => {
            match store::community_parents(app.db(), community).await? {
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
            store::street_district(app.db(), street).await?.as_deref() == Some(who.scope.as_str())
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

/// Failed logins per user and per address, over a sliding quarter of an hour: past the limit a
/// login is refused before its password is checked (no hashing work to spend, no answer to
/// learn from).
#[derive(Default)]
pub struct Limiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

const WINDOW: Duration = Duration::from_secs(15 * 60);
const PER_USER: usize = 5;
const PER_ADDRESS: usize = 20;

impl Limiter {
    fn count(map: &mut HashMap<String, Vec<Instant>>, key: &str) -> usize {
        let now = Instant::now();
        match map.get_mut(key) {
            Some(v) => {
                v.retain(|t| now.duration_since(*t) < WINDOW);
                v.len()
            }
            None => 0,
        }
    }

    pub fn allowed(&self, user: &str, address: &str) -> bool {
        let Ok(mut m) = self.failures.lock() else {
            return false;
        };
        Self::count(&mut m, &format!("u:{user}")) < PER_USER
            && Self::count(&mut m, &format!("a:{address}")) < PER_ADDRESS
    }

    pub fn failed(&self, user: &str, address: &str) {
        let Ok(mut m) = self.failures.lock() else {
            return;
        };
        // Bounded: a flood of made-up names forgets the oldest windows, never grows for ever.
        if m.len() > 100_000 {
            let now = Instant::now();
            m.retain(|_, v| v.last().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        let now = Instant::now();
        for k in [format!("u:{user}"), format!("a:{address}")] {
            m.entry(k).or_default().push(now);
        }
    }

    pub fn succeeded(&self, user: &str) {
        if let Ok(mut m) = self.failures.lock() {
            m.remove(&format!("u:{user}"));
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
    let address = peer.ip().to_string();
    if !cookie(&headers, LOGIN_COOKIE).is_some_and(|c| same(c, &f.csrf)) {
        return Err(Failure::Csrf);
    }
    if !app.limiter.allowed(&f.name, &address) {
        store::audit(app.db(), &f.name, &address, "login_limited", "").await?;
        return Ok(login_response(
            &app,
            StatusCode::TOO_MANY_REQUESTS,
            Some(app.t("login_limited")),
        ));
    }
    let user = store::user(app.db(), &f.name).await?;
    let hash = match &user {
        Some(u) if !u.disabled => u.hash.clone(),
        _ => NOBODY.clone(),
    };
    let password = f.password.clone();
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|u| ok && !u.disabled) else {
        app.limiter.failed(&f.name, &address);
        store::audit(app.db(), &f.name, &address, "login_failed", "").await?;
        return Ok(login_response(
            &app,
            StatusCode::UNAUTHORIZED,
            Some(app.t("login_failed")),
        ));
    };
    app.limiter.succeeded(&f.name);
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
