//! The wire contract between a gate box and the property company's side: what both build and
//! parse, so neither side can drift from the other. The box links this crate; so does the
//! company's service; neither links the other.
//!
//! - `proto`: the protobuf schema (`proto/gatehouse/v1/*.proto`), compiled at build time;
//! - `topics`: the topic tree, built and parsed as one type;
//! - `orders`: signed orders and every check a gateway makes on them (signing: feature `sign`);
//! - `lists`: the list files (residents, households, plates, passes) and their sync entries;
//! - `mqtt`: how either side reaches a broker;
//! - `hex`, `timefmt`: the text forms keys and times take in those files.
pub mod hex;
pub mod lists;
pub mod mqtt;
pub mod orders;
pub mod proto;
pub mod timefmt;
pub mod topics;
