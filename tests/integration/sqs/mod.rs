//! SQS queues: the real `chore` binary against moto (an SQS emulator) on loopback.
//!
//! Each test starts its own moto (about half a second), so no test sees another's queues,
//! calls or recordings, and one can stop and restart its emulator. The tests use
//! `support::moto`'s client to create queues with the attributes they need, to publish as
//! another producer would, and to look at what is left in a queue afterwards.
//!
//! Assertions hold on real SQS too: moto's receive takes no lock, so two receivers on one
//! queue may now and then get the same message, as SQS's at-least-once delivery allows;
//! "exactly once" is only asserted where a single consumer thread receives.
//!
//! The tests are grouped by what they exercise: `delivery`, `failures`, `metadata`,
//! `outages`.

mod delivery;
mod failures;
mod metadata;
mod outages;

use crate::harness::*;
use crate::support::moto::{AWS_ENV, Moto};

/// Write the Chorefile: the endpoint of `moto`, then `text`.
fn sqs_chorefile(sb: &Sandbox, moto: &Moto, text: &str) {
    sb.chorefile(&format!("sqs-endpoint = {:?}\n{text}", moto.endpoint()));
}

/// Start the master with the AWS variables.
fn start(sb: &Sandbox) -> Master {
    sb.start_with_env("master", &[], &AWS_ENV)
}

/// `chore ARGS` with the AWS variables (and `stdin`).
fn chore(sb: &Sandbox, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    sb.run_with_env(args, stdin, &AWS_ENV)
}

/// `chore enqueue -c Chorefile ARGS…` with the AWS variables, which must succeed: the
/// ids it printed.
fn enqueue(sb: &Sandbox, args: &[&str], stdin: Option<&str>) -> Vec<String> {
    sb.enqueue_lines(args, stdin, &AWS_ENV)
}

/// Wait until the queue holds nothing: no visible, in-flight or delayed messages.
fn wait_empty(master: &Master, moto: &Moto, url: &str) {
    master.wait("the SQS queue to be empty", || moto.is_empty(url));
}
