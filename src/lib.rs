//! chore: a forking, multi-backend job processor (the Rust successor of Tapjoy's Chore).
//!
//! The library behind the `chore` binary: its API is `run_cli`, `run_worker` and
//! `FilesystemQueue` (publishing from Rust); everything else is private. ARCHITECTURE.md
//! maps the modules (bottom-up: each uses only those before it, as the `layering` test
//! checks) and walks one message through them:
//!
//! * `backoff` — pure: the delay after attempt N; `calendar` — pure: UTC dates;
//!   `title` — process titles, as Ruby Chore writes them;
//! * `config` — the option table, the command line, Chorefiles, one validated `Config`;
//! * `logging` — tracing set-up; `protocol` — the master↔worker lines; `secrets` — the
//!   AWS credentials, read once and hidden from the environment;
//! * `queue` — the `Queue` trait, `queue::open`, the backends;
//! * `dedupe` — duplicate deliveries caught through memcached;
//! * `launch` and `hooks` — starting users' programs; `on-permanent-failure` commands;
//! * `settle` — what an attempt means for a message, and the one place it is carried out;
//! * `poster` — HTTP handlers: the SQS daemon's POST; `periodic` — `cron.yaml` tasks;
//! * `consumer` — threads that receive under the credit gate and check bodies;
//! * `batcher` — pure: when waiting messages make a batch; `spawner` — forks workers;
//! * `observe` — metrics, the liveness rule, systemd notifications; `control` — the
//!   control socket and `chore status`;
//! * `master` — the loop that owns held messages, the worker pool, signals, start-up;
//! * `worker` — the child that runs a batch; `enqueue` — publishing from the command line;
//! * `admin` — `chore queue`: operators' verbs (stats, peek, dump, load, requeue, purge, …).
//! * `unit` — `chore systemd-unit`; `generate` — man pages and completions, for packagers.

mod admin;
mod backoff;
mod batcher;
mod calendar;
mod config;
mod consumer;
mod control;
mod dedupe;
mod enqueue;
mod generate;
mod hooks;
mod launch;
mod logging;
mod master;
mod observe;
mod periodic;
mod poster;
mod protocol;
mod queue;
mod secrets;
mod settle;
mod spawner;
mod title;
mod unit;
mod worker;

/// Publishing to a filesystem queue from Rust, in Ruby Chore's file format.
pub use queue::filesystem::FilesystemQueue;

/// `chore work`: run one batch as a worker child of the master. Returns the exit status.
pub fn run_worker() -> i32 {
    worker::main()
}

/// The `chore` command: parse the command line and run what it asks. Returns the exit
/// status (2 for any usage or configuration mistake, before anything starts).
pub fn run_cli() -> i32 {
    use clap::Parser;
    let cli = match config::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Some(config::cli::Command::Work) => worker::main(),
        Some(config::cli::Command::Enqueue(args)) => enqueue::run(args),
        Some(config::cli::Command::CheckConfig(args)) => config::check_config(args.flags),
        Some(config::cli::Command::Queue(args)) => admin::run(args),
        Some(config::cli::Command::Status(args)) => match config::load_or_say(args.flags.0) {
            Some(c) => control::client::run(&c.control_path(), args.json),
            None => 2,
        },
        Some(config::cli::Command::SystemdUnit(args)) => unit::run(args),
        Some(config::cli::Command::Generate(what)) => generate::run(what),
        None => {
            // Before anything is read or printed: the title comes by executing this binary
            // again, which then does all of this once.
            title::become_master();
            let flags = cli.flags.clone();
            let Some(config) = config::load_or_say(cli.flags) else {
                return 2;
            };
            let log = match logging::init_with(
                config.log_level,
                config.log_settlements,
                config.log_format,
                config.log_file.as_deref(),
            ) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("chore: {e}");
                    return 2;
                }
            };
            master::run(config, log, flags)
        }
    }
}
#[cfg(test)]
mod layering {
    //! ARCHITECTURE.md's module map, kept true: a module uses only modules listed before
    //! it. Read from the sources, outside their own unit tests.

    /// The module map's first column, bottom-up: read from ARCHITECTURE.md itself, so the
    /// page and this test cannot disagree.
    fn order() -> Vec<String> {
        let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md");
        let page = std::fs::read_to_string(page).unwrap();
        let map = page.split("## Module map").nth(1).unwrap();
        let map = map.split("\n## ").next().unwrap();
        let order: Vec<String> = map
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(|m| m.trim_end_matches('/').to_string())
            .collect();
        assert!(order.len() > 20, "the module map was not found: {order:?}");
        order
    }

    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The top-level modules `code` names after `crate::`, in paths and in `use crate::{…}`.
    fn uses(code: &str) -> Vec<String> {
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        };
        let mut out = Vec::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + 7..];
            match rest.strip_prefix('{') {
                // Each item of the group, at its top level.
                Some(group) => {
                    let mut depth = 0;
                    let mut start = 0;
                    for (j, c) in group.char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' if depth == 0 => {
                                out.push(ident(&group[start..j]));
                                break;
                            }
                            '}' => depth -= 1,
                            ',' if depth == 0 => {
                                out.push(ident(&group[start..j]));
                                start = j + 1;
                            }
                            _ => {}
                        }
                    }
                }
                None => out.push(ident(rest)),
            }
        }
        out
    }

    #[test]
    fn the_scan_sees_paths_and_groups() {
        let code = "use crate::a::B;\nuse crate::{c::{D, E}, f};\nlet x = crate::g::h();";
        assert_eq!(uses(code), ["a", "c", "f", "g"]);
    }

    #[test]
    fn no_module_uses_one_listed_after_it() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let order = order();
        let rank = |m: &str| order.iter().position(|o| o == m);
        let mut wrong = Vec::new();
        for file in files {
            let rel = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let module = rel.split(['/', '.']).next().unwrap().to_string();
            let Some(own) = rank(&module) else {
                assert!(
                    ["lib", "main"].contains(&module.as_str()),
                    "{rel} is not in ARCHITECTURE.md's module map"
                );
                continue;
            };
            let text = std::fs::read_to_string(&file).unwrap();
            // Unit tests may reach anywhere.
            let code = text.split("#[cfg(test)]").next().unwrap();
            if rel.ends_with("tests.rs") {
                continue;
            }
            for used in uses(code) {
                if rank(&used).is_some_and(|r| r > own) {
                    wrong.push(format!("{rel} uses crate::{used}"));
                }
            }
        }
        wrong.sort();
        wrong.dedup();
        assert!(
            wrong.is_empty(),
            "modules used above their layer:\n{}",
            wrong.join("\n")
        );
    }
}
