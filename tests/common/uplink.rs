//! The property company's side in the tests: a client on the company broker that collects
//! everything a gateway publishes under its topic base, decoded, with waits for each kind.
use super::*;

/// What the property company sees: everything published under the gateway's topic base.
pub enum Upstream {
    Events(Vec<v1::Event>),
    Alarms(Vec<v1::Alarm>),
    /// Alarms acknowledged at the gate (`AlarmBatch.acks`).
    Acks(Vec<v1::AlarmAck>),
    Status {
        status: Box<v1::Status>,
        retained: bool,
    },
    Twin(Box<v1::DeviceTwin>),
    Result(v1::CommandResult),
    Stats(v1::StatsBatch),
}

pub struct Uplink {
    pub rx: mpsc::Receiver<Upstream>,
    /// Messages passed over while waiting for another kind, in arrival order.
    stash: std::collections::VecDeque<Upstream>,
    poller: tokio::task::JoinHandle<()>,
}

impl Uplink {
    pub async fn connect(url: &BrokerUrl) -> Uplink {
        Self::connect_to(url, BASE).await
    }

    /// Watches the uplink of the gateway whose topic base is `base`.
    pub async fn connect_to(url: &BrokerUrl, base: &str) -> Uplink {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!("company-{}", N.fetch_add(1, Ordering::Relaxed));
        let (client, mut el) =
            AsyncClient::new(mqtt_client::options(url, &id, Duration::from_secs(15)), 64);
        el.set_network_options(mqtt_client::network_options());
        let (tx, rx) = mpsc::channel(100_000);
        let filter = format!("{base}/#");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let poller = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let msg = if p.topic.ends_with("/events") {
                            Upstream::Events(
                                v1::EventBatch::decode(p.payload.as_ref())
                                    .expect("events decode")
                                    .events,
                            )
                        } else if p.topic.ends_with("/alarms") {
                            {
                                let b = v1::AlarmBatch::decode(p.payload.as_ref())
                                    .expect("alarms decode");
                                if !b.acks.is_empty()
                                    && tx.send(Upstream::Acks(b.acks)).await.is_err()
                                {
                                    return;
                                }
                                if b.alarms.is_empty() {
                                    continue;
                                }
                                Upstream::Alarms(b.alarms)
                            }
                        } else if p.topic.ends_with("/stats") {
                            Upstream::Stats(
                                v1::StatsBatch::decode(p.payload.as_ref()).expect("stats decode"),
                            )
                        } else if p.topic.ends_with("/cmd/result") {
                            Upstream::Result(
                                v1::CommandResult::decode(p.payload.as_ref())
                                    .expect("result decode"),
                            )
                        } else if p.topic.contains("/twin/") {
                            Upstream::Twin(Box::new(
                                v1::DeviceTwin::decode(p.payload.as_ref()).expect("twin decode"),
                            ))
                        } else if p.topic.ends_with("/status") {
                            Upstream::Status {
                                status: Box::new(
                                    v1::Status::decode(p.payload.as_ref()).expect("status decode"),
                                ),
                                retained: p.retain,
                            }
                        } else {
                            continue;
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        within("uplink watcher subscribe", LONG, ready_rx)
            .await
            .unwrap();
        Uplink {
            rx,
            stash: Default::default(),
            poller,
        }
    }

    /// The next message that `pick` takes; the others are stashed for later calls.
    async fn next<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(Upstream) -> Result<T, Upstream>,
    ) -> T {
        for i in 0..self.stash.len() {
            let m = self.stash.remove(i).expect("index in range");
            match pick(m) {
                Ok(t) => return t,
                Err(m) => self.stash.insert(i, m),
            }
        }
        within(what, LONG, async {
            loop {
                let m = self.rx.recv().await.expect("watcher running");
                match pick(m) {
                    Ok(t) => return t,
                    Err(m) => self.stash.push_back(m),
                }
            }
        })
        .await
    }

    /// The next event batch, waiting as long as it takes (the caller bounds it).
    pub async fn batch_or_none(&mut self) -> Vec<v1::Event> {
        loop {
            if let Some(i) = self
                .stash
                .iter()
                .position(|m| matches!(m, Upstream::Events(_)))
            {
                if let Some(Upstream::Events(b)) = self.stash.remove(i) {
                    return b;
                }
            }
            match self.rx.recv().await {
                Some(Upstream::Events(b)) => return b,
                Some(other) => self.stash.push_back(other),
                None => return Vec::new(),
            }
        }
    }

    /// Every alarm received so far (set aside while waiting for events, or waiting now).
    pub fn alarms_so_far(&mut self) -> Vec<v1::Alarm> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            self.stash.push_back(m);
        }
        self.stash.retain(|m| match m {
            Upstream::Alarms(a) => {
                out.extend(a.iter().cloned());
                false
            }
            _ => true,
        });
        out
    }

    pub async fn batch(&mut self) -> Vec<v1::Event> {
        self.next("an event batch", |m| match m {
            Upstream::Events(b) => Ok(b),
            m => Err(m),
        })
        .await
    }

    /// Collects passage events until `n` distinct seqs arrived (duplicates are kept, in order).
    pub async fn events(&mut self, n: usize) -> Vec<v1::Event> {
        let mut out: Vec<v1::Event> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while seen.len() < n {
            for e in self.batch().await {
                seen.insert(e.seq);
                out.push(e);
            }
        }
        out
    }

    /// The next passage decision made on `device`'s identification (other events are set aside).
    pub async fn passage_from(&mut self, device: &str) -> (v1::Event, v1::PassageDecision) {
        let mut aside = Vec::new();
        let found = loop {
            let mut found = None;
            for e in self.batch().await {
                match &e.body {
                    Some(v1::event::Body::Passage(d)) if e.device == device && found.is_none() => {
                        found = Some((e.clone(), d.clone()))
                    }
                    _ => aside.push(e),
                }
            }
            if let Some(f) = found {
                break f;
            }
        };
        if !aside.is_empty() {
            self.stash.push_front(Upstream::Events(aside));
        }
        found
    }

    /// The next alarm of `kind` (others are set aside).
    pub async fn alarm_of(&mut self, kind: v1::AlarmKind) -> v1::Alarm {
        let (first, others) = self
            .next(&format!("a {kind:?} alarm"), |m| match m {
                Upstream::Alarms(a) => match a.iter().position(|x| x.kind() == kind) {
                    Some(i) => {
                        let mut others = a;
                        let first = others.remove(i);
                        Ok((first, others))
                    }
                    None => Err(Upstream::Alarms(a)),
                },
                m => Err(m),
            })
            .await;
        // Alarms that came in the same message wait for the next call.
        if !others.is_empty() {
            self.stash.push_front(Upstream::Alarms(others));
        }
        first
    }

    /// The next statistics batch.
    pub async fn stats(&mut self) -> v1::StatsBatch {
        self.next("a stats batch", |m| match m {
            Upstream::Stats(s) => Ok(s),
            m => Err(m),
        })
        .await
    }

    /// The next command result.
    pub async fn result(&mut self) -> v1::CommandResult {
        self.next("a command result", |m| match m {
            Upstream::Result(r) => Ok(r),
            m => Err(m),
        })
        .await
    }

    /// The next twin of `device` that `ok` accepts (earlier ones are dropped).
    pub async fn twin(
        &mut self,
        device: &str,
        mut ok: impl FnMut(&v1::DeviceTwin) -> bool,
    ) -> v1::DeviceTwin {
        self.next(&format!("a twin of {device}"), |m| match m {
            Upstream::Twin(t) if t.device == device && ok(&t) => Ok(*t),
            Upstream::Twin(t) if t.device == device => {
                // An older state of that device: set aside as an empty twin nobody asks for.
                Err(Upstream::Twin(Box::default()))
            }
            m => Err(m),
        })
        .await
    }

    /// The first event whose body `pick` takes, from the batches as they come (the rest of each
    /// batch is passed over).
    pub async fn event_body<T>(&mut self, pick: impl Fn(v1::event::Body) -> Option<T>) -> T {
        loop {
            let found = self
                .batch()
                .await
                .into_iter()
                .find_map(|e| e.body.and_then(&pick));
            if let Some(t) = found {
                return t;
            }
        }
    }

    /// The next acknowledgements the gateway sends up.
    pub async fn acks(&mut self) -> Vec<v1::AlarmAck> {
        self.next("alarm acknowledgements", |m| match m {
            Upstream::Acks(a) => Ok(a),
            m => Err(m),
        })
        .await
    }

    pub async fn alarm(&mut self) -> v1::Alarm {
        self.next("an alarm", |m| match m {
            Upstream::Alarms(mut a) if !a.is_empty() => Ok(a.remove(0)),
            m => Err(m),
        })
        .await
    }

    pub async fn status(&mut self, state: v1::GatewayState) -> v1::Status {
        self.next(&format!("status {state:?}"), |m| match m {
            Upstream::Status { status, .. } if status.state() == state => Ok(*status),
            m => Err(m),
        })
        .await
    }

    /// Waits until the gateway says it is online — its order topics subscribed — leaving that
    /// status and everything before it for later calls.
    pub async fn online(&mut self) {
        let seen = |m: &Upstream| matches!(m, Upstream::Status { status, .. } if status.state() == v1::GatewayState::Online);
        if self.stash.iter().any(seen) {
            return;
        }
        within("the gateway online", LONG, async {
            loop {
                let m = self.rx.recv().await.expect("watcher running");
                let online = seen(&m);
                self.stash.push_back(m);
                if online {
                    return;
                }
            }
        })
        .await
    }

    pub async fn retained_status(&mut self) -> v1::Status {
        self.next("a retained status", |m| match m {
            Upstream::Status {
                status,
                retained: true,
            } => Ok(*status),
            m => Err(m),
        })
        .await
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        self.poller.abort();
    }
}
