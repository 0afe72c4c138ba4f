//! How each vendor model speaks: device profiles (one TOML file per model in `devices/`), the
//! declarative serial frame codec and the Modbus register map. Transports (`sources/`) use them
//! to turn bytes into the decision core's observations and gate commands into bytes; a new model
//! of a known kind is a new profile file, not new code.
pub mod codec;
pub mod frame;
pub mod modbus_map;
pub mod pointer;
pub mod profile;
pub mod xml;

pub use codec::{CommandArgs, DecodeError};
pub use modbus_map::ModbusSpec;
pub use profile::{GateCommandName, Profile, Profiles, Transport, Unit, MAX_PAYLOAD};

#[cfg(test)]
mod tests;
