//! The order topics, subscribed one at a time, and the ones left out because a message on them
//! broke the link.
//!
//! A message the client cannot take (larger than any order may be, or not MQTT) ends the
//! connection inside rumqttc before its topic is read, and a retained one comes again after
//! every reconnect: one poisoned topic would keep records from flowing for good. So each topic
//! is subscribed only after the broker acknowledged the one before. Brokers (mosquitto, EMQX,
//! rumqttd) send a topic's retained messages right after its SUBACK, in order on the
//! connection, so a link that breaks between topic k's SUBACK and the next one was broken by
//! topic k. That topic is left out — a minute, doubling to an hour while it stays poisoned —
//! and an alarm names it; records and the other topics' orders flow meanwhile.
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// How long after a topic's SUBACK a broken link is blamed on it: its retained message comes
/// at once, and a live one this soon is rare.
const BLAME_WINDOW: Duration = Duration::from_secs(5);
const FIRST_PAUSE: Duration = Duration::from_secs(60);
const LONGEST_PAUSE: Duration = Duration::from_secs(3600);

pub struct Subscriptions {
    topics: Vec<String>,
    /// Topics left out: until when, and the pause the next time it breaks the link.
    left_out: HashMap<String, (Instant, Duration)>,
    /// This connection's topics still to subscribe (last first), and the one asked for.
    to_subscribe: Vec<String>,
    asking: Option<String>,
    /// The topic whose SUBACK came last on this connection, and when.
    last_acked: Option<(String, Instant)>,
}

/// A topic blamed for a broken link, left out for `pause`.
#[derive(Debug, PartialEq, Eq)]
pub struct Blamed {
    pub topic: String,
    pub pause: Duration,
}

impl Subscriptions {
    pub fn new(topics: Vec<String>) -> Self {
        Subscriptions {
            topics,
            left_out: HashMap::new(),
            to_subscribe: Vec::new(),
            asking: None,
            last_acked: None,
        }
    }

    /// Connected: the first topic to subscribe (topics left out whose pause is over are tried
    /// again), or `None` when there is none.
    pub fn connected(&mut self, now: Instant) -> Option<String> {
        self.last_acked = None;
        // A topic clean for longer than its next pause starts the pauses over.
        self.left_out
            .retain(|_, (until, next)| now < *until + *next);
        self.to_subscribe = self
            .topics
            .iter()
            .rev()
            .filter(|t| self.left_out.get(*t).is_none_or(|(until, _)| *until <= now))
            .cloned()
            .collect();
        self.ask()
    }

    /// The broker acknowledged the topic asked for: the next one, or `None` when all are.
    pub fn acked(&mut self, now: Instant) -> Option<String> {
        if let Some(topic) = self.asking.take() {
            self.last_acked = Some((topic, now));
        }
        self.ask()
    }

    fn ask(&mut self) -> Option<String> {
        self.asking = self.to_subscribe.pop();
        self.asking.clone()
    }

    /// The link broke on a message it could not take: the topic to blame, now left out, or
    /// `None` when no SUBACK came just before (a live message: it does not come again).
    pub fn broken_by_message(&mut self, now: Instant) -> Option<Blamed> {
        let (topic, at) = self.last_acked.take()?;
        if now.duration_since(at) > BLAME_WINDOW {
            return None;
        }
        let pause = match self.left_out.get(&topic) {
            Some((_, next)) => *next,
            None => FIRST_PAUSE,
        };
        let next = (pause * 2).min(LONGEST_PAUSE);
        self.left_out.insert(topic.clone(), (now + pause, next));
        Some(Blamed { topic, pause })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Vec<String> {
        ["own", "community", "street", "district"]
            .map(String::from)
            .to_vec()
    }

    /// Subscribes everything on one connection; returns the topics in the order asked.
    fn subscribe_all(s: &mut Subscriptions, now: Instant) -> Vec<String> {
        let mut asked = Vec::new();
        let mut next = s.connected(now);
        while let Some(t) = next {
            asked.push(t);
            next = s.acked(now);
        }
        asked
    }

    #[test]
    fn the_topic_acknowledged_just_before_the_break_is_left_out_and_tried_again_later() {
        let t0 = Instant::now();
        let mut s = Subscriptions::new(topics());
        assert_eq!(s.connected(t0).as_deref(), Some("own"));
        assert_eq!(s.acked(t0).as_deref(), Some("community"));
        assert_eq!(s.acked(t0).as_deref(), Some("street"));
        s.acked(t0);
        // The street's retained message breaks the link.
        let blamed = s.broken_by_message(t0 + Duration::from_millis(3));
        assert_eq!(
            blamed,
            Some(Blamed {
                topic: "street".into(),
                pause: FIRST_PAUSE
            })
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(subscribe_all(&mut s, t1), ["own", "community", "district"]);
        // Still poisoned after its pause: left out twice as long.
        let t2 = t0 + FIRST_PAUSE + Duration::from_secs(1);
        assert_eq!(s.connected(t2).as_deref(), Some("own"));
        s.acked(t2);
        s.acked(t2);
        s.acked(t2);
        assert_eq!(s.broken_by_message(t2).unwrap().pause, FIRST_PAUSE * 2);
    }

    #[test]
    fn a_break_long_after_the_last_suback_blames_no_topic() {
        let t0 = Instant::now();
        let mut s = Subscriptions::new(topics());
        subscribe_all(&mut s, t0);
        assert_eq!(s.broken_by_message(t0 + BLAME_WINDOW * 2), None);
        assert_eq!(subscribe_all(&mut s, t0).len(), 4);
    }

    #[test]
    fn pauses_double_to_an_hour_and_start_over_once_the_topic_is_clean() {
        let mut now = Instant::now();
        let mut s = Subscriptions::new(topics());
        let mut pauses = Vec::new();
        for _ in 0..9 {
            s.connected(now);
            s.acked(now);
            let b = s.broken_by_message(now).unwrap();
            pauses.push(b.pause.as_secs());
            now += b.pause;
        }
        assert_eq!(pauses, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        // Cleared, and poisoned again long after: the pauses start over.
        now += LONGEST_PAUSE * 2;
        s.connected(now);
        s.acked(now);
        assert_eq!(s.broken_by_message(now).unwrap().pause, FIRST_PAUSE);
    }
}
