//! Integration tests: the real `chore` binary on temporary filesystem queues.
//!
//! Each test gets its own directory (`harness::Sandbox`) with a Chorefile, handler scripts
//! and queues, runs `chore` as a child process, and watches files and the log. Services
//! that later issues need (memcached, moto_server) are started by `services`.

mod batching;
mod config_errors;
mod crash;
mod dedupe;
mod enqueue;
mod handlers;
mod harness;
mod processing;
mod retries;
mod review;
mod routing;
mod ruby_compat;
mod services;
mod signals;
mod sqs;
