//! `chore queue requeue QUEUE` (alias `redrive`): move dead letters back to their queue,
//! attempts reset, all or those `Select`ed; `--dry-run` lists them and moves nothing.
//!
//! Filesystem: `dead/<id>.<attempt>.job` becomes `new/<id>.0.job` in one rename that never
//! replaces a file, taken under the lock a consumer takes; its `.reason` note is removed
//! after. Interrupted anywhere, each message is in exactly one place.
//!
//! SQS: receive from the dead-letter queue (hidden for `--hold`), send to the queue, then
//! delete. So that an interrupted run resumes without doubling, a journal records each
//! dead letter's id before its send and again once the send succeeded (synced both times):
//! a later run deletes a dead letter the journal says was sent instead of sending it
//! again. Only a run killed between SQS accepting a send and the journal's second line
//! leaves an ambiguity; the next run sends such a message again (on a FIFO queue with the
//! same deduplication id, which SQS drops) and names it. (SQS's own message move task
//! cannot select messages, and the emulator the tests use does not offer it.)

use super::journal::{Journal, Step, journal_path};
use super::place::{self, FsPlace, Place, SqsPlace};
use super::progress::{self, Progress};
use super::record::Seen;
use super::{Ctx, Fail, Outcome, fs, sqs};
use crate::config::queue_cli::Select;
use crate::queue::sqs::Outgoing;
use aws_sdk_sqs::types::Message;
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

pub fn run(
    ctx: &mut Ctx,
    queue: &str,
    select: &Select,
    dry_run: bool,
    hold: u32,
    journal: Option<PathBuf>,
) -> Outcome {
    match place::resolve(ctx, queue)? {
        Place::Fs(f) => filesystem(&f, select, dry_run),
        Place::Sqs(s) => {
            if select.reason.is_some() {
                return Err(Fail::Usage(
                    "--reason: SQS dead letters carry no reason (the log has it: `chore queue trace ID --log FILE`)"
                        .into(),
                ));
            }
            sqs_requeue(&s, select, dry_run, hold.clamp(1, 43_200), journal)
        }
    }
}

fn filesystem(f: &FsPlace, select: &Select, dry_run: bool) -> Outcome {
    let now = super::now();
    let entries = fs::list(f, "dead", now).map_err(|e| Fail::Failed(e.to_string()))?;
    let total = entries.len();
    let mut chosen = Vec::new();
    for e in entries {
        let reason = select.reason.as_ref().and_then(|_| fs::reason(&e));
        let class = if select.needs_class() {
            fs::body(&e.path)
                .ok()
                .and_then(|b| crate::consumer::classify(&b).ok().flatten())
        } else {
            None
        };
        let seen = Seen {
            id: &e.id,
            class: class.as_deref(),
            reason: reason.as_deref(),
            sent_at: Some(e.sent_at),
        };
        if select.matches(&seen, now) {
            chosen.push(e);
        }
    }
    let mut out = std::io::stdout().lock();
    if dry_run {
        for e in &chosen {
            let reason = fs::reason(e).unwrap_or_default();
            let _ = writeln!(
                out,
                "would requeue {} (attempts {}): {reason}",
                e.id, e.attempts
            );
        }
        crate::logging::stderr_line(&format!(
            "dry run: would requeue {} of {total} dead letter(s) in {}",
            chosen.len(),
            f.dir.display()
        ));
        return Ok(());
    }
    let bar = Progress::new(Some(chosen.len() as u64), "requeue");
    let (mut moved, mut skipped) = (0usize, 0usize);
    let mut failure = None;
    for e in &chosen {
        if progress::interrupted() {
            break;
        }
        match move_back(f, e) {
            Ok(true) => {
                moved += 1;
                let _ = writeln!(out, "requeued {}", e.id);
            }
            Ok(false) => skipped += 1,
            Err(err) => {
                failure = Some(Fail::Failed(format!("{}: {err}", e.path.display())));
                break;
            }
        }
        bar.inc(1);
    }
    bar.finish();
    let how = if progress::interrupted() {
        "interrupted: requeued"
    } else {
        "requeued"
    };
    let skipped = if skipped > 0 {
        format!(" ({skipped} skipped: locked, gone, or already waiting under the same name)")
    } else {
        String::new()
    };
    crate::logging::stderr_line(&format!(
        "{how} {moved} of {} selected dead letter(s) ({total} in dead/) into {}/new{skipped}",
        chosen.len(),
        f.dir.display()
    ));
    failure.map_or(Ok(()), Err)
}

/// One dead letter back to `new/` with no attempt counted; false when it could not be
/// taken (locked by someone else, gone, or its fresh name is taken).
fn move_back(f: &FsPlace, e: &fs::Entry) -> std::io::Result<bool> {
    let file = match fs::open(&e.path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    if !fs::try_lock(&file) {
        return Ok(false);
    }
    let to = f.dir.join("new").join(format!("{}.0.job", e.id));
    match crate::queue::filesystem::files::rename_noreplace(&e.path, &to) {
        Ok(()) => {}
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::AlreadyExists
            ) =>
        {
            return Ok(false);
        }
        Err(err) => return Err(err),
    }
    let mut note = e.path.clone().into_os_string();
    note.push(".reason");
    let _ = std::fs::remove_file(note);
    Ok(true)
}

/// What a requeue does with one dead letter it has not looked at before.
#[derive(Debug)]
enum Plan {
    /// Not selected: let go.
    Pass,
    /// Selected in a dry run: named, and let go. (Its class.)
    Preview(Option<String>),
    /// The journal says it was sent already: only its deletion is missing.
    Delete,
    /// To send, then delete. `doubtful`: an earlier run was stopped while sending it.
    Move { outgoing: Outgoing, doubtful: bool },
}

/// Pure: the plan for dead letter `m` (id `id`), given the selection, the journal's record
/// of it, and whether the queue is FIFO.
fn plan(
    m: &Message,
    id: &str,
    select: &Select,
    now: i64,
    dry_run: bool,
    step: Option<Step>,
    fifo: bool,
) -> Plan {
    let body = m.body().unwrap_or_default();
    let class = crate::consumer::classify(body).ok().flatten();
    let seen = Seen {
        id,
        class: class.as_deref(),
        reason: None,
        sent_at: sqs::sent_at(m),
    };
    if !select.matches(&seen, now) {
        return Plan::Pass;
    }
    if dry_run {
        return Plan::Preview(class);
    }
    if step == Some(Step::Sent) {
        return Plan::Delete;
    }
    let group = sqs::group(m).map(str::to_string);
    Plan::Move {
        outgoing: Outgoing {
            body: body.to_string(),
            group: fifo.then(|| group.unwrap_or_else(|| "requeued".into())),
            // The dead letter's id: a second send of it within SQS's five-minute window
            // is dropped.
            dedup: fifo.then(|| id.to_string()),
            delay: None,
            // Kept as SQS's own move task keeps them.
            attributes: m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        },
        doubtful: step == Some(Step::Sending),
    }
}

/// What a requeue of SQS dead letters did, for its closing lines.
#[derive(Default)]
struct Tally {
    /// Every dead letter looked at, by id.
    seen: HashSet<String>,
    selected: usize,
    moved: usize,
    /// Sent again after an earlier run was stopped while sending them.
    doubtful: Vec<String>,
    /// A dead letter came back before all had been seen.
    hold_ran_out: bool,
}

fn sqs_requeue(
    s: &SqsPlace,
    select: &Select,
    dry_run: bool,
    hold: u32,
    journal: Option<PathBuf>,
) -> Outcome {
    let dlq = place::dead_letter_url(s)?;
    let fifo = s.url.ends_with(".fifo");
    let mut journal = if dry_run {
        None
    } else {
        Some(Journal::open(
            journal.unwrap_or_else(|| journal_path(&dlq, &s.url)),
        )?)
    };
    let expected = sqs::counts(&s.sqs, &dlq)?.0;
    let bar = Progress::new(Some(expected), if dry_run { "dry run" } else { "requeue" });
    let now = super::now();
    let mut out = std::io::stdout().lock();
    let mut tally = Tally::default();
    let mut kept = Vec::new();
    let mut result = Ok(());
    while !progress::interrupted() {
        let batch = match sqs::receive(&s.sqs, &dlq, hold, 1) {
            Ok(b) => b,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        if batch.is_empty() {
            break;
        }
        let (mut to_move, mut to_delete) = (Vec::new(), Vec::new());
        for m in batch {
            let id = m.message_id().unwrap_or_default().to_string();
            let receipt = m.receipt_handle().unwrap_or_default().to_string();
            if !tally.seen.insert(id.clone()) {
                // The hold ran out: every dead letter has been looked at.
                kept.push(receipt);
                tally.hold_ran_out = true;
                continue;
            }
            bar.inc(1);
            let step = journal.as_ref().and_then(|j| j.steps.get(&id).copied());
            let plan = plan(&m, &id, select, now, dry_run, step, fifo);
            if !matches!(plan, Plan::Pass) {
                tally.selected += 1;
            }
            match plan {
                Plan::Pass => kept.push(receipt),
                Plan::Preview(class) => {
                    let class = class.as_deref().unwrap_or("-");
                    let _ = writeln!(out, "would requeue {id} (class {class})");
                    kept.push(receipt);
                }
                Plan::Delete => to_delete.push((id, receipt)),
                Plan::Move { outgoing, doubtful } => {
                    if doubtful {
                        tally.doubtful.push(id.clone());
                    }
                    to_move.push((id, receipt, outgoing));
                }
            }
        }
        if let Some(j) = journal.as_mut() {
            match send_and_delete(s, &dlq, j, to_move, to_delete, &mut out) {
                Ok(n) => tally.moved += n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if tally.hold_ran_out {
            break;
        }
    }
    bar.finish();
    // What was looked at and not moved is let go at once.
    let released = sqs::release(&s.sqs, &dlq, &kept);
    let interrupted = progress::interrupted();
    if let Some(j) = &journal
        && result.is_ok()
        && !interrupted
    {
        let _ = std::fs::remove_file(&j.path);
    }
    say_what_was_done(s, &dlq, &tally, dry_run, hold, interrupted);
    result.and(released)
}

/// The closing lines of an SQS requeue, on standard error.
fn say_what_was_done(
    s: &SqsPlace,
    dlq: &str,
    tally: &Tally,
    dry_run: bool,
    hold: u32,
    interrupted: bool,
) {
    let fifo = s.url.ends_with(".fifo");
    if !tally.doubtful.is_empty() {
        crate::logging::stderr_line(&format!(
            "warning: an earlier run was stopped while sending {}; sent again{}",
            tally.doubtful.join(", "),
            if fifo {
                " with the same deduplication id (SQS drops a second copy)"
            } else {
                ": the queue may now hold two copies of each"
            }
        ));
    }
    let (selected, looked_at) = (tally.selected, tally.seen.len());
    let line = if dry_run {
        format!(
            "dry run: would requeue {selected} of {looked_at} dead letter(s) in {dlq} to {}",
            s.url
        )
    } else {
        let (how, resume) = if interrupted {
            ("interrupted: requeued", "; run it again to go on")
        } else {
            ("requeued", "")
        };
        format!(
            "{how} {} of {selected} selected dead letter(s) ({looked_at} looked at) from {dlq} to {}{resume}",
            tally.moved, s.url
        )
    };
    crate::logging::stderr_line(&line);
    if tally.hold_ran_out && !interrupted {
        crate::logging::stderr_line(&format!(
            "note: a dead letter came back before all were seen (--hold {hold} s ran out): run again, or with a longer --hold"
        ));
    }
    // Dead letters an earlier run (killed, or still going) holds are out of sight for now.
    if let Ok((_, hidden, _)) = sqs::counts(&s.sqs, dlq)
        && hidden > 0
        && !dry_run
    {
        crate::logging::stderr_line(&format!(
            "note: {hidden} dead letter(s) are hidden by another run (or one that was killed); run again once they return"
        ));
    }
}

/// Send `to_move` (journalled before and after), then delete from the dead-letter queue
/// what was sent and what the journal says was sent already. Returns how many moved.
fn send_and_delete(
    s: &SqsPlace,
    dlq: &str,
    j: &mut Journal,
    to_move: Vec<(String, String, Outgoing)>,
    mut to_delete: Vec<(String, String)>,
    out: &mut impl Write,
) -> Outcome<usize> {
    if !to_move.is_empty() {
        let ids: Vec<&str> = to_move.iter().map(|(id, _, _)| id.as_str()).collect();
        j.record("sending", &ids)?;
        let batch: Vec<Outgoing> = to_move.iter().map(|(_, _, o)| o.clone()).collect();
        let results = s.sqs.send_batch(&s.url, &batch).map_err(Fail::Failed)?;
        let mut sent = Vec::new();
        let mut refused = None;
        for ((id, receipt, _), r) in to_move.into_iter().zip(results) {
            match r {
                Ok(_) => {
                    sent.push(id.clone());
                    to_delete.push((id, receipt));
                }
                Err(e) => {
                    refused.get_or_insert(format!("SQS refused dead letter {id}: {e}"));
                }
            }
        }
        let sent_ids: Vec<&str> = sent.iter().map(String::as_str).collect();
        j.record("sent", &sent_ids)?;
        if let Some(e) = refused {
            // What was sent is still deleted below before stopping.
            let moved = delete(s, dlq, &to_delete, out)?;
            let _ = moved;
            return Err(Fail::Failed(e));
        }
    }
    delete(s, dlq, &to_delete, out)
}

fn delete(
    s: &SqsPlace,
    dlq: &str,
    items: &[(String, String)],
    out: &mut impl Write,
) -> Outcome<usize> {
    if items.is_empty() {
        return Ok(0);
    }
    let receipts: Vec<String> = items.iter().map(|(_, r)| r.clone()).collect();
    let refused = sqs::delete(&s.sqs, dlq, &receipts)?;
    for (id, r) in items {
        if !refused.contains(r) {
            let _ = writeln!(out, "requeued {id}");
        }
    }
    if !refused.is_empty() {
        // The journal keeps them as sent: the next run deletes them without sending.
        return Err(Fail::Failed(format!(
            "SQS refused to delete {} dead letter(s) already sent; run again to finish",
            refused.len()
        )));
    }
    Ok(items.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::types::MessageAttributeValue;

    fn letter(class: &str) -> Message {
        let attr = MessageAttributeValue::builder()
            .data_type("String")
            .string_value("v")
            .build()
            .unwrap();
        Message::builder()
            .message_id("m1")
            .body(format!(r#"{{"class":"{class}","args":[]}}"#))
            .message_attributes("a", attr)
            .build()
    }

    fn only(class: &str) -> Select {
        Select {
            classes: vec![class.into()],
            ..Select::default()
        }
    }

    #[test]
    fn a_letter_is_passed_previewed_deleted_or_moved() {
        let m = letter("Mail");
        let plan = |select: &Select, dry, step, fifo| plan(&m, "m1", select, 0, dry, step, fifo);
        assert!(matches!(
            plan(&only("Other"), false, None, false),
            Plan::Pass
        ));
        assert!(
            matches!(plan(&only("Mail"), true, None, false), Plan::Preview(Some(c)) if c == "Mail")
        );
        assert!(matches!(
            plan(&only("Mail"), false, Some(Step::Sent), false),
            Plan::Delete
        ));
        let Plan::Move { outgoing, doubtful } =
            plan(&only("Mail"), false, Some(Step::Sending), true)
        else {
            panic!("not moved");
        };
        assert!(doubtful);
        // FIFO: a group of its own, and its id as the deduplication id, attributes kept.
        assert_eq!(outgoing.group.as_deref(), Some("requeued"));
        assert_eq!(outgoing.dedup.as_deref(), Some("m1"));
        assert_eq!(outgoing.attributes.len(), 1);
        let Plan::Move { outgoing, doubtful } = plan(&Select::default(), false, None, false) else {
            panic!("not moved");
        };
        assert!(!doubtful && outgoing.group.is_none() && outgoing.dedup.is_none());
    }
}
