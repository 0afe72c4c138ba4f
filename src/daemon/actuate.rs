//! Actuation: the gate commands leave here, first, before the record of the decision is written.
//! Never queued behind a down link — a stale "open" must not arrive later, for whoever stands
//! there then — so a command that cannot be handed over at once is dropped, counted and logged,
//! and the gate stays shut. The passage record says what was decided either way.
use crate::decision::barrier::BarrierCommand;
use crate::decision::Policy;
use crate::device::{CommandArgs, GateCommandName, Profile};
use crate::metrics::{worth_logging, Metrics};
use crate::sources::modbus::BusCommand;
use crate::sources::mqtt::CommandLink;
use crate::sources::serial::PortWriter;
use crate::sources::PendingReply;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

/// Where one gate's commands go.
pub struct Actuator {
    pub device_id: String,
    pub sink: Sink,
    pub address: Option<u64>,
    pub profile: Arc<Profile>,
}

pub enum Sink {
    /// The command topic on the device broker.
    Mqtt(String),
    /// Index into the serial ports.
    Serial(usize),
    /// Index into the Modbus buses (commands go through the barrier interlock).
    Modbus(usize),
    /// The reply to the device's own push (a Zhenshi camera told "ok"): only a decision on the
    /// event being answered can use it; any other command for it is dropped.
    HttpReply,
    /// The device's vendor API (Hikvision ISAPI `RemoteControl/door`), by its door task.
    Api(mpsc::Sender<(std::time::Instant, Vec<u8>)>),
    /// Waiting for the device's next poll (ZKTeco ADMS `getrequest`).
    Poll(Arc<crate::sources::http::adms::Polls>),
}

/// Every gate of the box and the links to them.
pub struct Actuators {
    /// By device index: where its commands go, if it takes any.
    pub by_device: Vec<Option<Actuator>>,
    pub mqtt: CommandLink,
    pub mqtt_connected: Arc<AtomicBool>,
    pub serial: Vec<PortWriter>,
    pub modbus: Vec<mpsc::Sender<BusCommand>>,
    pub metrics: Arc<Metrics>,
}

impl Actuators {
    pub fn len(&self) -> usize {
        self.by_device.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_device.is_empty()
    }

    /// Sends `command` to `gate` now, or drops it (see the module docs): Err says why it was
    /// not handed over. `(since, reply)`: when the event behind it arrived (a queued door
    /// command ages from then), and the pending push of a device whose reply is its command.
    #[allow(clippy::too_many_arguments)]
    pub fn command(
        &self,
        policy: &Policy,
        gate: usize,
        command: GateCommandName,
        cause: &str,
        reason: &str,
        ts_ms: i64,
        (since, reply): (std::time::Instant, Option<PendingReply>),
    ) -> Result<(), &'static str> {
        let Some(act) = self.by_device.get(gate).and_then(Option::as_ref) else {
            return Ok(());
        };
        let lane = &policy.lanes[policy.devices[gate].lane].id;
        let payload = act.profile.encode_command(&CommandArgs {
            command,
            address: act.address,
            reason,
            cause,
            lane,
            device: &act.device_id,
            ts_ms,
        });
        let Some(payload) = payload else {
            // A gate without a hold-open command gets a plain open in fire mode.
            if command == GateCommandName::HoldOpen {
                let open = GateCommandName::OpenOut;
                return self.command(policy, gate, open, cause, reason, ts_ms, (since, reply));
            }
            return Ok(());
        };
        let (sent, why) = match &act.sink {
            Sink::Mqtt(topic) => (
                self.mqtt_connected.load(Ordering::Relaxed) && self.mqtt.publish(topic, payload),
                "gate not connected, or its command queue full",
            ),
            Sink::Serial(port) => (
                self.serial.get(*port).is_some_and(|w| w.send(payload)),
                "serial port down, or its queue full",
            ),
            Sink::HttpReply => (
                reply.is_some_and(|r| r.send(payload, command.opens())),
                "the camera's push was answered already, or has gone",
            ),
            Sink::Api(door) => (
                door.try_send((since, payload)).is_ok(),
                "door task busy or gone",
            ),
            Sink::Poll(polls) => (polls.push(since, &payload), "poll queue full"),
            // Barriers on Modbus take their commands from the interlock only.
            Sink::Modbus(_) => return Ok(()),
        };
        if sent {
            Metrics::inc(&self.metrics.commands_sent);
            Ok(())
        } else {
            let n = self.metrics.command_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_logging(n) {
                warn!(device = %act.device_id, cause, failures = n, why, "Gate command not sent. The gate stays shut.");
            }
            Err(why)
        }
    }

    /// A barrier command from the interlock: straight to its bus, never queued behind a down
    /// link (the bus refuses what it cannot write at once, see `sources::modbus`). Err when it
    /// could not even be handed over (queue full, bus task gone): not written, never retried.
    pub fn barrier(&self, device: usize, command: BarrierCommand) -> Result<(), &'static str> {
        let Some(act) = self.by_device.get(device).and_then(Option::as_ref) else {
            return Ok(());
        };
        let Sink::Modbus(bus) = act.sink else {
            return Ok(());
        };
        let c = BusCommand {
            device,
            command,
            at: tokio::time::Instant::now(),
        };
        let sent = self.modbus.get(bus).is_some_and(|w| w.try_send(c).is_ok());
        if !sent {
            let n = self.metrics.command_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_logging(n) {
                warn!(device = %act.device_id, ?command, failures = n, "Barrier command not handed to its bus (queue full or bus task gone).");
            }
            return Err("barrier bus queue full or its task gone");
        }
        Ok(())
    }
}
