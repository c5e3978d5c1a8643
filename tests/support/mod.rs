//! Support code shared by the integration tests (`tests/integration`) and the throughput
//! bench (`benches/throughput.rs`, which includes this directory with `#[path]`).
//!
//! - `poll`: waiting for a condition with a deadline, and holding one for a while;
//! - `procs`: what `/proc` says about chore's processes and threads;
//! - `service`: a server program (memcached, moto) on a loopback port;
//! - `memcached`: memcached started that way, and a text-protocol client;
//! - `moto`: moto (an SQS emulator) started that way, and a small SQS client;
//! - `http`: the bare HTTP/1.1 exchange the SQS client speaks.
//! - `app`: the HTTP test application (`http_app.py`) and what it received;
//!
//! Nothing here knows about test sandboxes or the bench's scratch directories: those stay
//! with their users (`tests/integration/harness.rs`, the bench itself).

pub mod app;
pub mod http;
pub mod memcached;
pub mod moto;
pub mod poll;
pub mod procs;
pub mod service;
