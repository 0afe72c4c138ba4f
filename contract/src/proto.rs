//! The uplink's protobuf types, generated from `proto/gatehouse/v1/*.proto` at build time.
#![allow(clippy::all)]

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/gatehouse.v1.rs"));
}

#[cfg(test)]
mod golden;
