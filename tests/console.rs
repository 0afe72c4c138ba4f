//! The guard's console, attacked as a host on the booth's LAN would: no session → only the login
//! page; a guard's cookie → no supervisor action; a cross-site post or a stale form → refused;
//! login attempts limited; a disabled guard out at once; 500 idle connections → the lanes still
//! decide. And what it does: a lane opened with a reason (the record upstream carries both), an
//! alarm acknowledged (one record, up with the alarms), the mode changed by a supervisor but
//! fire never ended from it.
use crate::common::*;
use gatehouse::daemon::console::users::{self, Role, User};
use gatehouse::daemon::console::{Access, ROUTES};
use gatehouse::device::Unit;
use gatehouse::proto::v1;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) const GUARD_PW: &str = "guard-password-1";
pub(crate) const CHIEF_PW: &str = "chief-password-1";

/// A gateway with its console on a free loopback port, a guard and a supervisor.
async fn gateway() -> (Harness, SocketAddr) {
    gateway_with(|t| t).await
}

/// [`gateway`] with the config text edited first.
pub(crate) async fn gateway_with(edit: impl FnOnce(String) -> String) -> (Harness, SocketAddr) {
    let port = free_port();
    let broker = start_broker();
    let h = Harness::start_with(broker.clone(), broker, |t| {
        edit(format!(
            "{t}\n[console]\nlisten = \"127.0.0.1:{port}\"\nusers = \"console-users\"\n"
        ))
    })
    .await;
    let all = vec![
        user("guard", Role::Guard, GUARD_PW),
        user("chief", Role::Supervisor, CHIEF_PW),
    ];
    users::save(&h.dir.path().join("console-users"), &all).unwrap();
    (h, ([127, 0, 0, 1], port).into())
}

fn user(name: &str, role: Role, password: &str) -> User {
    User {
        name: name.into(),
        role,
        enabled: true,
        hash: users::hash_password(password).unwrap(),
    }
}

/// A browser of sorts: one request a connection, cookies kept.
pub(crate) struct Browser {
    pub addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    cookies: HashMap<String, String>,
}

pub(crate) struct Reply {
    pub code: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    pub fn location(&self) -> Option<&str> {
        self.headers
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
    }
}

impl Browser {
    pub fn new(addr: SocketAddr) -> Browser {
        Browser {
            addr,
            from: None,
            cookies: HashMap::new(),
        }
    }

    async fn connect(&self) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(ip) = self.from {
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
        }
        socket.connect(self.addr).await.unwrap()
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        form: &[(&str, &str)],
        extra: &str,
    ) -> Reply {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let cookies: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let cookie = if cookies.is_empty() {
            String::new()
        } else {
            format!("Cookie: {}\r\n", cookies.join("; "))
        };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{cookie}{extra}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let mut s = self.connect().await;
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        within("a console reply", LONG, s.read_to_end(&mut raw))
            .await
            .unwrap();
        let raw = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        // Names in lower case, values as sent.
        let head: String = head
            .lines()
            .map(|l| match l.split_once(": ") {
                Some((k, v)) => format!("{}: {v}\n", k.to_ascii_lowercase()),
                None => format!("{l}\n"),
            })
            .collect();
        for line in head.lines() {
            if let Some(c) = line.strip_prefix("set-cookie: ") {
                let (kv, _) = c.split_once(';').unwrap_or((c, ""));
                let (k, v) = kv.split_once('=').unwrap();
                if v.is_empty() {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_string(), v.to_string());
                }
            }
        }
        let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        Reply {
            code,
            headers: head,
            body: body.to_string(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, &[], "").await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
        self.send("POST", path, form, "").await
    }

    /// Logs in; the page's CSRF token.
    pub async fn login(&mut self, name: &str, password: &str) -> Result<String, String> {
        let page = self.get("/login").await;
        let csrf = field(&page.body, "csrf");
        let r = self
            .post(
                "/login",
                &[("csrf", &csrf), ("user", name), ("password", password)],
            )
            .await;
        if r.code != 303 {
            return Err(r.body);
        }
        let page = self.get("/").await;
        assert_eq!(page.code, 200, "{}", page.body);
        Ok(meta_csrf(&page.body))
    }

    /// The live stream's first event (the whole picture).
    pub async fn hello(&self) -> serde_json::Value {
        self.live().await.1
    }

    /// The live stream, open, and its first event (the whole picture).
    pub async fn live(&self) -> (tokio::net::TcpStream, serde_json::Value) {
        let mut s = self.connect().await;
        let cookies: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let req = format!(
            "GET /live HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            cookies.join("; ")
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut text = String::new();
        let mut buf = [0u8; 65536];
        within("the live stream's hello", LONG, async {
            loop {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "stream closed: {text}");
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                if let Some(i) = text.find("event: hello\ndata: ") {
                    let rest = &text[i + 19..];
                    if let Some(end) = rest.find("\n\n") {
                        let hello = serde_json::from_str(&rest[..end]).unwrap();
                        return (s, hello);
                    }
                }
            }
        })
        .await
    }
}

fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no field {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn meta_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" content=\"").expect("csrf meta");
    let rest = &html[at + 21..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_a_lan_host_gets_nothing_but_the_login_page() {
    let (h, addr) = gateway().await;
    let mut b = Browser::new(addr);
    for (method, path, access) in ROUTES {
        let r = b
            .send(method, path, &[("csrf", "x"), ("mode", "fire")], "")
            .await;
        match access {
            Access::Anyone => assert!(
                r.code == 200 || r.code == 303,
                "{method} {path}: {}",
                r.code
            ),
            _ if *method == "GET" && *path == "/" => {
                assert_eq!((r.code, r.location()), (303, Some("/login")))
            }
            _ => assert_eq!(r.code, 401, "{method} {path}: {}", r.body),
        }
    }
    assert_eq!(b.get("/etc/passwd").await.code, 404);
    // A made-up session cookie is no session.
    b.cookies.insert("gh_console".into(), "00".repeat(32));
    assert_eq!(b.get("/live").await.code, 401);
    // Every answer says: no framing, no scripts but ours, nothing cached.
    let r = b.get("/login").await;
    assert!(r
        .headers
        .contains("content-security-policy: default-src 'none'; script-src 'self'"));
    assert!(r.headers.contains("x-frame-options: DENY"));
    assert!(r.headers.contains("set-cookie: gh_login="));
    assert!(r.headers.contains("HttpOnly; SameSite=Strict"));
    drop(h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_opens_a_lane_with_a_reason_and_no_supervisor_action_nor_a_forged_post_passes() {
    let (mut h, addr) = gateway().await;
    let mut guard = Browser::new(addr);
    let csrf = guard.login("guard", GUARD_PW).await.unwrap();

    // A cross-site post (the browser says where the form came from), a form without the
    // session's token, another session's token: refused, and the gate does not move.
    let r = guard
        .send(
            "POST",
            "/open",
            &[("csrf", &csrf), ("lane", "east-1"), ("reason", "x")],
            "Origin: http://evil.example\r\n",
        )
        .await;
    assert_eq!(r.code, 403);
    let r = guard
        .post("/open", &[("lane", "east-1"), ("reason", "x")])
        .await;
    assert_eq!(r.code, 403);
    let mut chief = Browser::new(addr);
    let chief_csrf = chief.login("chief", CHIEF_PW).await.unwrap();
    let r = guard
        .post(
            "/open",
            &[("csrf", &chief_csrf), ("lane", "east-1"), ("reason", "x")],
        )
        .await;
    assert_eq!(r.code, 403);
    // A guard may not change the mode.
    let r = guard
        .post("/mode", &[("csrf", &csrf), ("mode", "lockdown")])
        .await;
    assert_eq!(r.code, 403);
    let none = tokio::time::timeout(Duration::from_millis(500), h.gate.recv()).await;
    assert!(none.is_err(), "the gate moved: {none:?}");

    // The real thing: the gate opens, the record says who and why.
    let r = guard
        .post(
            "/open",
            &[
                ("csrf", &csrf),
                ("lane", "east-1"),
                ("reason", "快递车辆 <b>送货</b>"),
            ],
        )
        .await;
    assert_eq!((r.code, r.location()), (303, Some("/")));
    let cmd = h.next_command().await;
    assert_eq!(cmd.action, "open");
    let (_, p) = h.uplink.passage_from("gate-1").await;
    assert_eq!(p.reason, "remote_open");
    assert_eq!(p.operator_id, "guard");
    assert_eq!(p.operator_reason, "快递车辆 <b>送货</b>");
    // The page says what happened, as text.
    let page = guard.get("/").await;
    assert!(page.body.contains("开闸指令已发出"), "{}", page.body);
    // The mode is unchanged by the guard's try.
    let hello = guard.hello().await;
    assert_eq!(hello["gate"]["mode"], "normal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_changes_the_mode_and_the_console_never_ends_fire() {
    let (mut h, addr) = gateway().await;
    let mut chief = Browser::new(addr);
    let csrf = chief.login("chief", CHIEF_PW).await.unwrap();
    chief
        .post("/mode", &[("csrf", &csrf), ("mode", "lockdown")])
        .await;
    let action = h
        .uplink
        .event_body(|b| match b {
            v1::event::Body::OperatorAction(a) => Some(a),
            _ => None,
        })
        .await;
    assert_eq!(
        (
            action.by.as_str(),
            action.role.as_str(),
            action.action.as_str(),
            action.detail.as_str()
        ),
        ("chief", "supervisor", "set_mode", "lockdown")
    );
    chief
        .post("/mode", &[("csrf", &csrf), ("mode", "fire")])
        .await;
    assert_eq!(chief.hello().await["gate"]["mode"], "fire");
    chief
        .post("/mode", &[("csrf", &csrf), ("mode", "normal")])
        .await;
    let page = chief.get("/").await;
    assert!(page.body.contains("模式未改"), "{}", page.body);
    assert!(
        page.body.contains("gatehouse fire-reset"),
        "the page says how fire ends"
    );
    assert_eq!(chief.hello().await["gate"]["mode"], "fire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fever_alarm_shows_live_and_one_acknowledgement_goes_up_and_closes_it() {
    let (mut h, addr) = gateway().await;
    let mut guard = Browser::new(addr);
    let csrf = guard.login("guard", GUARD_PW).await.unwrap();
    h.identify(71, Some("R000071"), 38.6, Unit::Celsius).await;
    let alarm = h.uplink.alarm_of(v1::AlarmKind::Fever).await;
    let hello = within("the fever on the console", LONG, async {
        loop {
            let hello = guard.hello().await;
            if hello["alarms"].as_array().is_some_and(|a| !a.is_empty()) {
                return hello;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let shown = &hello["alarms"][0];
    assert_eq!(shown["kind"], "fever");
    assert_eq!(shown["seq"], alarm.seq.to_string());
    // The lane shows the decision: who, the temperature, the verdict.
    let d = &hello["lanes"][0][0];
    assert_eq!(
        (d["subject"].as_str(), d["allow"].as_bool()),
        (Some("R000071"), Some(false))
    );
    assert_eq!(d["reason"], "fever");

    let seq = alarm.seq.to_string();
    let r = guard.post("/ack", &[("csrf", &csrf), ("seq", &seq)]).await;
    assert_eq!(r.code, 303);
    let acks = h.uplink.acks().await;
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].alarm_seq, alarm.seq);
    assert_eq!(acks[0].alarm_time_ms, alarm.gateway_time_ms);
    assert_eq!(acks[0].by, "console:guard");
    assert!(guard.hello().await["alarms"].as_array().unwrap().is_empty());
    // Twice is once: the second finds nothing open.
    guard.post("/ack", &[("csrf", &csrf), ("seq", &seq)]).await;
    let page = guard.get("/").await;
    assert!(page.body.contains("该报警已确认或不存在"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_limited_before_hashing_and_a_disabled_guard_is_out_at_once() {
    let (h, addr) = gateway().await;
    let mut b = Browser::new(addr);
    for _ in 0..5 {
        let e = b.login("guard", "wrong-password").await.unwrap_err();
        assert!(e.contains("用户名或密码不对"), "{e}");
    }
    // The sixth try is refused before its password is looked at: even the right one.
    let e = b.login("guard", GUARD_PW).await.unwrap_err();
    assert!(e.contains("尝试次数过多"), "{e}");
    // Another person, from the same booth, is not locked out by it.
    let mut chief = Browser::new(addr);
    chief.login("chief", CHIEF_PW).await.unwrap();
    let audit = std::fs::read_to_string(h.dir.path().join("store/console-audit.log")).unwrap();
    assert!(audit.contains("\"login_limited\""), "{audit}");
    assert!(audit.contains("\"login_failed\""), "{audit}");

    // Disabled with the command: the session ends at the next request, the stream with it.
    let (mut stream, _) = chief.live().await;
    let path = h.dir.path().join("console-users");
    let mut all = users::load(&path).unwrap();
    all.iter_mut().for_each(|u| u.enabled = u.name != "chief");
    users::save(&path, &all).unwrap();
    within("the disabled user's stream to end", LONG, async {
        let mut buf = [0u8; 65536];
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    let r = chief.get("/").await;
    assert_eq!((r.code, r.location()), (303, Some("/login")));
    assert!(chief.login("chief", CHIEF_PW).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_idle_connections_and_a_slow_client_leave_every_lane_deciding() {
    // The booth's PC is 127.0.0.1.
    let (mut h, addr) = gateway_with(|t| t + "booth = [\"127.0.0.1\"]\n").await;
    // Twenty other hosts on the LAN (127.0.0.2–21) hold 500 connections open and send nothing
    // — every slot strangers may have — and one more sends its headers a byte a second.
    let mut idle = Vec::new();
    for i in 0..500 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        let from = [127, 0, 0, 2 + (i % 20) as u8];
        s.bind(SocketAddr::new(from.into(), 0)).unwrap();
        if let Ok(c) = s.connect(addr).await {
            idle.push(c);
        }
    }
    let slow = tokio::spawn(async move {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new([127, 0, 0, 3].into(), 0)).unwrap();
        let mut c = s.connect(addr).await.unwrap();
        for b in b"GET /login HTTP/1.1\r\nHost: x\r\n"
            .iter()
            .cycle()
            .take(60)
        {
            if c.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    for i in 0..50u64 {
        h.identify(
            1000 + i,
            Some(&format!("R{:06}", i % 40)),
            36.5,
            Unit::Celsius,
        )
        .await;
    }
    let events = h.uplink.events(50).await;
    let passages = events
        .iter()
        .filter(|e| matches!(e.body, Some(v1::event::Body::Passage(_))))
        .count();
    assert_eq!(passages, 50);
    // The guard, at the booth's own screen, still gets in and sees the lane live.
    let mut guard = Browser::new(addr);
    guard.login("guard", GUARD_PW).await.unwrap();
    let hello = guard.hello().await;
    assert_eq!(hello["lanes"][0].as_array().map(Vec::len), Some(8));
    slow.abort();
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_made_on_the_company_pages_closes_the_alarm_at_the_gate() {
    use crate::commands::{company, keys_toml, send};
    let (mut h, addr) = gateway_with(|t| t + &keys_toml()).await;
    let mut guard = Browser::new(addr);
    guard.login("guard", GUARD_PW).await.unwrap();
    h.identify(81, Some("R000081"), 38.9, Unit::Celsius).await;
    let alarm = h.uplink.alarm_of(v1::AlarmKind::Fever).await;
    within("the fever on the console", LONG, async {
        while guard.hello().await["alarms"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // What the company's pages send when an operator acknowledges it there.
    let gw = BASE.trim_start_matches("gh/v1/");
    let (topic, signed) = gatehouse_company::web::acks_down::order(
        gw,
        (alarm.seq as i64, alarm.gateway_time_ms),
        "ops1",
        gatehouse::now_ms(),
        "company-web",
        &company(),
    )
    .unwrap();
    assert_eq!(topic, format!("{BASE}/cmd"));
    let admin = Client::connect(&h.broker, "company-web").await;
    send(&admin, &topic, &signed).await;
    assert!(h.uplink.result().await.applied);
    let acks = h.uplink.acks().await;
    assert_eq!(acks[0].by, "company:ops1");
    assert_eq!(acks[0].alarm_seq, alarm.seq);
    within("the alarm closed on the console", LONG, async {
        while !guard.hello().await["alarms"]
            .as_array()
            .is_some_and(Vec::is_empty)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}
