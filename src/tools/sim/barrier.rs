//! A simulated `modbus-relay-barrier`, served over Modbus TCP (tokio-modbus server) or RTU on a
//! pty, several on one line. Simple physics: a coil pulse starts the arm, which takes `travel`
//! to move; loops go occupied and clear as simulated cars pass. It counts every CLOSE that came
//! while a vehicle was on the safety loop — what the interlock must never do.
use std::collections::HashMap;
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};

#[derive(Debug)]
struct State {
    /// 0.0 down … 1.0 up, at `since`.
    position: f64,
    /// +1 up, -1 down, 0 still.
    direction: f64,
    since: Instant,
    travel: Duration,
    safety_loop: bool,
    arming_loop: bool,
    /// Answers nothing (a dead slave).
    dead: bool,
    /// Answers every read with an exception.
    exception: bool,
    /// Answers input reads with no bits at all (a controller whose firmware answers short).
    short: bool,
    /// Coils switched on and not yet off again.
    held: std::collections::BTreeSet<u16>,
    /// Ignores commands (a jammed arm).
    jammed: bool,
    /// Comes down on its own this long after reaching the top (a controller's own timer).
    auto_fall: Option<Duration>,
    up_since: Option<Instant>,
    fault: u16,
    opens: u32,
    closes: u32,
    closes_onto_vehicle: u32,
    /// When each input read and each coil switched on arrived (for the benchmark), bounded.
    reads: Vec<Instant>,
    coils_on: Vec<Instant>,
}

/// The logs keep this many entries; older ones are dropped.
const LOG_MAX: usize = 100_000;

fn log(v: &mut Vec<Instant>) {
    if v.len() == LOG_MAX {
        v.drain(..LOG_MAX / 2);
    }
    v.push(Instant::now());
}

impl State {
    fn now_position(&mut self) -> f64 {
        let now = Instant::now();
        let dt = now.duration_since(self.since).as_secs_f64() / self.travel.as_secs_f64();
        self.position = (self.position + self.direction * dt).clamp(0.0, 1.0);
        if self.position <= 0.0 || self.position >= 1.0 {
            self.direction = 0.0;
        }
        self.since = now;
        if self.position >= 1.0 {
            let up = *self.up_since.get_or_insert(now);
            if self.auto_fall.is_some_and(|d| now.duration_since(up) >= d) {
                self.direction = -1.0;
                self.up_since = None;
            }
        } else {
            self.up_since = None;
        }
        self.position
    }
}

/// One simulated barrier; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct BarrierSim(Arc<Mutex<State>>);

impl BarrierSim {
    /// A barrier with its arm down, taking `travel` to move.
    pub fn new(travel: Duration) -> BarrierSim {
        BarrierSim(Arc::new(Mutex::new(State {
            position: 0.0,
            direction: 0.0,
            since: Instant::now(),
            travel,
            safety_loop: false,
            arming_loop: false,
            dead: false,
            exception: false,
            short: false,
            held: Default::default(),
            jammed: false,
            auto_fall: None,
            up_since: None,
            fault: 0,
            opens: 0,
            closes: 0,
            closes_onto_vehicle: 0,
            reads: Vec::new(),
            coils_on: Vec::new(),
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set_dead(&self, dead: bool) {
        self.with(|s| s.dead = dead);
    }
    pub fn set_exception(&self, on: bool) {
        self.with(|s| s.exception = on);
    }
    /// Input reads are answered with no bits (byte count 0): never "all clear".
    pub fn set_short_answers(&self, on: bool) {
        self.with(|s| s.short = on);
    }
    pub fn set_jammed(&self, on: bool) {
        self.with(|s| s.jammed = on);
    }
    /// The arm comes down by itself this long after it reached the top.
    pub fn set_auto_fall(&self, after: Option<Duration>) {
        self.with(|s| s.auto_fall = after);
    }
    pub fn set_fault(&self, code: u16) {
        self.with(|s| s.fault = code);
    }
    pub fn set_safety_loop(&self, on: bool) {
        self.with(|s| s.safety_loop = on);
    }
    pub fn set_arming_loop(&self, on: bool) {
        self.with(|s| s.arming_loop = on);
    }
    pub fn is_up(&self) -> bool {
        self.with(|s| s.now_position() >= 1.0)
    }
    pub fn is_down(&self) -> bool {
        self.with(|s| s.now_position() <= 0.0)
    }
    /// When the input reads and the coil switch-ons arrived, and clears both logs.
    pub fn take_logs(&self) -> (Vec<Instant>, Vec<Instant>) {
        self.with(|s| {
            (
                std::mem::take(&mut s.reads),
                std::mem::take(&mut s.coils_on),
            )
        })
    }

    /// The coils on now (a pulse not released yet, or one never released).
    pub fn coils_held(&self) -> Vec<u16> {
        self.with(|s| s.held.iter().copied().collect())
    }

    /// (opens, closes, closes while a vehicle was on the safety loop).
    pub fn counts(&self) -> (u32, u32, u32) {
        self.with(|s| (s.opens, s.closes, s.closes_onto_vehicle))
    }

    /// A car drives through: onto the arming loop, waits for the arm (at most `patience`), over
    /// the safety loop, away. Returns whether it got through.
    pub async fn car_passes(&self, patience: Duration) -> bool {
        self.set_arming_loop(true);
        let start = Instant::now();
        while !self.is_up() {
            if start.elapsed() > patience {
                self.set_arming_loop(false);
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.set_arming_loop(false);
        self.set_safety_loop(true);
        tokio::time::sleep(Duration::from_millis(600)).await;
        self.set_safety_loop(false);
        true
    }

    fn answer(&self, req: &Request<'_>) -> Option<Result<Response, ExceptionCode>> {
        self.with(|s| {
            if s.dead {
                return None;
            }
            Some(match req {
                Request::ReadDiscreteInputs(addr, n) => {
                    if s.exception {
                        return Some(Err(ExceptionCode::ServerDeviceFailure));
                    }
                    log(&mut s.reads);
                    if s.short {
                        return Some(Ok(Response::ReadDiscreteInputs(Vec::new())));
                    }
                    let p = s.now_position();
                    let bits = [p >= 1.0, p <= 0.0, s.safety_loop, s.arming_loop];
                    let out = (*addr..addr.saturating_add(*n))
                        .map(|a| bits.get(usize::from(a)).copied().unwrap_or(false))
                        .collect();
                    Ok(Response::ReadDiscreteInputs(out))
                }
                Request::ReadHoldingRegisters(0, 1) => {
                    Ok(Response::ReadHoldingRegisters(vec![s.fault]))
                }
                Request::WriteSingleCoil(coil, on) => {
                    if *on {
                        s.held.insert(*coil);
                    } else {
                        s.held.remove(coil);
                    }
                    if *on {
                        log(&mut s.coils_on);
                        s.now_position();
                        // A jammed arm accepts the command and does not move.
                        let moves = if s.jammed { 0.0 } else { 1.0 };
                        match coil {
                            0 => {
                                s.opens += 1;
                                s.direction = moves;
                            }
                            1 => {
                                s.closes += 1;
                                if s.safety_loop {
                                    s.closes_onto_vehicle += 1;
                                }
                                s.direction = -moves;
                            }
                            _ => s.direction = 0.0,
                        }
                    }
                    Ok(Response::WriteSingleCoil(*coil, *on))
                }
                _ => Err(ExceptionCode::IllegalFunction),
            })
        })
    }
}

/// Serves barriers by unit id (one for Modbus TCP, several on an RTU line). An absent or dead
/// unit does not answer at all.
#[derive(Debug, Clone, Default)]
pub struct Service(pub HashMap<u8, BarrierSim>);

impl tokio_modbus::server::Service for Service {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: SlaveRequest<'static>) -> Self::Future {
        let answer = self.0.get(&req.slave).and_then(|b| b.answer(&req.request));
        ready(match answer {
            None => Ok(None),
            Some(Ok(r)) => Ok(Some(r)),
            Some(Err(e)) => Err(e),
        })
    }
}

/// Serves `service` on a TCP listener until the task is dropped.
pub async fn serve_tcp(listener: tokio::net::TcpListener, service: Service) {
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let on_connected = |stream, _addr| {
        let service = service.clone();
        async move { Ok(Some((service, stream))) }
    };
    let _ = server.serve(&on_connected, |_e| {}).await;
}

/// Serves `service` as RTU slaves on the simulator's end of a pty.
pub async fn serve_rtu(pty: crate::tools::sim::serial::Pty, service: Service) {
    let crate::tools::sim::serial::Pty { master, _slave, .. } = pty;
    let server = tokio_modbus::server::rtu::Server::new(master);
    let _keep = _slave;
    let _ = server.serve_forever(service).await;
}
