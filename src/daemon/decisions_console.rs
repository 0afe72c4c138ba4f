//! What the guard's console asks of the decision loop (`Control::Open`, `Control::AddPass`):
//! a lane opened with a reason, a visitor pass into the running registry, and the passes again
//! after a registry swap. A child of `decisions.rs`, so it works on the loop's own state.
use super::outbox;
use super::DecisionLoop;
use crate::decision::Mode;
use crate::store::local_passes::LocalPass;
use tracing::info;

impl DecisionLoop {
    /// The guard opens a lane at the console: the core's remote open (the interlock decides a
    /// barrier's command), answered once its record is durable with whether the command left.
    pub(super) async fn open_from_console(
        &mut self,
        lane: String,
        by: String,
        reason: String,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    ) {
        let mut out = Vec::new();
        let now = self.now();
        self.console_opens += 1;
        let id = format!("console:{}:{}", self.status.boot, self.console_opens);
        if self
            .core
            .remote_open(&lane, (by.clone(), reason), id, now, &mut out)
            .is_none()
        {
            let _ = reply.send(Err(format!("no lane {lane:?} with a gate")));
            return;
        }
        info!(lane, by, "Lane opened from the console.");
        self.not_sent = None;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let answer: outbox::Ack = Box::new(move || {
            let _ = tx.send(());
        });
        self.emit(out, Some(answer)).await;
        let result = match self.not_sent.take() {
            Some(why) => Err(format!("the command did not leave: {why}")),
            // Whether the arm went up shows on the lane (the barrier's read-back, an
            // `uncertain` outcome when it did not).
            None => Ok(()),
        };
        tokio::spawn(async move {
            // The answer waits for the record to be durable, as every control answer does.
            if rx.await.is_ok() {
                let _ = reply.send(result);
            }
        });
    }

    /// A pass the console registered: into the running registry at once. A refusal is in the
    /// guard's words (the console shows it as it is).
    pub(super) fn add_pass(&mut self, pass: LocalPass) -> Result<(), String> {
        // A pass already known changes (is withdrawn) whatever the mode.
        let new = !self.local_passes.contains_key(&pass.id);
        if new && self.core.mode() == Mode::Lockdown {
            return Err("封控期间不接待访客（lockdown）".into());
        }
        if new && !self.core.registry.knows_household(&pass.host_household) {
            return Err(format!("名单中没有住户 {}", pass.host_household));
        }
        if new {
            let now = self.status.clock.now();
            credentials_free(&self.core.registry, &pass, now)?;
        }
        add_to(&mut self.core.registry, &pass);
        info!(pass = %pass.id, host = %pass.host_household, by = %pass.issued_by, "Visitor pass registered at the console.");
        self.local_passes.insert(pass.id.clone(), pass);
        Ok(())
    }

    /// The console's passes, into a registry just swapped in: every one this run knows, ended
    /// ones too (a registry read from the store before a withdrawal was written has it still
    /// running); a day after its end one is no longer kept here.
    pub(super) fn readd_local_passes(&mut self) {
        let now = self.status.clock.now();
        self.local_passes
            .retain(|_, p| p.valid_until_ms.saturating_add(DAY_MS) >= now);
        // Oldest first, so the newest pass holds a card or plate handed out again. An ended pass
        // goes in only over a stale running copy of itself (a registry read from the store
        // before its withdrawal was written); otherwise it would take back a credential that has
        // a new holder since.
        let mut passes: Vec<&LocalPass> = self.local_passes.values().collect();
        passes.sort_by_key(|p| (p.valid_from_ms, p.id.as_str()));
        for p in passes {
            let registry = &mut self.core.registry;
            let stale_copy = || match registry.card(&p.code) {
                Some(crate::decision::Holder::Pass(i)) => {
                    registry.pass(*i).is_some_and(|q| *q.id == *p.id)
                }
                _ => false,
            };
            if p.valid_until_ms >= now || stale_copy() {
                add_to(registry, p);
            }
        }
    }
}

const DAY_MS: i64 = 86_400_000;

/// A new pass's card or code and plate must not be anyone else's: a resident's, a blacklisted or
/// allow-listed plate, or another pass still running. (A pass stands over what the lists say
/// for its credentials: without this a guard could let a blacklisted car in as a visitor.)
pub(super) fn credentials_free(
    registry: &crate::decision::Registry,
    pass: &LocalPass,
    now: i64,
) -> Result<(), String> {
    use crate::decision::{Holder, PlateHolder};
    let running = |i: u32| registry.pass(i).is_some_and(|p| p.valid_until_ms >= now);
    match registry.card(&pass.code) {
        Some(Holder::Resident(_)) => return Err("该卡属于住户".into()),
        Some(Holder::Pass(i)) if running(*i) => {
            return Err("该卡号或码正被另一张有效通行证使用".into())
        }
        _ => {}
    }
    if let Some(plate) = pass.plate.as_deref().and_then(|p| registry.plate(p)) {
        match plate.holder {
            PlateHolder::Pass(i) if !running(i) => {}
            PlateHolder::Pass(_) => return Err("该车牌正被另一张有效通行证使用".into()),
            PlateHolder::Blacklisted => return Err("该车牌在黑名单上".into()),
            PlateHolder::Resident { .. } | PlateHolder::AllowListed => {
                return Err("该车牌已在名单上".into())
            }
        }
    }
    Ok(())
}

fn add_to(registry: &mut crate::decision::Registry, p: &LocalPass) {
    p.as_row(|row| registry.add_pass(row));
}
