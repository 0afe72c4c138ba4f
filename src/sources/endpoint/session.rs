//! One device connection on the endpoint: CONNECT and its checks, then the packets of an
//! authenticated device until it leaves, is taken over, or breaks the protocol.
use super::{Ack, Command, Pending, Shared, COMMAND_MAX_AGE, COMMAND_QUEUE, CONNECT_MAX};
use crate::metrics::Metrics;
use crate::sources::decode;
use crate::sources::Input;
use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PingResp, PubAck, PubComp, PubRec, Publish,
    SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info};

/// Longest a write to a device may take: one that does not read its socket is dropped.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT, or the socket closed.
    Left,
    Closed(&'static str),
    /// A protocol violation, refused and counted.
    Violation(String),
    TakenOver,
    Stopping,
}

/// [`serve`] after a TLS handshake (within the CONNECT deadline); the device's certificate, if
/// it gave one, goes with it.
pub(super) async fn serve_tls(
    shared: Arc<Shared>,
    input: mpsc::Sender<Input>,
    acceptor: rumqttc::tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    pending: Pending,
) {
    let handshake = tokio::time::timeout(shared.limits.connect_timeout, acceptor.accept(stream));
    let tls = match handshake.await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return shared.refuse(None, peer, &format!("TLS handshake failed: {e}")),
        Err(_) => return shared.refuse(None, peer, "no TLS handshake in time"),
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    serve(shared, input, tls, peer, pending, cert).await
}

/// Serves one accepted socket. `pending` is its place among the unauthenticated sockets, given
/// back once the device is known; `cert`, the certificate a device presented over TLS.
pub(super) async fn serve<S>(
    shared: Arc<Shared>,
    input: mpsc::Sender<Input>,
    mut stream: S,
    peer: SocketAddr,
    pending: Pending,
    cert: Option<CertificateDer<'static>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut buf = BytesMut::with_capacity(4096);
    let first = tokio::time::timeout(
        shared.limits.connect_timeout,
        read_connect(&mut stream, &mut buf),
    )
    .await;
    let connect = match first {
        Ok(Ok(c)) => c,
        Ok(Err(why)) if why == MQTT_5 => {
            // A 3.1.1 server answers a newer protocol with return code 1 (MQTT 3.1.1 §3.1.2.2),
            // so the client says why instead of retrying blind.
            let code = ConnectReturnCode::RefusedProtocolVersion;
            let refusal = Packet::ConnAck(ConnAck::new(code, false));
            let _ = tokio::time::timeout(WRITE_DEADLINE, write(&mut stream, &refusal)).await;
            return shared.refuse(None, peer, &why);
        }
        Ok(Err(why)) => return shared.refuse(None, peer, &why),
        Err(_) => return shared.refuse(None, peer, "no CONNECT in time"),
    };
    let i = match admit(&shared, &connect, cert.as_ref(), peer.ip()) {
        Ok(i) => i,
        Err((code, why)) => {
            let refusal = Packet::ConnAck(ConnAck::new(code, false));
            let _ = tokio::time::timeout(WRITE_DEADLINE, write(&mut stream, &refusal)).await;
            return shared.refuse(None, peer, &why);
        }
    };
    drop(pending);
    let (acks_tx, acks) = mpsc::channel(shared.limits.inflight + 1);
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let kill = Arc::new(Notify::new());
    let clean = connect.clean_session;
    let (generation, present) = shared.attach(i, clean, commands_tx, kill.clone());
    let ack = Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, present));
    if tokio::time::timeout(WRITE_DEADLINE, write(&mut stream, &ack))
        .await
        .map_or(true, |r| r.is_err())
    {
        shared.detach(i, generation, clean);
        return;
    }
    Metrics::inc(&shared.metrics.device_connects);
    let id = shared.identities[i].id.clone();
    info!(device = %id, peer = %peer, client_id = %connect.client_id, clean, "Device connected.");
    let keep_alive = Duration::from_secs(u64::from(connect.keep_alive));
    let mut session = Session {
        shared: shared.clone(),
        i,
        peer,
        input: Some(input),
        acks_tx,
        inflight: 0,
        inflight_bytes: 0,
        skip: Skip::None,
        out: BytesMut::new(),
    };
    let end = session
        .run(
            &mut stream,
            buf,
            acks,
            commands,
            &kill,
            keep_alive.mul_f32(1.5),
        )
        .await;
    shared.detach(i, generation, clean);
    match &end {
        End::Violation(why) => shared.refuse(Some(i), peer, why),
        End::Left | End::TakenOver | End::Stopping => {
            debug!(device = %id, peer = %peer, why = ?end, "Device disconnected.")
        }
        End::Closed(why) => info!(device = %id, peer = %peer, why, "Device connection closed."),
    }
    let _ = tokio::time::timeout(WRITE_DEADLINE, stream.shutdown()).await;
}

/// Reads the first packet, which must be a CONNECT of MQTT 3.1.1 no larger than [`CONNECT_MAX`].
async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Connect, String> {
    loop {
        // The 3.1.1 codec cannot read an MQTT 5 CONNECT that carries properties: known by its
        // first bytes, it is refused with its own code.
        if speaks_mqtt_5(buf) {
            return Err(MQTT_5.into());
        }
        match Packet::read(buf, CONNECT_MAX) {
            Ok(Packet::Connect(c)) => return Ok(c),
            Ok(p) => return Err(format!("first packet is not CONNECT ({:?})", kind(&p))),
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(e) => return Err(format!("bad CONNECT: {e}")),
        }
        buf.reserve(1024);
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Err("closed before CONNECT".into()),
            Ok(_) => {}
        }
    }
}

const MQTT_5: &str = "MQTT 5 CONNECT (this endpoint speaks 3.1.1)";

/// Whether the bytes read so far begin an MQTT 5 CONNECT: its fixed header, the protocol name
/// "MQTT" and level 5. The 3.1.1 codec cannot read one that carries properties.
fn speaks_mqtt_5(buf: &[u8]) -> bool {
    let Some((&0x10, rest)) = buf.split_first() else {
        return false;
    };
    // The remaining length: 1 to 4 bytes, the last without its top bit.
    let Some(len_bytes) = rest.iter().take(4).position(|b| b & 0x80 == 0) else {
        return false;
    };
    rest.get(len_bytes + 1..len_bytes + 8) == Some(&[0, 4, b'M', b'Q', b'T', b'T', 5][..])
}

/// Checks a CONNECT: protocol, known device, secret, will topic. The identity's index, or the
/// CONNACK code and the reason for the log.
fn admit(
    shared: &Shared,
    c: &Connect,
    cert: Option<&CertificateDer<'static>>,
    peer: std::net::IpAddr,
) -> Result<usize, (ConnectReturnCode, String)> {
    if c.protocol != Protocol::V4 {
        return Err((ConnectReturnCode::RefusedProtocolVersion, MQTT_5.into()));
    }
    let Some(login) = &c.login else {
        return Err((ConnectReturnCode::NotAuthorized, "anonymous CONNECT".into()));
    };
    let Some(&i) = shared.by_user.get(&login.username) else {
        return Err((
            ConnectReturnCode::BadUserNamePassword,
            format!("unknown username {:?}", login.username),
        ));
    };
    let who = &shared.identities[i];
    let password = (!login.password.is_empty()).then_some(login.password.as_str());
    if let Some(cert) = cert {
        // A certificate the configured CA signed is the credential, if it names this device.
        if !certificate_names(cert, &who.id) {
            return Err((
                ConnectReturnCode::BadUserNamePassword,
                format!("a certificate not issued to {}", who.id),
            ));
        }
    } else if !who.secret.admits(password) {
        return Err((
            ConnectReturnCode::BadUserNamePassword,
            format!("wrong password for {}", who.id),
        ));
    }
    if who
        .from
        .is_some_and(|from| from.to_canonical() != peer.to_canonical())
    {
        return Err((
            ConnectReturnCode::NotAuthorized,
            format!("{} from an address not its own", who.id),
        ));
    }
    if let Some(w) = &c.last_will {
        if !who.publishes.contains(&w.topic) {
            return Err((
                ConnectReturnCode::NotAuthorized,
                format!("{} asked for a will on a topic not its own", who.id),
            ));
        }
    }
    Ok(i)
}

/// Whether a device certificate names `device_id` (a DNS subject alternative name): the chain
/// was checked against the configured CA in the handshake.
fn certificate_names(cert: &CertificateDer<'static>, device_id: &str) -> bool {
    let Ok(name) = ServerName::try_from(device_id.to_string()) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
}

fn kind(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, p: &Packet) -> std::io::Result<()> {
    let mut b = BytesMut::new();
    p.write(&mut b, usize::MAX)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    stream.write_all(&b).await
}

/// An oversized publish being skipped: first its header is awaited (for its packet id), then
/// the rest of its bytes are read and dropped.
enum Skip {
    None,
    /// Bytes of the packet still to drop.
    Rest(usize),
}

struct Session {
    shared: Arc<Shared>,
    i: usize,
    peer: SocketAddr,
    /// The decision loop's input; dropped when intake stops, so the loop can finish.
    input: Option<mpsc::Sender<Input>>,
    /// Where the acks of this connection's messages go once durable (room for the whole window).
    acks_tx: mpsc::Sender<Ack>,
    /// QoS 1/2 messages handed on and not yet acked, and their payload bytes.
    inflight: usize,
    inflight_bytes: usize,
    skip: Skip,
    /// Bytes waiting to be written.
    out: BytesMut,
}

impl Session {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        mut buf: BytesMut,
        mut acks: mpsc::Receiver<Ack>,
        mut commands: mpsc::Receiver<Command>,
        kill: &Notify,
        keep_alive: Duration,
    ) -> End {
        let mut shutdown = self.shared.shutdown.clone();
        let mut released = self.shared.released.clone();
        let mut deadline = Instant::now() + keep_alive;
        if *shutdown.borrow() {
            self.input = None;
        }
        loop {
            let intake = self.input.is_some();
            // Take what is buffered, as far as the in-flight window allows.
            while self.input.is_some() && self.has_room() {
                match self.next(&mut buf).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(end) => return end,
                }
            }
            if !self.out.is_empty() {
                // A device that does not read its socket must not hold this task (and the
                // decision loop's input with it) for ever.
                match tokio::time::timeout(WRITE_DEADLINE, stream.write_all(&self.out)).await {
                    Ok(Ok(())) => self.out.clear(),
                    Ok(Err(_)) => return End::Closed("write failed"),
                    Err(_) => return End::Violation("does not read its socket".into()),
                }
            }
            let reading = self.input.is_some() && self.has_room();
            tokio::select! {
                biased;
                _ = kill.notified() => return End::TakenOver,
                _ = released.changed() => {
                    // The writer ran its last acks just before: they go out before we close.
                    while let Ok(a) = acks.try_recv() {
                        self.write_ack(a);
                    }
                    let _ = tokio::time::timeout(WRITE_DEADLINE, stream.write_all(&self.out)).await;
                    return End::Stopping;
                }
                _ = shutdown.changed(), if intake => {
                    // Intake stops; what was handed on is still acked when durable.
                    self.input = None;
                }
                // Both senders are held here too: neither channel closes under us.
                Some(a) = acks.recv() => {
                    self.write_ack(a);
                    while let Ok(a) = acks.try_recv() {
                        self.write_ack(a);
                    }
                }
                Some(c) = commands.recv() => {
                    self.write_command(c);
                    while let Ok(c) = commands.try_recv() {
                        self.write_command(c);
                    }
                }
                r = read_more(stream, &mut buf, &mut self.skip), if reading => match r {
                    Ok(0) => return End::Left,
                    Ok(_) => deadline = Instant::now() + keep_alive,
                    Err(_) => return End::Closed("read failed"),
                },
                _ = tokio::time::sleep_until(deadline.into()), if reading && !keep_alive.is_zero() => {
                    return End::Closed("keep-alive expired");
                }
            }
            if !reading {
                // Not reading is our doing (window full, stopping): the device's pings wait in
                // its socket, so its keep-alive counts from when reading resumes.
                deadline = Instant::now() + keep_alive;
            }
        }
    }

    fn has_room(&self) -> bool {
        self.inflight < self.shared.limits.inflight
            && self.inflight_bytes < self.shared.limits.inflight_bytes
    }

    fn write_ack(&mut self, a: Ack) {
        self.inflight = self.inflight.saturating_sub(1);
        self.inflight_bytes = self.inflight_bytes.saturating_sub(a.bytes);
        let p = match a.qos {
            0 => return,
            2 => Packet::PubRec(PubRec::new(a.pkid)),
            _ => Packet::PubAck(PubAck::new(a.pkid)),
        };
        let _ = p.write(&mut self.out, usize::MAX);
    }

    fn write_command(&mut self, c: Command) {
        if c.queued.elapsed() > COMMAND_MAX_AGE {
            Metrics::inc(&self.shared.metrics.commands_stale);
            return;
        }
        let p = Packet::Publish(Publish::new(c.topic, QoS::AtMostOnce, c.payload));
        let _ = p.write(&mut self.out, usize::MAX);
    }

    /// Takes the next packet from `buf`: true if one was handled, false if more bytes are
    /// needed, or how the connection ends.
    async fn next(&mut self, buf: &mut BytesMut) -> Result<bool, End> {
        if !matches!(self.skip, Skip::None) {
            return Ok(false);
        }
        let max = self.shared.limits.max_packet;
        match Packet::read(buf, max) {
            Ok(p) => self.handle(p).await.map(|()| true),
            Err(CodecError::InsufficientBytes(_)) => Ok(false),
            Err(CodecError::PayloadSizeLimitExceeded(_)) => self.oversized(buf).await,
            Err(e) => Err(End::Violation(format!("malformed packet: {e}"))),
        }
    }

    /// A packet over the limit: a publish is skipped unread once its packet id is in, handed on
    /// undecoded (so its ack keeps its place) and counted; anything else ends the connection.
    async fn oversized(&mut self, buf: &mut BytesMut) -> Result<bool, End> {
        let Some((byte1, header_len, remaining)) = fixed_header(buf) else {
            return Err(End::Violation("malformed remaining length".into()));
        };
        if byte1 >> 4 != 3 {
            return Err(End::Violation(format!(
                "oversized control packet ({remaining} bytes)"
            )));
        }
        let qos = (byte1 >> 1) & 3;
        if qos == 3 {
            return Err(End::Violation("publish with QoS 3".into()));
        }
        // Topic length, topic, and the packet id for QoS 1 and 2.
        if buf.len() < header_len + 2 {
            return Ok(false);
        }
        let topic_len = usize::from(u16::from_be_bytes([buf[header_len], buf[header_len + 1]]));
        let id_end = header_len + 2 + topic_len + if qos > 0 { 2 } else { 0 };
        if id_end > header_len + remaining {
            return Err(End::Violation(
                "publish header longer than the packet".into(),
            ));
        }
        if buf.len() < id_end {
            return Ok(false);
        }
        let pkid = if qos > 0 {
            u16::from_be_bytes([buf[id_end - 2], buf[id_end - 1]])
        } else {
            0
        };
        if qos > 0 && pkid == 0 {
            return Err(End::Violation("publish with packet id 0".into()));
        }
        let topic =
            String::from_utf8_lossy(&buf[header_len + 2..header_len + 2 + topic_len]).into_owned();
        let frame = header_len + remaining;
        let have = buf.len().min(frame);
        buf.advance(have);
        self.skip = if frame > have {
            Skip::Rest(frame - have)
        } else {
            Skip::None
        };
        let n = (self.shared.metrics.decode_errors)
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let who = &self.shared.identities[self.i];
        (who.live.bad_messages).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if crate::metrics::worth_logging(n) {
            tracing::warn!(device = %who.id, topic = %topic, bytes = remaining, limit = self.shared.limits.max_packet, bad_messages = n, "Device message too large; skipped unread and acknowledged.");
        }
        self.hand_on(qos, pkid, false, who.device, None, 0).await?;
        Ok(true)
    }

    async fn handle(&mut self, p: Packet) -> Result<(), End> {
        let sh = self.shared.clone();
        let who = &sh.identities[self.i];
        // Any packet, a keep-alive ping too, is a sign of life.
        who.live.heard();
        match p {
            Packet::Publish(p) => {
                if p.dup {
                    Metrics::inc(&sh.metrics.device_redeliveries);
                }
                if p.retain {
                    sh.refuse(Some(self.i), self.peer, "retained publish (taken as plain)");
                }
                let qos = p.qos as u8;
                let (device, decoded) = if who.publishes.contains(&p.topic) {
                    decode(&sh.routes, &p.topic, &p.payload, &sh.metrics)
                } else {
                    sh.refuse(
                        Some(self.i),
                        self.peer,
                        &format!("publish on {:?}, not its topic", p.topic),
                    );
                    (who.device, None)
                };
                self.hand_on(qos, p.pkid, p.dup, device, decoded, p.payload.len())
                    .await
            }
            Packet::PubRel(r) => {
                let _ = Packet::PubComp(PubComp::new(r.pkid)).write(&mut self.out, usize::MAX);
                Ok(())
            }
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.filters.len());
                for f in &s.filters {
                    if sh.subscribe(self.i, &f.path) {
                        // Granted as asked; commands are sent at QoS 0 all the same.
                        let granted = match f.qos {
                            QoS::AtMostOnce => QoS::AtMostOnce,
                            _ => QoS::AtLeastOnce,
                        };
                        codes.push(SubscribeReasonCode::Success(granted));
                    } else {
                        sh.refuse(
                            Some(self.i),
                            self.peer,
                            &format!("subscription to {:?}, not its command topic", f.path),
                        );
                        codes.push(SubscribeReasonCode::Failure);
                    }
                }
                let _ = Packet::SubAck(SubAck::new(s.pkid, codes)).write(&mut self.out, usize::MAX);
                Ok(())
            }
            Packet::Unsubscribe(u) => {
                for t in &u.topics {
                    sh.unsubscribe(self.i, t);
                }
                let _ = Packet::UnsubAck(UnsubAck::new(u.pkid)).write(&mut self.out, usize::MAX);
                Ok(())
            }
            Packet::PingReq => {
                let _ = PingResp.write(&mut self.out);
                Ok(())
            }
            Packet::Disconnect => Err(End::Left),
            // Acks for what we send: we send QoS 0 only.
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => Ok(()),
            other => Err(End::Violation(format!("unexpected {}", kind(&other)))),
        }
    }

    /// Hands one device message to the decision loop. It takes a place in the window until the
    /// writer has made its decision durable; then a QoS 1 or 2 one is acked.
    async fn hand_on(
        &mut self,
        qos: u8,
        pkid: u16,
        dup: bool,
        device: usize,
        decoded: Option<crate::decision::Decoded>,
        bytes: usize,
    ) -> Result<(), End> {
        // Intake stopped (the daemon is stopping): not acked, so the device sends it again.
        let Some(tx) = self.input.clone() else {
            return Ok(());
        };
        // Every publish takes a place in the window, QoS 0 too (it is only not acked): a device
        // flooding at QoS 0 is read no faster than its events are decided and recorded.
        self.inflight += 1;
        self.inflight_bytes += bytes;
        let acks = self.acks_tx.clone();
        let ack: crate::store::outbox::Ack = Box::new(move || {
            // Fails only when the connection is gone: the device sends it again.
            let _ = acks.try_send(Ack { pkid, qos, bytes });
        });
        let input = Input {
            reply: None,
            device,
            decoded,
            received: Instant::now(),
            redelivered: dup,
            ack,
        };
        let mut shutdown = self.shared.shutdown.clone();
        tokio::select! {
            sent = tx.send(input) => sent.map_err(|_| End::Stopping),
            _ = shutdown.changed() => {
                // Dropped unacked: the device sends it again to the next run.
                self.input = None;
                Ok(())
            }
        }
    }
}

/// Reads more bytes into `buf`, or drops them while an oversized packet is skipped. `Ok(0)`: the
/// socket closed.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    skip: &mut Skip,
) -> std::io::Result<usize> {
    buf.reserve(8192);
    let n = stream.read_buf(buf).await?;
    if let Skip::Rest(left) = skip {
        let drop = (*left).min(buf.len());
        buf.advance(drop);
        *left -= drop;
        if *left == 0 {
            *skip = Skip::None;
        }
    }
    Ok(n)
}

/// The first byte, the fixed header's length and the remaining length, once they are in `buf`.
fn fixed_header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let mut len = 0usize;
    for (k, &b) in buf.iter().skip(1).take(4).enumerate() {
        len += usize::from(b & 0x7f) << (7 * k);
        if b & 0x80 == 0 {
            return Some((buf[0], k + 2, len));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::fixed_header;

    #[test]
    fn fixed_header_reads_the_remaining_length() {
        assert_eq!(fixed_header(&[0x30, 0x05]), Some((0x30, 2, 5)));
        assert_eq!(
            fixed_header(&[0x32, 0x80, 0x80, 0x01]),
            Some((0x32, 4, 1 << 14))
        );
        assert_eq!(fixed_header(&[0x30, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
