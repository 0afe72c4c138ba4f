//! What the outbox keeps and shows: a record, the row it is kept as (`encode`) and how a row
//! goes into its uplink batch (`frame`) — both sides of one format, here together — and the tap
//! that copies records to whoever watches.
use super::Class;
use crate::proto::v1;
use prost::Message;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Something to keep until the uplink broker has it.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Event(v1::Event),
    Alarm(v1::Alarm),
    /// An alarm acknowledged at the gate: goes up with the alarms, in `AlarmBatch.acks`.
    AlarmAck(v1::AlarmAck),
}

impl Record {
    /// Made while the gateway's clock was not known to be right.
    pub fn mark_clock_unsynced(&mut self) {
        match self {
            Record::Event(e) => e.clock_unsynced = true,
            Record::Alarm(a) => a.clock_unsynced = true,
            Record::AlarmAck(_) => {}
        }
    }

    /// Acknowledged from memory while the store could not be written (degraded mode).
    pub fn mark_not_durable(&mut self) {
        match self {
            Record::Event(e) => e.not_durable = true,
            Record::Alarm(a) => a.not_durable = true,
            Record::AlarmAck(_) => {}
        }
    }

    pub fn class(&self) -> Class {
        match self {
            // What the gate did and what became of it: the audit trail, kept before readings.
            Record::Event(v1::Event {
                body: Some(v1::event::Body::Passage(_) | v1::event::Body::CommandOutcome(_)),
                ..
            }) => Class::Passage,
            Record::Event(_) => Class::Routine,
            Record::Alarm(_) | Record::AlarmAck(_) => Class::Alarm,
        }
    }
}

/// `AlarmBatch.acks`: the field an acknowledgement is kept as.
pub const ACK_FIELD: u32 = 2;
/// Records the tap holds for a watcher that has not read them yet; past it the oldest go.
const TAP_PASSAGES: usize = 4096;
/// Alarms and acknowledgements have room of their own: a flood of passages never pushes one out.
const TAP_ALARMS: usize = 16384;

/// A copy of every passage, alarm and acknowledgement once it has its seq, for whoever watches
/// (the guard's console). Never waits: a watcher that falls behind loses the oldest and is told
/// how many (`RecvError::Lagged`). Made at the first `subscribe` (a box without a console pays
/// nothing); each copy is one `Arc`, shared by every slot that holds it.
#[derive(Clone, Default)]
pub struct Tap {
    channels: Arc<std::sync::OnceLock<TapChannels>>,
}

struct TapChannels {
    passages: broadcast::Sender<Arc<Record>>,
    alarms: broadcast::Sender<Arc<Record>>,
}

/// A watcher's end of the [`Tap`].
pub struct TapRx {
    pub passages: broadcast::Receiver<Arc<Record>>,
    pub alarms: broadcast::Receiver<Arc<Record>>,
}

impl Tap {
    pub fn subscribe(&self) -> TapRx {
        let c = self.channels.get_or_init(|| TapChannels {
            passages: broadcast::channel(TAP_PASSAGES).0,
            alarms: broadcast::channel(TAP_ALARMS).0,
        });
        TapRx {
            passages: c.passages.subscribe(),
            alarms: c.alarms.subscribe(),
        }
    }

    pub(super) fn show(&self, records: &[Record]) {
        let Some(c) = self.channels.get() else {
            return;
        };
        for r in records {
            let to = match r.class() {
                Class::Alarm => &c.alarms,
                Class::Passage => &c.passages,
                Class::Routine => continue,
            };
            if to.receiver_count() > 0 {
                let _ = to.send(Arc::new(r.clone()));
            }
        }
    }
}

/// One record as the outbox keeps it: its seq and id set, behind its creation time.
pub(super) fn encode(r: &mut Record, gateway: &str, seq: u64, now: i64) -> Vec<u8> {
    let id = format!("{gateway}:{seq}");
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(&now.to_le_bytes());
    match r {
        Record::Event(e) => {
            e.seq = seq;
            e.event_id = id;
            e.encode(&mut buf).expect("a Vec grows as needed");
        }
        Record::Alarm(al) => {
            al.seq = seq;
            al.alarm_id = id;
            al.encode(&mut buf).expect("a Vec grows as needed");
        }
        // Kept as its field of the `AlarmBatch` (key and length): an alarm's bytes start with
        // its `alarm_id` (field 1, never empty), an ack's with field 2 — the uplink copies it
        // into the batch as it is (`uplink::frame`).
        Record::AlarmAck(ack) => {
            prost::encoding::message::encode(ACK_FIELD, ack, &mut buf);
        }
    }
    buf
}

/// One stored record into its batch: behind field 1's key and length, unless it is an alarm
/// acknowledgement, kept already as `AlarmBatch.acks` (`store::outbox::ACK_FIELD`).
pub fn frame(message: &[u8], payload: &mut Vec<u8>) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let ack_key = (ACK_FIELD << 3) as u8 | WireType::LengthDelimited as u8;
    if message.first() == Some(&ack_key) {
        payload.extend_from_slice(message);
        return;
    }
    encode_key(1, WireType::LengthDelimited, payload);
    encode_varint(message.len() as u64, payload);
    payload.extend_from_slice(message);
}
