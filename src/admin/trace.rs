//! `chore queue trace ID [-q QUEUE…] [--log FILE]`: where message ID is now, and what the
//! log says happened to it.
//!
//! Filesystem: the id is the published file's base name, so its file is found in `new/`
//! (waiting), `inprogress/` (held by a master, or waiting out a retry's delay: the claim's
//! name says until when, not which master) or `dead/` (with its `.reason`); nowhere means
//! it completed or never was there. Which worker runs it is in the log: the last `worker
//! started` line naming it gives the worker's pid, whose parent is the master. SQS cannot
//! find a message by id without receiving the whole queue, so there the log is the answer.
//! Log lines are found by the id, in the text, ruby or JSON format (the ruby format's
//! fields are the text format's).

use super::place::{self, Place};
use super::stats::age;
use super::{Ctx, Fail, Outcome, fs};
use std::io::{BufRead, Write};
use std::path::Path;

pub fn run(ctx: &mut Ctx, id: &str, queues: &[String], log: Option<&Path>) -> Outcome {
    if id.is_empty() || id.contains('/') {
        return Err(Fail::Usage(format!("`{id}` is not a message id")));
    }
    let names: Vec<String> = if queues.is_empty() {
        ctx.config.declared.iter().map(|q| q.name.clone()).collect()
    } else {
        queues.to_vec()
    };
    if names.is_empty() && log.is_none() {
        return Err(Fail::Usage(
            "nowhere to look: give -q QUEUE, a Chorefile (-c) or --log FILE".into(),
        ));
    }
    let now = super::now();
    let mut out = std::io::stdout().lock();
    let mut found = false;
    let mut looked = Vec::new();
    for name in &names {
        let p = match place::resolve(ctx, name) {
            Ok(p) => p,
            // A declared queue that was never created holds nothing.
            Err(Fail::Usage(_)) if queues.is_empty() => continue,
            Err(e) => return Err(e),
        };
        let f = match p {
            Place::Fs(f) => f,
            Place::Sqs(s) => {
                let _ = writeln!(
                    out,
                    "{}: SQS cannot find a message by id without receiving the whole queue; see the log (--log)",
                    s.url
                );
                continue;
            }
        };
        looked.push(f.dir.display().to_string());
        for sub in ["new", "inprogress", "dead"] {
            let entries = fs::list(&f, sub, now).map_err(|e| Fail::Failed(e.to_string()))?;
            for e in entries.iter().filter(|e| e.id == id) {
                found = true;
                let _ = writeln!(out, "{}", describe(&f.dir, e, now));
            }
        }
    }
    if !found && !looked.is_empty() {
        let _ = writeln!(
            out,
            "{id}: not in {} (completed, or never published there)",
            looked.join(", ")
        );
    }
    if let Some(path) = log {
        history(path, id, &mut out)?;
    }
    Ok(())
}

fn describe(dir: &Path, e: &fs::Entry, now: i64) -> String {
    let sub = match e.state {
        fs::State::New => "new",
        fs::State::Claimed { .. } => "inprogress",
        fs::State::Dead => "dead",
    };
    let at = format!("{}/{sub}/{}", dir.display(), e.name);
    let sent = format!(
        "sent {} ({} ago)",
        utc(e.sent_at),
        age((now - e.sent_at).max(0))
    );
    match e.state {
        fs::State::New => format!(
            "{}: waiting, {} attempt(s) made, {sent}\n  {at}",
            e.id, e.attempts
        ),
        fs::State::Claimed { until, .. } if until <= now => format!(
            "{}: claimed for attempt {}, but the claim lapsed at {} (its master is gone): the next consumer offers it again; {sent}\n  {at}",
            e.id,
            e.attempts,
            utc(until)
        ),
        fs::State::Claimed { until, held: true } => format!(
            "{}: in progress, attempt {}, held by a master that renews its claim (if it stops, the message is offered again at {}); {sent}\n  {at}",
            e.id,
            e.attempts,
            utc(until)
        ),
        fs::State::Claimed { until, held: false } => format!(
            "{}: delayed: attempt {} failed, offered again at {} (in {}); {sent}\n  {at}",
            e.id,
            e.attempts,
            utc(until),
            age((until - now).max(0))
        ),
        fs::State::Dead => format!(
            "{}: dead after {} attempt(s): {}; {sent}\n  {at}",
            e.id,
            e.attempts,
            fs::reason(e).unwrap_or_else(|| "no .reason note".into())
        ),
    }
}

/// Every log line naming `id`, the JSON ones rendered as text; then who runs it now.
fn history(path: &Path, id: &str, out: &mut impl Write) -> Outcome {
    let file = std::fs::File::open(path)
        .map_err(|e| Fail::Usage(format!("{}: cannot read: {e}", path.display())))?;
    let _ = writeln!(out, "history in {}:", path.display());
    let mut worker = None;
    let mut lines = 0;
    // Lines are read as bytes: what a hook wrote into the log need not be UTF-8, and
    // must not end the history there.
    for raw in std::io::BufReader::new(file).split(b'\n') {
        let raw = raw.map_err(|e| Fail::Failed(format!("{}: {e}", path.display())))?;
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches('\r');
        if !line.contains(id) {
            continue;
        }
        lines += 1;
        let (text, pid) = render(line);
        if line.contains("worker started") {
            worker = pid;
        } else if line.contains("dead-lettered") || line.contains("completed") {
            worker = None;
        }
        let _ = writeln!(out, "  {text}");
    }
    if lines == 0 {
        let _ = writeln!(out, "  (no line names it)");
    }
    if let Some(pid) = worker
        && let Some(master) = parent_of(pid)
    {
        let _ = writeln!(
            out,
            "last started in worker pid {pid}, which is running (master pid {master})"
        );
    }
    Ok(())
}

/// A log line as text, and the `pid` it names. JSON lines (`log-format = "json"`) become
/// `timestamp LEVEL message key=value…`.
fn render(line: &str) -> (String, Option<u32>) {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(line) {
        let get = |k: &str| map.get(k).map(plain).unwrap_or_default();
        let mut text = format!("{} {} {}", get("timestamp"), get("level"), get("message"));
        for (k, v) in &map {
            if !["timestamp", "level", "message"].contains(&k.as_str()) {
                text.push_str(&format!(" {k}={}", plain(v)));
            }
        }
        let pid = map.get("pid").and_then(|v| v.as_u64()).map(|p| p as u32);
        return (text, pid);
    }
    let pid = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok());
    (line.to_string(), pid)
}

fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The parent of a running process, from `/proc/PID/stat` (None when it has ended).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command in parentheses: state, then the parent pid.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(secs: i64) -> String {
    let (y, m, d) = crate::calendar::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_lines_render_with_their_pid() {
        let (t, pid) = render("2026-11-29T20:00:00Z  INFO worker started pid=42 queue=q ids=a,b");
        assert!(t.contains("worker started"));
        assert_eq!(pid, Some(42));
        let (t, pid) = render(
            r#"{"timestamp":"2026-11-29T20:00:00Z","level":"INFO","message":"worker started","pid":7,"ids":"a"}"#,
        );
        assert_eq!(t, "2026-11-29T20:00:00Z INFO worker started ids=a pid=7");
        assert_eq!(pid, Some(7));
    }

    #[test]
    fn utc_is_the_civil_date() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_971_600), "2026-11-29 17:00:00 UTC");
    }
}
