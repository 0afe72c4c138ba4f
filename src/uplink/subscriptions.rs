//! The order topics, subscribed one at a time, and the ones left out because a message on them
//! broke the link.
//!
//! A message the client cannot take (larger than any order may be, or not MQTT) ends the
//! connection inside rumqttc before its topic is read, and a retained one comes again after
//! every reconnect: one poisoned topic would keep records from flowing for good. So each topic
//! is asked for on its own, and the next only a moment after the broker acknowledged it: brokers
//! (mosquitto, EMQX, rumqttd) send a topic's retained messages right after its SUBACK, in order
//! on the connection. A link that breaks while a topic is asked for, or within moments of its
//! SUBACK with nothing asked since, was broken by that topic (the SUBACK may have come in the
//! same read as the poison and never reached us). That topic is left out — a minute, doubling to
//! an hour while it stays poisoned, then asked for again, on this connection or the next — and an
//! alarm names it; records and the other topics' orders flow meanwhile.
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// How long after a topic's SUBACK a broken link is blamed on it: its retained message comes
/// at once, and a live one this soon is rare.
const BLAME_WINDOW: Duration = Duration::from_secs(5);
/// The pause after a SUBACK before the next topic is asked for: its retained messages arrive
/// meanwhile, so a break is told apart from the next topic's.
const SETTLE: Duration = Duration::from_millis(50);
const FIRST_PAUSE: Duration = Duration::from_secs(60);
const LONGEST_PAUSE: Duration = Duration::from_secs(3600);

pub struct Subscriptions {
    topics: Vec<String>,
    /// Topics left out: until when, and the pause the next time it breaks the link.
    left_out: HashMap<String, (Instant, Duration)>,
    /// This connection's topics still to subscribe (last first)…
    to_subscribe: Vec<String>,
    /// …the one asked for, its SUBACK not seen yet…
    asking: Option<String>,
    /// …when the next may be asked for, those subscribed, the one whose SUBACK came last.
    next_at: Instant,
    subscribed: HashSet<String>,
    last_acked: Option<(String, Instant)>,
    /// Status and the rest went out once every topic of the connection was asked for.
    greeted: bool,
}

/// What the uplink does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Subscribe(String),
    /// Every topic is subscribed (or left out): "online", twins and statistics may go.
    Greet,
    Wait,
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
            next_at: Instant::now(),
            subscribed: HashSet::new(),
            last_acked: None,
            greeted: false,
        }
    }

    /// Connected: the topics to subscribe are every one not left out (or whose pause is over).
    pub fn connected(&mut self, now: Instant) -> Step {
        // A topic clean for longer than its next pause starts the pauses over.
        self.left_out
            .retain(|_, (until, next)| now < *until + *next);
        self.to_subscribe = (self.topics.iter().rev())
            .filter(|t| self.left_out.get(*t).is_none_or(|(until, _)| *until <= now))
            .cloned()
            .collect();
        self.asking = None;
        self.subscribed.clear();
        self.last_acked = None;
        self.greeted = false;
        self.next_at = now;
        match self.tick(now) {
            Some(topic) => Step::Subscribe(topic),
            None => self.greet_once(),
        }
    }

    /// The broker acknowledged the topic asked for.
    pub fn acked(&mut self, now: Instant) -> Step {
        if let Some(topic) = self.asking.take() {
            self.subscribed.insert(topic.clone());
            self.last_acked = Some((topic, now));
        }
        self.next_at = now + SETTLE;
        match self.to_subscribe.is_empty() {
            true => self.greet_once(),
            false => Step::Wait,
        }
    }

    /// The topic could not be asked for (the client's queue was full): again after a pause.
    pub fn not_asked(&mut self, now: Instant) {
        if let Some(topic) = self.asking.take() {
            self.to_subscribe.push(topic);
        }
        self.next_at = now + SETTLE;
    }

    /// When [`Subscriptions::tick`] has a topic to ask for: the next of the connection's after
    /// its pause, or a topic left out whose pause is over.
    pub fn due(&self) -> Option<Instant> {
        if self.asking.is_some() {
            return None;
        }
        let next = (!self.to_subscribe.is_empty()).then_some(self.next_at);
        let returning = (self.left_out.iter())
            .filter(|(t, _)| !self.subscribed.contains(*t))
            .map(|(_, (until, _))| (*until).max(self.next_at))
            .min();
        next.into_iter().chain(returning).min()
    }

    /// The topic to ask for now, if any.
    pub fn tick(&mut self, now: Instant) -> Option<String> {
        if self.asking.is_some() || now < self.next_at {
            return None;
        }
        let topic = match self.to_subscribe.pop() {
            Some(t) => t,
            None => (self.left_out.iter())
                .filter(|(t, (until, _))| *until <= now && !self.subscribed.contains(*t))
                .map(|(t, _)| t.clone())
                .min()?,
        };
        self.asking = Some(topic.clone());
        Some(topic)
    }

    /// The link broke on a message it could not take: the topic to blame, now left out, or
    /// `None` when none was asked for and no SUBACK came just before (a live message: it does
    /// not come again).
    pub fn broken_by_message(&mut self, now: Instant) -> Option<Blamed> {
        let recent =
            (self.last_acked.take()).filter(|(_, at)| now.duration_since(*at) <= BLAME_WINDOW);
        let topic = self.asking.take().or(recent.map(|(t, _)| t))?;
        let pause = self
            .left_out
            .get(&topic)
            .map_or(FIRST_PAUSE, |(_, next)| *next);
        let next = (pause * 2).min(LONGEST_PAUSE);
        self.left_out.insert(topic.clone(), (now + pause, next));
        Some(Blamed { topic, pause })
    }

    fn greet_once(&mut self) -> Step {
        match std::mem::replace(&mut self.greeted, true) {
            false => Step::Greet,
            true => Step::Wait,
        }
    }
}

/// What a connection error says of a message from the broker the client could not take (too
/// large, or not MQTT); `None` for any other end of the link.
pub fn unreadable(e: &rumqttc::ConnectionError) -> Option<String> {
    use rumqttc::mqttbytes::Error as Bytes;
    match e {
        rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(b)) => {
            Some(match b {
                Bytes::PayloadSizeLimitExceeded(n) => {
                    format!(
                        "a message of {n} bytes (the limit is {})",
                        super::MAX_COMMAND
                    )
                }
                other => format!("a message that is not MQTT ({other})"),
            })
        }
        _ => None,
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

    /// Subscribes everything on one connection, the pauses passing, up to its greeting;
    /// returns the topics asked for, in order, and the time then.
    fn subscribe_all(s: &mut Subscriptions, mut now: Instant) -> (Vec<String>, Instant) {
        let mut asked = Vec::new();
        let mut step = s.connected(now);
        loop {
            match step {
                Step::Greet => return (asked, now),
                Step::Subscribe(t) => asked.push(t),
                Step::Wait => {
                    now = s.due().expect("a topic due");
                    asked.push(s.tick(now).expect("a topic to ask for"));
                }
            }
            step = s.acked(now);
        }
    }

    #[test]
    fn one_topic_at_a_time_each_after_the_last_settled_then_greet() {
        let t0 = Instant::now();
        let mut s = Subscriptions::new(topics());
        assert_eq!(s.connected(t0), Step::Subscribe("own".into()));
        assert_eq!(s.due(), None, "nothing while a topic is asked for");
        assert_eq!(s.acked(t0), Step::Wait);
        assert_eq!(s.due(), Some(t0 + SETTLE));
        assert_eq!(s.tick(t0), None, "not before the pause");
        assert_eq!(s.tick(t0 + SETTLE).as_deref(), Some("community"));
        let (asked, _) = subscribe_all(&mut Subscriptions::new(topics()), t0);
        assert_eq!(asked, topics());
        assert_eq!(Subscriptions::new(Vec::new()).connected(t0), Step::Greet);
    }

    #[test]
    fn the_topic_acknowledged_just_before_the_break_is_left_out_and_asked_again_later() {
        let t0 = Instant::now();
        let mut s = Subscriptions::new(topics());
        s.connected(t0);
        s.acked(t0);
        s.tick(t0 + SETTLE);
        s.acked(t0 + SETTLE);
        let t1 = t0 + SETTLE * 2;
        assert_eq!(s.tick(t1).as_deref(), Some("street"));
        s.acked(t1);
        // The street's retained message breaks the link, right after its SUBACK.
        let blamed = s.broken_by_message(t1 + Duration::from_millis(3));
        let street = Blamed {
            topic: "street".into(),
            pause: FIRST_PAUSE,
        };
        assert_eq!(blamed, Some(street));
        let (asked, now) = subscribe_all(&mut s, t1 + Duration::from_secs(1));
        assert_eq!(asked, ["own", "community", "district"]);
        // Connected all along: asked for again once its pause is over, and still poisoned.
        assert_eq!(s.due(), Some(t1 + FIRST_PAUSE + Duration::from_millis(3)));
        assert_eq!(s.tick(now), None);
        let later = t1 + FIRST_PAUSE + Duration::from_secs(1);
        assert_eq!(s.tick(later).as_deref(), Some("street"));
        assert_eq!(s.broken_by_message(later).unwrap().pause, FIRST_PAUSE * 2);
    }

    #[test]
    fn a_break_while_a_topic_is_asked_for_blames_it_even_if_its_suback_never_came() {
        let t0 = Instant::now();
        let mut s = Subscriptions::new(topics());
        s.connected(t0);
        s.acked(t0);
        assert_eq!(s.tick(t0 + SETTLE).as_deref(), Some("community"));
        // Its SUBACK came in the same read as the poison: the client saw only the error.
        let blamed = s.broken_by_message(t0 + SETTLE).unwrap();
        assert_eq!(blamed.topic, "community");
    }

    #[test]
    fn a_break_long_after_the_last_suback_blames_no_topic() {
        let t0 = Instant::now();
        let mut s = Subscriptions::new(topics());
        let (_, now) = subscribe_all(&mut s, t0);
        assert_eq!(s.broken_by_message(now + BLAME_WINDOW * 2), None);
        assert_eq!(subscribe_all(&mut s, now).0.len(), 4);
    }

    #[test]
    fn pauses_double_to_an_hour_and_start_over_once_the_topic_is_clean() {
        let mut now = Instant::now();
        let mut s = Subscriptions::new(topics());
        let mut pauses = Vec::new();
        for _ in 0..9 {
            s.connected(now);
            let b = s.broken_by_message(now).unwrap();
            pauses.push(b.pause.as_secs());
            now += b.pause;
        }
        assert_eq!(pauses, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        // Cleared, and poisoned again long after: the pauses start over.
        now += LONGEST_PAUSE * 2;
        s.connected(now);
        assert_eq!(s.broken_by_message(now).unwrap().pause, FIRST_PAUSE);
    }
}
