//! chore: a forking, multi-backend job processor (the Rust successor of Tapjoy's Chore).
//!
//! Modules in the order a message meets them (ARCHITECTURE.md walks one through):
//!
//! * `config` — Chorefile(s) and flags resolved into one `Config` (`cli` is the flags);
//! * `queue` — the `Queue` trait and its backends (`queue::filesystem`, `queue::sqs`);
//! * `consumer` — threads that receive under flow control and check bodies;
//! * `dedupe` — duplicate deliveries caught through memcached;
//! * `batcher` — pure: when waiting messages make a batch;
//! * `master` — the loop that owns held messages (`master::pool` spawns and kills
//!   workers, `master::signals` turns signals into events);
//! * `protocol` — the master↔worker lines;
//! * `worker` — the child that runs a batch (`worker::handler` runs commands);
//! * `settle` and `backoff` — pure: what happens to a message after an attempt;
//! * `enqueue` — publishing from the command line; `logging` — tracing set-up.

pub mod backoff;
pub mod batcher;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod dedupe;
pub mod enqueue;
pub mod logging;
pub mod master;
pub mod protocol;
pub mod queue;
pub mod settle;
pub mod worker;

/// The `chore` command: parse the command line and run what it asks. Returns the exit
/// status (2 for any usage or configuration mistake, before anything starts).
pub fn run_cli() -> i32 {
    use clap::Parser;
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Some(cli::Command::Work) => worker::main(),
        Some(cli::Command::Enqueue(args)) => enqueue::run(args),
        Some(cli::Command::CheckConfig(args)) => config::check_config(args.flags),
        None => {
            let config = match config::load(cli.flags) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("chore: {e}");
                    return 2;
                }
            };
            let log = match logging::init(
                config.log_level,
                config.log_format,
                config.log_file.as_deref(),
            ) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("chore: {e}");
                    return 2;
                }
            };
            master::run(config, log)
        }
    }
}
