//! `chore queue stats [QUEUE…]`: per queue, how many messages wait, are held, are delayed
//! and are dead, and how old the oldest waiting one is; `--json` for scripts, `--watch` to
//! refresh. Filesystem counts come from the directories (nothing is opened); SQS counts
//! are SQS's approximate ones, and SQS does not tell the oldest message's age.

use super::place::{self, Place};
use super::{Ctx, Fail, Outcome, fs, progress, sqs};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::time::Duration;

#[derive(Debug, Serialize)]
struct Stats {
    queue: String,
    backend: &'static str,
    location: String,
    new: u64,
    in_progress: u64,
    delayed: u64,
    dead: Option<u64>,
    oldest_age_secs: Option<i64>,
}

pub fn run(ctx: &mut Ctx, queues: &[String], watch: bool, interval: u64, json: bool) -> Outcome {
    let names: Vec<String> = if queues.is_empty() {
        ctx.config.declared.iter().map(|q| q.name.clone()).collect()
    } else {
        queues.to_vec()
    };
    if names.is_empty() {
        return Err(Fail::Usage(
            "no queue named and none declared (give QUEUE, or -c Chorefile)".into(),
        ));
    }
    // Named queues must all be there; of all those declared, one that cannot be found
    // (an SQS queue not created yet) is said and left out, and the others are shown.
    let mut places = Vec::new();
    let mut missing = 0;
    for n in &names {
        match place::resolve(ctx, n) {
            Ok(p) => places.push((n.clone(), p)),
            Err(Fail::Usage(m) | Fail::Failed(m)) if queues.is_empty() => {
                crate::logging::stderr_line(&format!("chore queue: {n}: {m}"));
                missing += 1;
            }
            Err(e) => return Err(e),
        }
    }
    if places.is_empty() {
        return Err(Fail::Failed("no declared queue could be read".into()));
    }
    let tty = std::io::stdout().is_terminal();
    loop {
        let now = super::now();
        let rows = places
            .iter()
            .map(|(n, p)| stats(n, p, now))
            .collect::<Outcome<Vec<_>>>()?;
        let mut out = std::io::stdout().lock();
        if watch && tty && !json {
            let _ = write!(out, "\x1b[2J\x1b[H");
        }
        if json {
            for r in &rows {
                let _ = writeln!(out, "{}", serde_json::to_string(r).expect("serialises"));
            }
        } else {
            let _ = writeln!(
                out,
                "{:<24} {:<5} {:>8} {:>11} {:>8} {:>8} {:>10}",
                "QUEUE", "KIND", "NEW", "IN-PROGRESS", "DELAYED", "DEAD", "OLDEST"
            );
            for r in &rows {
                let dead = r.dead.map_or("-".into(), |d| d.to_string());
                let oldest = r.oldest_age_secs.map_or("-".into(), age);
                let kind = if r.backend == "sqs" { "sqs" } else { "fs" };
                let _ = writeln!(
                    out,
                    "{:<24} {:<5} {:>8} {:>11} {:>8} {:>8} {:>10}",
                    r.queue, kind, r.new, r.in_progress, r.delayed, dead, oldest
                );
            }
        }
        let _ = out.flush();
        drop(out);
        if !watch {
            return match missing {
                0 => Ok(()),
                n => Err(Fail::Failed(format!(
                    "{n} of {} declared queues could not be read",
                    names.len()
                ))),
            };
        }
        let until = std::time::Instant::now() + Duration::from_secs(interval.max(1));
        while std::time::Instant::now() < until {
            if progress::interrupted() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn stats(name: &str, p: &Place, now: i64) -> Outcome<Stats> {
    match p {
        Place::Fs(f) => {
            let io = |e: std::io::Error| Fail::Failed(e.to_string());
            let new = fs::list(f, "new", now).map_err(io)?;
            let claimed = fs::list(f, "inprogress", now).map_err(io)?;
            let dead = fs::list(f, "dead", now).map_err(io)?;
            let held = claimed
                .iter()
                .filter(|e| matches!(e.state, fs::State::Claimed { held: true, .. }))
                .count() as u64;
            Ok(Stats {
                queue: name.to_string(),
                backend: "filesystem",
                location: f.dir.display().to_string(),
                new: new.len() as u64,
                in_progress: held,
                delayed: claimed.len() as u64 - held,
                dead: Some(dead.len() as u64),
                oldest_age_secs: new.first().map(|e| (now - e.sent_at).max(0)),
            })
        }
        Place::Sqs(s) => {
            let (visible, in_flight, delayed) = sqs::counts(&s.sqs, &s.url)?;
            let dead = match place::dead_letter_url(s) {
                Ok(url) => Some(sqs::counts(&s.sqs, &url)?.0),
                Err(Fail::Usage(_)) => None,
                Err(e) => return Err(e),
            };
            Ok(Stats {
                queue: name.to_string(),
                backend: "sqs",
                location: s.url.clone(),
                new: visible,
                in_progress: in_flight,
                delayed,
                dead,
                oldest_age_secs: None,
            })
        }
    }
}

/// `95s`, `12m`, `3h`, `2d`: an age at a glance.
pub fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
