//! `chore queue peek QUEUE [-n N] [--dead] [--json]`: the first messages, not consumed.
//!
//! Filesystem: bodies are read without a lock or a rename, so files, names and mtimes stay
//! as they were and a running master never notices. SQS has no way to look without
//! receiving: peek receives (each message hidden for a moment, so it is seen once), then
//! makes them visible again at once. Each shown message's receive count rises by one (a
//! redrive policy counts it), and a FIFO group is blocked for that moment; that is said on
//! standard error.

use super::place::{self, Place};
use super::record::Record;
use super::stats::age;
use super::{Ctx, Fail, Outcome, fs, sqs};
use std::io::Write;

/// How long SQS hides what peek received before it lets it go (a peek takes less).
const PEEK_HOLD: u32 = 30;

pub fn run(ctx: &mut Ctx, queue: &str, n: usize, dead: bool, json: bool) -> Outcome {
    let p = place::resolve(ctx, queue)?;
    let now = super::now();
    let records = match &p {
        Place::Fs(f) => {
            let sub = if dead { "dead" } else { "new" };
            let entries = fs::list(f, sub, now).map_err(|e| Fail::Failed(e.to_string()))?;
            let mut out = Vec::new();
            for e in entries {
                if out.len() >= n {
                    break;
                }
                match fs::record(f, &e) {
                    Ok(r) => out.push(r),
                    // Claimed or removed since the listing: no longer waiting.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(Fail::Failed(err.to_string())),
                }
            }
            out
        }
        Place::Sqs(s) => {
            let url = if dead {
                place::dead_letter_url(s)?
            } else {
                s.url.clone()
            };
            let records = sqs_peek(&s.sqs, &url, &s.name, n, if dead { "dead" } else { "new" })?;
            crate::logging::stderr_line(&format!(
                "note: SQS cannot show a message without receiving it: the {} message(s) shown were received and made visible again at once (each receive count rose by one)",
                records.len()
            ));
            records
        }
    };
    let mut out = std::io::stdout().lock();
    for r in &records {
        let _ = if json {
            writeln!(out, "{}", r.line())
        } else {
            writeln!(out, "{}", text(r, now))
        };
    }
    Ok(())
}

/// Receive up to `n`, then let them all go.
fn sqs_peek(
    client: &crate::queue::sqs::Sqs,
    url: &str,
    queue: &str,
    n: usize,
    state: &str,
) -> Outcome<Vec<Record>> {
    let mut records = Vec::new();
    let mut receipts = Vec::new();
    let got = (|| -> Outcome {
        while records.len() < n {
            let batch = sqs::receive(client, url, PEEK_HOLD, 1)?;
            if batch.is_empty() {
                break;
            }
            for m in batch {
                receipts.push(m.receipt_handle().unwrap_or_default().to_string());
                if records.len() < n {
                    records.push(sqs::record(queue, state, &m));
                }
            }
        }
        Ok(())
    })();
    // Whatever happened, what was received is let go.
    sqs::release(client, url, &receipts)?;
    got.map(|()| records)
}

/// `<id>  attempts=N class=C age=A [reason=…]`, then the body indented (long bodies cut).
fn text(r: &Record, now: i64) -> String {
    let mut head = r.id.clone();
    if let Some(s) = r.attr("state") {
        head.push_str(&format!("  {s}"));
    }
    if let Some(a) = r.attr("attempts") {
        head.push_str(&format!("  attempts={a}"));
    }
    if let Some(c) = r.attr("class") {
        head.push_str(&format!("  class={c}"));
    }
    if let Some(t) = r.attr("sent_at").and_then(|t| t.parse::<i64>().ok()) {
        head.push_str(&format!("  age={}", age((now - t).max(0))));
    }
    if let Some(g) = r.attr("group") {
        head.push_str(&format!("  group={g}"));
    }
    if let Some(reason) = r.attr("reason") {
        head.push_str(&format!("  reason={reason}"));
    }
    const SHOWN: usize = 400;
    let body: String = r.body.chars().take(SHOWN).collect();
    let more = if r.body.chars().count() > SHOWN {
        format!(" … ({} bytes)", r.body.len())
    } else {
        String::new()
    };
    format!("{head}\n    {body}{more}")
}
