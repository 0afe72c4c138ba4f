//! What the uplink, `gatehouse status` and `/metrics` show of the running gateway: the status
//! source and each device's twin, built once at start from the lanes and the restored core; the
//! decision loop keeps them current from then on.
use super::lanes::LanePlan;
use crate::clock::ClockWatch;
use crate::decision::barrier::Arm;
use crate::decision::{Core, Role};
use crate::metrics::Metrics;
use crate::proto::v1;
use crate::store::Store;
use crate::uplink::twins::Twins;
use crate::uplink::StatusSource;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub fn source(
    gateway: &str,
    plan: &LanePlan,
    core: &Core,
    store: &Store,
    metrics: &Arc<Metrics>,
    clock: &Arc<ClockWatch>,
) -> StatusSource {
    let twins = Arc::new(Twins::default());
    for (i, (s, live)) in plan.status.iter().enumerate() {
        // A barrier's arm and a fire input are unknown until first read.
        let arm = core.barrier(i).map(|_| Arm::Unknown.as_str().into());
        let fire_input = core.policy.devices[i].role == Role::FireInput;
        let twin = v1::DeviceTwin {
            device: s.id.clone(),
            lane: s.lane.clone(),
            profile: s.profile.clone(),
            online: true,
            arm: arm.unwrap_or_default(),
            fire_input: if fire_input {
                "unknown".into()
            } else {
                String::new()
            },
            ..Default::default()
        };
        twins.add(i, twin, live.clone());
    }
    StatusSource {
        gateway: gateway.to_string(),
        mode: Arc::new(Mutex::new(core.mode().as_str())),
        registry_version: Arc::new(AtomicU64::new(store.registry_version().unwrap_or(0))),
        devices: plan.status.clone(),
        metrics: metrics.clone(),
        twins,
        clock: clock.clone(),
        changed: Arc::new(Notify::new()),
        boot: 0,
        seq: Arc::new(AtomicU64::new(0)),
        period_ms: 0,
    }
}
