//! Links the tests can break: an MQTT-aware proxy in front of a broker (cut, blackhole, slow,
//! PUBACKs dropped, a write cut in half) and a plain TCP forwarder that can be cut (a Modbus
//! barrier's link).
use gatehouse::mqtt_client::BrokerUrl;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    Up,
    /// Every open connection dropped, new ones refused (a broker killed and not yet back).
    Cut,
    /// Bytes stop flowing, connections stay open, no RST (a pulled cable, a stateful firewall).
    Blackhole,
    /// Every chunk held this long before it goes on (a congested 4G uplink).
    Slow(Duration),
    /// The broker's PUBACKs never reach the client; everything else flows (a broker that took
    /// the messages but whose acknowledgements are lost).
    DropPubAcks,
    /// The next bytes towards the broker get through by half, then the connection drops: a
    /// batch cut in the middle of its packet (the link dying mid-write).
    CutMidWrite,
}

/// A TCP proxy in front of a broker whose link the test can cut, blackhole, slow and restore.
pub struct Proxy {
    pub url: BrokerUrl,
    link: tokio::sync::watch::Sender<(Link, u64)>,
}

impl Proxy {
    pub async fn start(target: BrokerUrl) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // (mode, how many cuts so far): a cut is seen by every connection, even a later restore.
        let (link, _) = tokio::sync::watch::channel((Link::Up, 0u64));
        let l = link.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let (mode, cuts) = *l.borrow();
                if mode == Link::Cut {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let _ = inbound.set_nodelay(true);
                let target = format!("{}:{}", target.host, target.port);
                let rx = l.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        _ = pump(ri, wo, rx.clone(), cuts, false) => {}
                        _ = pump(ro, wi, rx, cuts, true) => {}
                    }
                });
            }
        });
        Proxy {
            url: BrokerUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port,
            },
            link,
        }
    }

    pub fn set(&self, mode: Link) {
        self.link.send_modify(|(m, cuts)| {
            *m = mode;
            if mode == Link::Cut {
                *cuts += 1;
            }
        });
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.set(Link::Cut);
    }

    pub fn restore(&self) {
        self.set(Link::Up);
    }
}

/// A plain TCP forwarder (any protocol: a Modbus TCP barrier's link) that the test can cut: while
/// cut, every open connection is dropped and nothing listens on its address (connections are
/// refused, as when a cable is pulled from a Modbus gateway's switch port and it reboots).
pub struct TcpCut {
    pub addr: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl TcpCut {
    pub async fn start(target: std::net::SocketAddr) -> TcpCut {
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = first.local_addr().unwrap();
        let (up, _) = tokio::sync::watch::channel(true);
        let mut rx = up.subscribe();
        tokio::spawn(async move {
            let mut listener = Some(first);
            loop {
                let l = match listener.take() {
                    Some(l) => l,
                    None => {
                        // Cut: wait for the restore, then listen on the same address again.
                        while !*rx.borrow_and_update() {
                            if rx.changed().await.is_err() {
                                return;
                            }
                        }
                        match TcpListener::bind(addr).await {
                            Ok(l) => l,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                        }
                    }
                };
                loop {
                    tokio::select! {
                        a = l.accept() => {
                            let Ok((mut inbound, _)) = a else { continue };
                            let mut cut = rx.clone();
                            tokio::spawn(async move {
                                let Ok(mut outbound) = TcpStream::connect(target).await else {
                                    return;
                                };
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                    _ = cut.wait_for(|up| !*up) => {}
                                }
                            });
                        }
                        c = rx.changed() => {
                            if c.is_err() {
                                return;
                            }
                            if !*rx.borrow_and_update() {
                                break;
                            }
                        }
                    }
                }
                drop(l);
            }
        });
        TcpCut { addr, up }
    }

    /// Drops every open connection and stops listening.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

/// Copies one direction, obeying the link's mode; ends on EOF, an error or a cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: tokio::sync::watch::Receiver<(Link, u64)>,
    cuts_at_start: u64,
    to_client: bool,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    // Towards the client the stream is cut into MQTT packets, so PUBACKs can be dropped whole.
    let mut frames = Frames::default();
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = link.changed() => {
                if link.borrow().1 != cuts_at_start {
                    return;
                }
                continue;
            }
        };
        // Hold the bytes while blackholed; drop the connection if it is cut meanwhile.
        loop {
            let (mode, cuts) = *link.borrow_and_update();
            if cuts != cuts_at_start {
                return;
            }
            match mode {
                Link::Blackhole => {
                    if link.changed().await.is_err() {
                        return;
                    }
                }
                Link::Slow(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Link::Up | Link::Cut | Link::DropPubAcks | Link::CutMidWrite => break,
            }
        }
        let out = if to_client {
            let drop_acks = link.borrow().0 == Link::DropPubAcks;
            frames.pass(&buf[..n], drop_acks)
        } else if link.borrow().0 == Link::CutMidWrite {
            // Whole packets up to the first PUBLISH, half of it, and the connection drops.
            let out = frames.pass(&buf[..n], false);
            let mut at = 0;
            while let Some((header, body)) = packet_len(&out[at..]) {
                if out[at] & 0xF0 == 0x30 {
                    let _ = to.write_all(&out[..at + (header + body) / 2]).await;
                    return;
                }
                at += header + body;
            }
            out
        } else {
            frames.pass(&buf[..n], false)
        };
        if to.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Cuts a byte stream into MQTT packets (fixed header, remaining length) across reads.
#[derive(Default)]
struct Frames {
    pending: Vec<u8>,
}

impl Frames {
    /// The complete packets so far, without PUBACKs if `drop_acks`; a partial one waits.
    fn pass(&mut self, bytes: &[u8], drop_acks: bool) -> Vec<u8> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((header, body)) = packet_len(&self.pending[at..]) {
            let end = at + header + body;
            if !(drop_acks && self.pending[at] & 0xF0 == 0x40) {
                out.extend_from_slice(&self.pending[at..end]);
            }
            at = end;
        }
        self.pending.drain(..at);
        out
    }
}

/// (fixed header length, remaining length) of the packet at the start of `b`, once complete.
fn packet_len(b: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for i in 0..4 {
        let byte = *b.get(1 + i)?;
        len |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            let header = 2 + i;
            return (b.len() >= header + len).then_some((header, len));
        }
    }
    None
}
