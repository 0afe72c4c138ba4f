//! A simulated fire alarm panel's I/O module (`modbus-fire-input`) on Modbus TCP: discrete input
//! 0 is the panel's fire contact, 8 the module's line-fault bit for it; the module can be made to
//! stop answering or answer with exceptions, and the contact to bounce.
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex};
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};

#[derive(Debug, Default)]
struct State {
    inputs: [bool; 16],
    dead: bool,
    exception: bool,
}

/// The module; clones share it.
#[derive(Debug, Clone, Default)]
pub struct FirePanel(Arc<Mutex<State>>);

impl FirePanel {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
    /// The panel's fire contact (closed = fire).
    pub fn set_fire(&self, on: bool) {
        self.with(|s| s.inputs[0] = on);
    }
    /// The module's line-fault bit (open or short circuit on the contact's line).
    pub fn set_line_fault(&self, on: bool) {
        self.with(|s| s.inputs[8] = on);
    }
    pub fn set_dead(&self, on: bool) {
        self.with(|s| s.dead = on);
    }
    pub fn set_exception(&self, on: bool) {
        self.with(|s| s.exception = on);
    }
}

impl tokio_modbus::server::Service for FirePanel {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: SlaveRequest<'static>) -> Self::Future {
        ready(self.with(|s| {
            if s.dead {
                return Ok(None);
            }
            if s.exception {
                return Err(ExceptionCode::ServerDeviceFailure);
            }
            match req.request {
                Request::ReadDiscreteInputs(addr, n) => {
                    let (addr, n) = (usize::from(addr), usize::from(n));
                    if addr + n > s.inputs.len() {
                        return Err(ExceptionCode::IllegalDataAddress);
                    }
                    Ok(Some(Response::ReadDiscreteInputs(
                        s.inputs[addr..addr + n].to_vec(),
                    )))
                }
                _ => Err(ExceptionCode::IllegalFunction),
            }
        }))
    }
}

/// Serves the module on a TCP listener until the task is dropped.
pub async fn serve_tcp(listener: tokio::net::TcpListener, panel: FirePanel) {
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let on_connected = |stream, _addr| {
        let panel = panel.clone();
        async move { Ok(Some((panel, stream))) }
    };
    let _ = server.serve(&on_connected, |_e| {}).await;
}
