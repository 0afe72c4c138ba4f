//! Which publish a PUBACK acknowledges. rumqttc reports `Outgoing::Publish(pkid)` for our QoS 1
//! publishes in the order we made them, so each publish pushes its tag on a FIFO and that event
//! moves the tag to the pkid it got; the PUBACK for the pkid releases it. When the pkid rumqttc
//! picked is still in flight (the broker acked out of order) it reports `AwaitAck(pkid)` instead
//! and sends the publish later under that pkid: the tag is parked until then.
use std::collections::{HashMap, VecDeque};

#[derive(Debug, PartialEq)]
pub(super) enum Tag {
    Batch(crate::store::outbox::Delete),
    Status,
    /// A statistics batch (its seq).
    Stats(u64),
}

#[derive(Default)]
pub(super) struct Tags {
    /// Published, not yet given a pkid by the client, oldest first.
    pub(super) fifo: VecDeque<Tag>,
    inflight: HashMap<u16, Tag>,
    parked: Option<(u16, Tag)>,
}

impl Tags {
    /// A publish went out under `pkid`.
    pub(super) fn outgoing(&mut self, pkid: u16) {
        let tag = match self.parked.take() {
            Some((p, tag)) if p == pkid => Some(tag),
            other => {
                self.parked = other;
                self.fifo.pop_front()
            }
        };
        if let Some(tag) = tag {
            self.inflight.insert(pkid, tag);
        }
    }

    /// The next publish waits for `pkid` to be acknowledged first.
    pub(super) fn await_ack(&mut self, pkid: u16) {
        self.parked = self.fifo.pop_front().map(|t| (pkid, t));
    }

    /// The broker acknowledged `pkid`: the tag of what it carried.
    pub(super) fn acked(&mut self, pkid: u16) -> Option<Tag> {
        self.inflight.remove(&pkid)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    pub(super) fn is_in_flight(&self, pkid: u16) -> bool {
        self.inflight.contains_key(&pkid)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.fifo.is_empty() && self.inflight.is_empty() && self.parked.is_none()
    }

    /// The connection is gone: the client drops what it had in flight (clean session), and so
    /// do we; the records go again from the outbox.
    pub(super) fn clear(&mut self) {
        self.fifo.clear();
        self.inflight.clear();
        self.parked = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Class;

    fn batch(seq: u64) -> Tag {
        Tag::Batch(vec![(Class::Passage, seq)])
    }

    #[test]
    fn each_puback_releases_the_publish_it_acknowledges() {
        let mut t = Tags::default();
        t.fifo.extend([batch(1), Tag::Status, batch(2)]);
        t.outgoing(7);
        t.outgoing(8);
        t.outgoing(9);
        // Out of order, as a broker may.
        assert_eq!(t.acked(9), Some(batch(2)));
        assert_eq!(t.acked(7), Some(batch(1)));
        assert_eq!(t.acked(7), None, "one release per PUBACK");
        assert_eq!(t.acked(8), Some(Tag::Status));
        assert!(t.is_empty());
    }

    #[test]
    fn a_publish_waiting_for_its_pkid_keeps_its_tag_until_sent() {
        let mut t = Tags::default();
        t.fifo.extend([batch(1), batch(2), batch(3)]);
        t.outgoing(1);
        // Batch 2 got pkid 1 again while 1 is in flight: it waits.
        t.await_ack(1);
        assert_eq!(t.acked(1), Some(batch(1)));
        // Sent now under pkid 1; batch 3 goes next under 2.
        t.outgoing(1);
        t.outgoing(2);
        assert_eq!(t.acked(2), Some(batch(3)));
        assert_eq!(t.acked(1), Some(batch(2)));
        assert!(t.is_empty());
    }

    #[test]
    fn a_lost_connection_forgets_everything_in_flight() {
        let mut t = Tags::default();
        t.fifo.extend([batch(1), batch(2)]);
        t.outgoing(1);
        t.await_ack(1);
        t.clear();
        assert!(t.is_empty());
        assert_eq!(
            t.acked(1),
            None,
            "a PUBACK of the old session releases nothing"
        );
    }
}
