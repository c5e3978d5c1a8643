//! Integration tests: the real `chore` binary on temporary filesystem queues, and on SQS
//! (moto) and memcached where a test needs them.
//!
//! Each test gets its own directory (`harness::Sandbox`) with a Chorefile, handler scripts
//! and queues, runs `chore` as a child process, and watches files and the log. The
//! services (memcached, moto_server), waiting, and `/proc` helpers are in `tests/support`,
//! shared with the throughput bench.

mod admin;
mod batching;
mod chaos;
mod check_config;
mod clock;
mod config_errors;
mod crash;
mod dedupe;
mod enqueue;
mod faults;
mod files;
mod handlers;
mod harness;
mod http;
mod memory;
mod observe;
mod packaging;
mod poison;
mod preload;
mod processing;
mod retries;
mod review;
mod robustness;
mod routing;
mod ruby_compat;
mod secrets;
mod signals;
mod spawner;
mod sqs;
mod steer;
// Shared with benches/throughput.rs; each uses a part of it.
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;
