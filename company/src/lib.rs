//! The property company's side of gatehouse: what runs at the company, never at a gate. Today its
//! command line (`gatehouse-company`): signing keys, signed orders with the lists, `tail`; and
//! the broker it embeds for the demo and the tests. The ingest into the database and the daily
//! forms, with their web pages, come here next. It shares only the wire contract
//! (`gatehouse-contract`) with the gate box, and the box links nothing of it.
pub mod broker;
pub mod cli;
pub mod lists;
pub mod tail;
