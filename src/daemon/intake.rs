//! The sources, started from the lane plan: MQTT devices (the endpoint or an external broker),
//! the HTTP listener and the devices' own APIs, serial ports, Modbus buses, fire inputs and the
//! liveness watch. What they hand the decision loop comes out as channel ends; what the
//! actuators write to, as the ports' and buses' writers.
use super::actuate::Actuators;
use super::lanes::LanePlan;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::mqtt_client::BrokerUrl;
use crate::sources::modbus::{self, BarrierReport};
use crate::sources::mqtt::MqttDevices;
use crate::sources::{fire_input, liveness, serial, Input, SourceEvent, INPUT_CAPACITY};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::warn;

/// Links lost and found, gate acks, fire readings: few, and each source waits for the loop to
/// take one when it is full (a link change is never dropped).
pub const SOURCE_EVENTS: usize = 256;
/// Barrier input changes from the Modbus buses: full, a bus waits before its next poll.
const BARRIER_REPORTS: usize = 1024;

pub struct Intake {
    pub input: mpsc::Receiver<Input>,
    pub barrier_reports: mpsc::Receiver<BarrierReport>,
    pub actuators: Actuators,
    /// Where devices (and simulators) reach the device-side broker.
    pub device_broker: BrokerUrl,
    /// The MQTT events task: it finishes once `release` says the writer acked its last batch.
    pub mqtt_events: JoinHandle<()>,
    pub release: oneshot::Sender<()>,
    pub joins: Vec<JoinHandle<()>>,
}

/// Starts every source the plan names (its transport lists are taken from it).
pub async fn start(
    config: &Config,
    plan: &mut LanePlan,
    metrics: &Arc<Metrics>,
    events_tx: mpsc::Sender<SourceEvent>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Intake> {
    let (input_tx, input) = mpsc::channel(INPUT_CAPACITY);
    let (reports_tx, barrier_reports) = mpsc::channel(BARRIER_REPORTS);
    let MqttDevices {
        broker,
        commands,
        commands_connected,
        events: mqtt_events,
        commands_join,
        release,
    } = MqttDevices::start(
        &config.device_broker,
        std::mem::take(&mut plan.routes),
        std::mem::take(&mut plan.identities),
        input_tx.clone(),
        events_tx.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
    .await?;
    let watched = std::mem::take(&mut plan.watched);
    let mut joins: Vec<_> = commands_join.into_iter().collect();
    joins.push(liveness::spawn(
        watched,
        events_tx.clone(),
        shutdown.clone(),
    ));
    for f in std::mem::take(&mut plan.fire_inputs) {
        let (events, metrics) = (events_tx.clone(), metrics.clone());
        joins.push(fire_input::spawn(f, events, metrics, shutdown.clone()));
    }
    let http = std::mem::take(&mut plan.http);
    let apis = std::mem::take(&mut plan.apis);
    let sinks = (&input_tx, &events_tx);
    joins.extend(start_http(config, http, apis, sinks, metrics, shutdown).await?);
    let mut serial_writers = Vec::new();
    for port in std::mem::take(&mut plan.ports) {
        let (input, events) = (input_tx.clone(), events_tx.clone());
        let (w, j) = serial::spawn(port, input, events, metrics.clone(), shutdown.clone());
        serial_writers.push(w);
        joins.push(j);
    }
    let mut modbus_writers = Vec::new();
    for bus in std::mem::take(&mut plan.buses) {
        let (reports, events) = (reports_tx.clone(), events_tx.clone());
        let (w, j) = modbus::spawn(bus, reports, events, metrics.clone(), shutdown.clone());
        modbus_writers.push(w);
        joins.push(j);
    }
    let actuators = Actuators {
        by_device: std::mem::take(&mut plan.actuators),
        mqtt: commands,
        mqtt_connected: commands_connected,
        serial: serial_writers,
        modbus: modbus_writers,
        metrics: metrics.clone(),
    };
    Ok(Intake {
        input,
        barrier_reports,
        actuators,
        device_broker: broker,
        mqtt_events,
        release,
        joins,
    })
}

/// The HTTP device listener (when a device pushes over HTTP) and the tasks of the devices whose
/// own API gatehouse speaks. Device passwords come from the config's hashes or the secrets file.
async fn start_http(
    config: &Config,
    mut devices: Vec<crate::sources::http::HttpDevice>,
    apis: Vec<crate::sources::http::api::ApiDevice>,
    (input, events): (&mpsc::Sender<Input>, &mpsc::Sender<SourceEvent>),
    metrics: &Arc<Metrics>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    use crate::config::secrets::{read_secrets, Secret};
    use crate::sources::http;
    let mut joins = Vec::new();
    if devices.is_empty() {
        return Ok(joins);
    }
    let secrets = match &config.device_broker.secrets_file {
        Some(f) => read_secrets(f).map_err(anyhow::Error::msg)?,
        None => Default::default(),
    };
    for d in &mut devices {
        if let Some(p) = secrets.get(&d.device_id) {
            d.secret = Secret::Plain(p.clone());
        }
        if let Some(sn) = &d.adms_sn {
            warn!(device = %d.device_id, sn = %sn, from = ?d.from, "ZKTeco ADMS device: taken on its serial number and address alone (ADMS has no authentication; opted in with adms_open).");
        } else if matches!(d.secret, Secret::None) {
            warn!(device = %d.device_id, "HTTP device has no secret: its pushes are taken on its id alone (development only).");
        }
    }
    let h = &config.device_http;
    let (_, join) = http::start(http::Start {
        listen: h.listen,
        limits: http::Limits {
            connections: h.max_connections,
            per_address: h.max_per_address,
            header_timeout: Duration::from_millis(h.header_timeout_ms),
            body_timeout: Duration::from_millis(h.body_timeout_ms),
            max_body: h.max_body_kib * 1024,
        },
        devices,
        input: input.clone(),
        events: events.clone(),
        refusals: Arc::new(crate::sources::Refusals::new(
            metrics.clone(),
            events.clone(),
        )),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    })
    .await?;
    joins.push(join);
    let ctx = http::api::Context {
        input: input.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    };
    for api in apis {
        let secret = secrets.get(&api.device_id).cloned();
        joins.extend(http::api::spawn(api, secret, ctx.clone())?);
    }
    Ok(joins)
}
