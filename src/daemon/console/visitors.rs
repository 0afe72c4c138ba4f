//! The visitor form, replaced: the guard registers a visitor (host household, purpose, entries,
//! until when, a car's plate) and the console issues a local pass — a 10-digit code shown as a
//! QR code for the terminal's QR reader, or the number of a visitor card the guard hands out.
//! Kept in the store (`store/local_passes.rs`: it survives a restart and list syncs), added to
//! the running registry through the decision loop (it admits at once; the core's rules for
//! passes apply: the window, the entries, no visitors in lockdown, nothing on an unsynced
//! clock), and sent upstream as a `VisitorPass` record without the visitor's name.
use super::auth::Session;
use super::{Console, Form};
use crate::daemon::control::Control;
use crate::proto::v1;
use crate::store::local_passes::LocalPass;
use crate::store::outbox::Record;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The longest pass the console issues: a visit, not a tenancy (those come from the company).
pub const MAX_HOURS: i64 = 72;
pub const MAX_ENTRIES: u32 = 20;
/// Passes running at once: a busy gate's day of visitors, not a list (those come from above).
const MAX_ACTIVE: usize = 2000;

/// What the guard typed, checked: the pass, or what is wrong, in the guard's words.
pub fn from_form(form: &Form, by: &str, now_ms: i64) -> Result<LocalPass, String> {
    let text = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let host = text("host");
    if host.is_empty() || host.chars().count() > 32 {
        return Err("请填写被访住户编号。".into());
    }
    let purpose = text("purpose");
    if purpose.is_empty() || purpose.chars().count() > 40 {
        return Err("请填写来访事由（40 字以内）。".into());
    }
    let name = text("name");
    if name.chars().count() > 20 {
        return Err("访客姓名最多 20 字。".into());
    }
    let entries = text("entries").parse::<u32>().unwrap_or(0);
    if !(1..=MAX_ENTRIES).contains(&entries) {
        return Err(format!("进入次数为 1 到 {MAX_ENTRIES}。"));
    }
    let hours = text("hours").parse::<i64>().unwrap_or(0);
    if !(1..=MAX_HOURS).contains(&hours) {
        return Err(format!("有效时长为 1 到 {MAX_HOURS} 小时。"));
    }
    let plate = text("plate").to_uppercase();
    let plate = (!plate.is_empty()).then_some(plate);
    if plate.as_ref().is_some_and(|p| p.chars().count() > 10) {
        return Err("车牌号最多 10 个字符。".into());
    }
    let (medium, code) = match text("medium").as_str() {
        "card" => {
            let card = text("card");
            let ok = (4..=20).contains(&card.len())
                && card.bytes().all(|b| b.is_ascii_digit() || b == b':');
            if !ok {
                return Err("卡号为 4 到 20 位数字（韦根卡写作 设施码:卡号）。".into());
            }
            ("card", card)
        }
        _ => ("qr", new_code()),
    };
    Ok(LocalPass {
        id: format!("L{}", crate::hex::to_hex(&crate::random_bytes::<5>())),
        code,
        medium: medium.into(),
        host_household: host,
        purpose,
        visitor_name: name,
        plate,
        uses: entries,
        valid_from_ms: now_ms,
        valid_until_ms: now_ms + hours * HOUR_MS,
        issued_by: by.into(),
    })
}

/// Ten random digits: what QR readers of the installed terminals report as a card number
/// (Hikvision `cardNo`, Dahua `CardNo`, the RS-485 reader's 0x22 frame).
fn new_code() -> String {
    let n = u64::from_le_bytes(crate::random_bytes::<8>()) % 10_000_000_000;
    format!("{n:010}")
}

pub fn record(p: &LocalPass, withdrawn: bool, now_ms: i64) -> Record {
    Record::Event(v1::Event {
        gateway_time_ms: now_ms,
        body: Some(v1::event::Body::VisitorPass(v1::VisitorPass {
            pass_id: p.id.clone(),
            host_household: p.host_household.clone(),
            purpose: p.purpose.clone(),
            entries: p.uses,
            valid_from_ms: p.valid_from_ms,
            valid_until_ms: p.valid_until_ms,
            plate: p.plate.clone().unwrap_or_default(),
            medium: p.medium.clone(),
            issued_by: p.issued_by.clone(),
            withdrawn,
        })),
        ..Default::default()
    })
}

impl Console {
    /// Registers a visitor (`keep`: the running registry, the store, upstream). The pass's
    /// id, or what stopped it.
    pub(super) async fn register(&self, s: &Session, form: &Form) -> Result<String, String> {
        // A window written on a clock that may be years off would admit anyone or no one.
        if !self.clock.trusted() {
            return Err("网关时钟未同步，暂不能登记访客。".into());
        }
        let now = self.clock.now();
        let active = (self.passes().await.iter())
            .filter(|p| p.valid_until_ms > now)
            .count();
        if active >= MAX_ACTIVE {
            return Err(format!("已有 {active} 张有效通行证，请先撤销不用的。"));
        }
        let pass = from_form(form, &s.user, now)?;
        self.keep(&pass, false).await?;
        self.audit.write(
            &s.user,
            "pass_issued",
            &format!(
                "{} host {} until {}",
                pass.id, pass.host_household, pass.valid_until_ms
            ),
        );
        Ok(pass.id)
    }

    /// A pass withdrawn: its window closed, everywhere.
    pub(super) async fn withdraw(&self, s: &Session, form: &Form) -> String {
        let id = form.get("id").cloned().unwrap_or_default();
        let Some(mut pass) = self.passes().await.into_iter().find(|p| p.id == id) else {
            return "没有这张通行证。".into();
        };
        let now = self.clock.now();
        if pass.valid_until_ms <= now || pass.valid_until_ms == pass.valid_from_ms {
            return "该通行证已失效。".into();
        }
        // Its window closed whatever the clock says (one running ahead would otherwise leave it
        // open once corrected); the record's own time says when.
        pass.valid_until_ms = pass.valid_from_ms;
        self.audit.write(&s.user, "pass_withdrawn", &pass.id);
        match self.keep(&pass, true).await {
            Ok(()) => format!("通行证 {} 已撤销。", pass.id),
            Err(e) => format!("未能撤销：{e}"),
        }
    }

    /// The decision loop first (it checks the pass and adds it to the running registry), then
    /// the store, then upstream. A store that refuses it takes it back out of the registry.
    async fn keep(&self, pass: &LocalPass, withdrawn: bool) -> Result<(), String> {
        // A withdrawal narrows a pass: safe to keep first, so a failure leaves it as it was.
        if withdrawn {
            self.store_pass(pass).await?;
            self.to_loop(pass).await?;
            return self.append(record(pass, true, self.clock.now())).await;
        }
        self.to_loop(pass).await?;
        if let Err(why) = self.store_pass(pass).await {
            // Not kept: not admitted either.
            let mut ended = pass.clone();
            ended.valid_until_ms = ended.valid_from_ms;
            let _ = self.to_loop(&ended).await;
            return Err(why);
        }
        self.append(record(pass, false, self.clock.now())).await
    }

    async fn store_pass(&self, pass: &LocalPass) -> Result<(), String> {
        let (store, p) = (self.store.clone(), pass.clone());
        match tokio::task::spawn_blocking(move || store.put_local_pass(&p)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the store refused it: {e}")),
            Err(_) => Err("the daemon is stopping".into()),
        }
    }

    async fn to_loop(&self, pass: &LocalPass) -> Result<(), String> {
        self.ask(|reply| Control::AddPass(Box::new(pass.clone()), reply))
            .await
    }

    /// The passes kept, newest first (read off the async threads).
    pub(super) async fn passes(&self) -> Vec<LocalPass> {
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || store.local_passes()).await;
        let mut all = match read {
            Ok(Ok(all)) => all,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "Console: the visitor passes cannot be read.");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        all.sort_by_key(|p| std::cmp::Reverse(p.valid_from_ms));
        all
    }

    /// Deletes what retention says is past keeping; hourly.
    pub(super) async fn purge(&self, days: u32) {
        // A clock that may be ahead would delete passes still running.
        if !self.clock.trusted() {
            return;
        }
        let before = self.clock.now() - i64::from(days) * DAY_MS;
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.purge_local_passes(before)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(
                passes = n,
                "Console: expired visitor passes deleted (retention)."
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "Console: visitor passes not purged."),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_form_makes_a_pass_or_says_what_is_wrong() {
        let good = [
            ("host", "H001"),
            ("purpose", "探亲"),
            ("entries", "2"),
            ("hours", "4"),
            ("plate", "浙a12345"),
            ("name", "李四"),
        ];
        let p = from_form(&form(&good), "guard", 1_000).unwrap();
        assert_eq!((p.uses, p.valid_until_ms), (2, 1_000 + 4 * HOUR_MS));
        assert_eq!(p.code.len(), 10);
        assert!(p.code.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(p.plate.as_deref(), Some("浙A12345"));
        assert!(
            !p.id.contains(&p.code),
            "the id never carries the credential"
        );
        for (k, bad) in [
            ("host", ""),
            ("purpose", ""),
            ("entries", "0"),
            ("entries", "21"),
            ("hours", "73"),
            ("hours", "x"),
        ] {
            let mut f = form(&good);
            f.insert(k.into(), bad.into());
            assert!(from_form(&f, "guard", 0).is_err(), "{k}={bad:?}");
        }
        let mut card = form(&good);
        card.insert("medium".into(), "card".into());
        card.insert("card".into(), "123:45678".into());
        assert_eq!(from_form(&card, "g", 0).unwrap().code, "123:45678");
        card.insert("card".into(), "<script>".into());
        assert!(from_form(&card, "g", 0).is_err());
    }
}
