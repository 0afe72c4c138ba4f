//! The property company's side of gatehouse: what runs at the company, never at a gate — its
//! command line (`gatehouse-company`: signing keys, signed orders with the lists, `tail`), the
//! ingest of every gateway's records into a database (`ingest`, `db`), the daily forms the
//! community workers used to fill in by hand (`forms`), and the broker it embeds for the demo and
//! the tests. It shares only the wire contract (`gatehouse-contract`) with the gate box, and the
//! box links nothing of it.
pub mod broker;
pub mod cli;
pub mod config;
pub mod connect;
pub mod db;
pub mod fleet;
pub mod forms;
pub mod ingest;
pub mod lists;
pub mod records_cli;
pub mod tail;
pub mod web;

#[cfg(test)]
mod tests;
