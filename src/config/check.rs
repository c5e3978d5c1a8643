//! `chore check-config`: say no wherever the master would refuse to start, and where every
//! message of a queue would fail; otherwise print everything resolved.
//!
//! The configuration is loaded exactly as the master loads it (so every value the master
//! refuses is refused here, with the same line). Then what only the machine can tell is
//! looked at, without changing anything (`probe`): that there is a queue to consume, that
//! the queue directories and the log file can be written by this user, that each queue's
//! `config/timeout` reads, that every handler program can be started, found the way its
//! worker will find it, and that the master can listen where it is to (its control socket
//! and `metrics-listen`: bound and closed at once, or, where a master already answers,
//! noted in the printout). Each mistake is one line, `chore: FILE:LINE: key `KEY`: …`, and the
//! status is 2; nothing goes to standard output then. An SQS queue is not looked up: its
//! existence and credentials are checked when the master starts.

use super::chorefile::QueueTable;
use super::error::{ConfigError, ConfigErrors, Origin};
use super::{Backend, Config, Handler, Loaded, QueueConfig, load_traced, printout, probe, suggest};
use crate::config::cli::{EnqueueArgs, Flags};
use std::ffi::OsStr;
use std::io::Write;

/// Run `chore check-config`; returns the exit status.
pub fn check_config(flags: Flags) -> i32 {
    let loaded = match load_traced(flags) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("chore: {e}");
            return 2;
        }
    };
    let path_var = std::env::var_os("PATH");
    let mut errors = environment(&loaded, path_var.as_deref());
    let (wrong, notes) = listeners(&loaded);
    errors.extend(wrong);
    if !errors.is_empty() {
        let files = &loaded.config.files;
        eprintln!("chore: {}", ConfigErrors::in_order(errors, files));
        return 2;
    }
    // `chore check-config | head`: a reader that goes away ends the printout, not in a panic.
    let mut out = std::io::stdout().lock();
    for line in printout::lines(&loaded, path_var.as_deref())
        .into_iter()
        .chain(notes)
    {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    0
}

/// Where option `key` came from.
fn origin(l: &Loaded, key: &str) -> Origin {
    l.settings
        .get(key)
        .map_or(Origin::Default, |s| s.origin.clone())
}

/// What the machine says about a configuration that resolved.
fn environment(l: &Loaded, path_var: Option<&OsStr>) -> Vec<ConfigError> {
    let c = &l.config;
    let mut errors = Vec::new();
    if c.selected.is_empty() {
        let (key, why) = match (c.declared.is_empty(), l.settings.contains_key("queues")) {
            (true, _) => ("queues", "declare [queues.NAME] tables in the Chorefile"),
            (false, true) => ("queues", "--queues names none of them"),
            (false, false) => (
                "except-queues",
                "--except-queues excludes every declared queue",
            ),
        };
        let message = format!("no queues to consume: {why}");
        errors.push(ConfigError::at(&origin(l, key), key, message));
    }
    if let Some(file) = &c.log_file
        && let Err(m) = probe::writable_file(file)
    {
        errors.push(ConfigError::at(&origin(l, "log-file"), "log-file", m));
    }
    let tables = l.tables_by_name();
    for q in c.selected_queues() {
        let table = tables.get(q.name.as_str()).copied();
        if q.backend == Backend::Filesystem {
            errors.extend(queue_directory(l, q, table));
        }
        for (key, o, h) in commands(q, table) {
            if let Err(m) = probe::program(h, path_var) {
                errors.push(ConfigError::at(&o, format!("queues.{}.{key}", q.name), m));
            }
        }
    }
    errors
}

/// What the master will find where it listens: its control socket (one named by
/// `control-socket` must bind, the default one only warns) and `metrics-listen`. A master
/// answering on the socket now is not a mistake (the check may be for its reload); it is
/// a note in the printout, and so is a metrics address in use by a chore master (its page
/// says so: under systemd the master's socket is in its `RuntimeDirectory`, which an
/// operator's shell does not name). Returns the mistakes and the notes.
fn listeners(l: &Loaded) -> (Vec<ConfigError>, Vec<String>) {
    let c = &l.config;
    let (mut errors, mut notes) = (Vec::new(), Vec::new());
    let path = c.control_path();
    let explicit = c.control_socket.is_some();
    let running = match probe::control_socket(&path, !explicit) {
        Ok(probe::Socket::Free) => false,
        Ok(probe::Socket::Answered) => {
            notes.push(format!(
                "# control-socket {}: a master answers on it now (or it is another user's socket); a second master with this configuration {}",
                path.display(),
                match explicit {
                    true => "would not start",
                    false => "would start without one (`chore status` would not reach it)",
                }
            ));
            true
        }
        Err(m) if explicit => {
            errors.push(ConfigError::at(
                &origin(l, "control-socket"),
                "control-socket",
                m,
            ));
            false
        }
        Err(m) => {
            notes.push(format!(
                "# control-socket (default): {m}; the master would start without one (`chore status` would not reach it; set control-socket)"
            ));
            false
        }
    };
    if let Some(addr) = c.metrics_listen
        && let Err(e) = probe::listenable(addr)
    {
        let in_use = e.kind() == std::io::ErrorKind::AddrInUse;
        if in_use && probe::serves_chore_metrics(addr) {
            notes.push(format!(
                "# metrics-listen {addr}: in use now, by a running chore master (it serves chore's metrics there)"
            ));
        } else if in_use && running {
            notes.push(format!(
                "# metrics-listen {addr}: in use now, by the running master most likely"
            ));
        } else {
            errors.push(ConfigError::at(
                &origin(l, "metrics-listen"),
                "metrics-listen",
                format!("cannot listen on {addr}: {e}"),
            ));
        }
    }
    (errors, notes)
}

/// What the master will find when it opens a filesystem queue's directory.
fn queue_directory(l: &Loaded, q: &QueueConfig, table: Option<&QueueTable>) -> Vec<ConfigError> {
    let c = &l.config;
    let root = std::path::absolute(&c.fs_queue_root).unwrap_or_else(|_| c.fs_queue_root.clone());
    let dir = root.join(&q.full_name);
    let mut errors = Vec::new();
    // The master creates and must write these three at start.
    let unwritable = ["new", "inprogress", "dead"]
        .iter()
        .find_map(|sub| probe::writable_dir(&dir.join(sub)).err());
    if let Some(m) = unwritable {
        let message = format!("queue `{}`: {m}", q.name);
        errors.push(ConfigError::at(
            &origin(l, "fs-queue-root"),
            "fs-queue-root",
            message,
        ));
    }
    if let Err(m) = probe::config_timeout(&dir) {
        let table_origin = table.map_or(Origin::Default, |t| t.origin.clone());
        errors.push(ConfigError::at(
            &table_origin,
            format!("queues.{}", q.name),
            m,
        ));
    }
    errors
}

/// Every command a queue runs, with the key (under `queues.NAME.`) and the place it was
/// written: `handler`, each `classes.CLASS`, `on-permanent-failure`.
pub(super) fn commands<'a>(
    q: &'a QueueConfig,
    table: Option<&QueueTable>,
) -> Vec<(String, Origin, &'a Handler)> {
    let raw = |key: &str| table.and_then(|t| t.keys.get(key));
    let at = |key: &str| raw(key).map_or(Origin::Default, |k| k.origin.clone());
    let mut out = Vec::new();
    if let Some(h) = &q.handler {
        out.push(("handler".to_string(), at("handler"), h));
    }
    for (class, h) in &q.classes {
        let o = raw("classes").map_or(Origin::Default, |k| {
            k.inner.get(class).unwrap_or(&k.origin).clone()
        });
        out.push((format!("classes.{class}"), o, h));
    }
    if let Some(h) = &q.on_permanent_failure {
        out.push((
            "on-permanent-failure".to_string(),
            at("on-permanent-failure"),
            h,
        ));
    }
    out
}

/// `chore enqueue QUEUE` with a Chorefile that does not declare QUEUE is most likely a typo
/// that would publish where nobody consumes: the reason why, unless `--force` is given or
/// no Chorefile is (a producer needs none).
pub fn undeclared_queue(config: &Config, args: &EnqueueArgs) -> Option<String> {
    if args.force || args.flags.config_file.is_empty() {
        return None;
    }
    if config.queue(&args.queue).is_some() {
        return None;
    }
    let names: Vec<&str> = config.declared.iter().map(|q| q.name.as_str()).collect();
    let files: Vec<String> = config
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    Some(format!(
        "queue `{}` is not declared in {}{} (declared: {}); give --force to publish to it anyway",
        args.queue,
        files.join(", "),
        suggest::hint(&args.queue, names.iter().copied()),
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        },
    ))
}
