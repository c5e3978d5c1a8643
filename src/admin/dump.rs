//! `chore queue dump QUEUE [--dead] [-o FILE]` and `chore queue load QUEUE [FILE]`: a
//! queue's messages as JSON Lines (`record::Record`), and back, so work moves between
//! queues, hosts and backends with its bodies byte for byte.
//!
//! A dump leaves the queue as it was. Filesystem: the waiting (or dead) files are read
//! without a lock or a rename. SQS: everything is received and kept hidden while the dump
//! runs (so each message is written once), then made visible again; a dump killed outright
//! leaves them hidden until `DUMP_HOLD` has passed. A load checks every line before it
//! publishes any, so a malformed file publishes nothing.

use super::place::{self, Place};
use super::progress::{self, Progress};
use super::record::Record;
use super::{Ctx, Fail, Outcome, attrs, fs, sqs};
use crate::queue::filesystem::FilesystemQueue;
use crate::queue::sqs::{MAX_BATCH, MAX_PAYLOAD, Outgoing};
use std::collections::HashSet;
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

/// Seconds SQS keeps what a dump received hidden: longer than a large dump takes.
const DUMP_HOLD: u32 = 600;

pub fn run(ctx: &mut Ctx, queue: &str, dead: bool, output: Option<&Path>) -> Outcome {
    let p = place::resolve(ctx, queue)?;
    let sink: Box<dyn Write> = match output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .map_err(|e| Fail::Usage(format!("{}: cannot write: {e}", path.display())))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut sink = BufWriter::new(sink);
    let what = if dead { "dead letters" } else { "messages" };
    let mut written = 0u64;
    let write = |sink: &mut BufWriter<Box<dyn Write>>, r: &Record| -> Outcome {
        writeln!(sink, "{}", r.line()).map_err(|e| Fail::Failed(format!("writing the dump: {e}")))
    };
    let result = match &p {
        Place::Fs(f) => {
            let sub = if dead { "dead" } else { "new" };
            let entries =
                fs::list(f, sub, super::now()).map_err(|e| Fail::Failed(e.to_string()))?;
            let bar = Progress::new(Some(entries.len() as u64), "dump");
            let mut result = Ok(());
            for e in &entries {
                if progress::interrupted() {
                    break;
                }
                match fs::record(f, e) {
                    Ok(r) => {
                        if let Err(err) = write(&mut sink, &r) {
                            result = Err(err);
                            break;
                        }
                        written += 1;
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        result = Err(Fail::Failed(err.to_string()));
                        break;
                    }
                }
                bar.inc(1);
            }
            bar.finish();
            result
        }
        Place::Sqs(s) => {
            let url = if dead {
                place::dead_letter_url(s)?
            } else {
                s.url.clone()
            };
            let expected = sqs::counts(&s.sqs, &url)?.0;
            let bar = Progress::new(Some(expected), "dump");
            let mut receipts = Vec::new();
            let mut seen = HashSet::new();
            let state = if dead { "dead" } else { "new" };
            let mut result = Ok(());
            'receive: while !progress::interrupted() {
                let batch = match sqs::receive(&s.sqs, &url, DUMP_HOLD, 1) {
                    Ok(b) => b,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                };
                if batch.is_empty() {
                    break;
                }
                for m in batch {
                    receipts.push(m.receipt_handle().unwrap_or_default().to_string());
                    let r = sqs::record(&s.name, state, &m);
                    // Seen again: the hold ran out, everything has been seen.
                    if !seen.insert(r.id.clone()) {
                        break 'receive;
                    }
                    if let Err(e) = write(&mut sink, &r) {
                        result = Err(e);
                        break 'receive;
                    }
                    written += 1;
                    bar.inc(1);
                }
            }
            bar.finish();
            if written < expected && !progress::interrupted() {
                crate::logging::stderr_line(&format!(
                    "note: SQS showed {written} of about {expected} visible messages: messages in flight are never shown, and a FIFO queue shows a group's next messages only once the earlier ones are deleted"
                ));
            }
            // Whatever happened, what was received becomes visible again.
            let released = sqs::release(&s.sqs, &url, &receipts);
            result.and(released)
        }
    };
    let flushed = sink
        .flush()
        .map_err(|e| Fail::Failed(format!("writing the dump: {e}")));
    let result = result.and(flushed);
    let to = output.map_or("standard output".into(), |p| p.display().to_string());
    let line = if progress::interrupted() {
        format!(
            "interrupted: dumped {written} {what} of {} to {to} before Ctrl-C",
            p.describe()
        )
    } else {
        format!("dumped {written} {what} of {} to {to}", p.describe())
    };
    crate::logging::stderr_line(&line);
    result
}

/// Read and check every line of the dump (FILE, or standard input).
fn read_dump(file: Option<&Path>) -> Outcome<Vec<Record>> {
    let name = file.map_or("standard input".into(), |p| p.display().to_string());
    let reader: Box<dyn BufRead> = match file {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p)
                .map_err(|e| Fail::Usage(format!("{}: cannot read: {e}", p.display())))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut records = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Fail::Usage(format!("{name}:{}: {e}", i + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let r = Record::parse(&line)
            .and_then(|r| match r.body.is_empty() {
                // It would never run: a consumer takes an empty file for one still being
                // written (and deletes it after the queue timeout); SQS refuses it.
                true => Err("an empty body cannot be a message".to_string()),
                false => Ok(r),
            })
            .map_err(|e| Fail::Usage(format!("{name}:{}: {e}; nothing was loaded", i + 1)))?;
        records.push(r);
    }
    Ok(records)
}

pub fn load(ctx: &mut Ctx, queue: &str, file: Option<&Path>, group: Option<&str>) -> Outcome {
    let p = place::resolve(ctx, queue)?;
    let records = read_dump(file)?;
    let bar = Progress::new(Some(records.len() as u64), "load");
    let mut loaded = Loaded::default();
    let result = match &p {
        Place::Fs(f) => {
            let q = open_fs(ctx, f)?;
            publish_fs(&q, &records, &bar, &mut loaded)
        }
        Place::Sqs(s) => {
            // Every record is checked before anything is sent.
            let outgoing = to_send(s, &records, group, &mut loaded)?;
            send_sqs(s, outgoing, &bar, &mut loaded)
        }
    };
    let (loaded, not_kept) = (loaded.count, loaded.not_kept);
    bar.finish();
    let of = records.len();
    let line = if progress::interrupted() {
        format!(
            "interrupted: loaded {loaded} of {of} message(s) into {} before Ctrl-C{not_kept}",
            p.describe()
        )
    } else {
        format!(
            "loaded {loaded} of {of} message(s) into {}{not_kept}",
            p.describe()
        )
    };
    crate::logging::stderr_line(&line);
    result
}

/// What a load put into its queue, and what the queue could not keep, for the summary.
#[derive(Default)]
struct Loaded {
    count: usize,
    /// `; …` for the summary line, or empty.
    not_kept: String,
}

fn open_fs(ctx: &Ctx, f: &place::FsPlace) -> Outcome<FilesystemQueue> {
    let root = f.dir.parent().unwrap_or(Path::new("/"));
    FilesystemQueue::open(
        root,
        &f.name,
        Some(f.timeout),
        f.timeout,
        f.lease,
        ctx.config.consumer_sleep_interval,
    )
    .map_err(|e| Fail::Failed(e.to_string()))
}

/// Publish each record's body (its class from the dump, or read from the body).
fn publish_fs(
    q: &FilesystemQueue,
    records: &[Record],
    bar: &Progress,
    loaded: &mut Loaded,
) -> Outcome {
    let attributes: usize = records.iter().map(attrs::count).sum();
    if attributes > 0 {
        loaded.not_kept = format!(
            "; {attributes} SQS message attribute(s) not kept: a filesystem queue keeps only the body"
        );
    }
    for r in records {
        if progress::interrupted() {
            break;
        }
        let class = match r.attr("class") {
            Some(c) => Some(c.to_string()),
            None => crate::consumer::classify(&r.body).ok().flatten(),
        };
        q.publish(class.as_deref(), &r.body)
            .map_err(|e| Fail::Failed(e.to_string()))?;
        loaded.count += 1;
        bar.inc(1);
    }
    Ok(())
}

/// The records as SQS messages: a FIFO queue needs a group for each; attributes SQS
/// refuses are left out and named.
fn to_send(
    s: &place::SqsPlace,
    records: &[Record],
    group: Option<&str>,
    loaded: &mut Loaded,
) -> Outcome<Vec<Outgoing>> {
    let fifo = s.url.ends_with(".fifo");
    let mut refused: Vec<String> = Vec::new();
    let outgoing = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let group = r.attr("group").or(group).map(str::to_string);
            if fifo && group.is_none() {
                return Err(Fail::Usage(format!(
                    "message {} (id {}) has no group and the queue is FIFO: give --group-id; nothing was loaded",
                    i + 1,
                    r.id
                )));
            }
            let (attributes, left_out) = attrs::to_send(r).map_err(|e| {
                Fail::Usage(format!(
                    "message {} (id {}): {e}; nothing was loaded",
                    i + 1,
                    r.id
                ))
            })?;
            refused.extend(left_out);
            Ok(Outgoing {
                body: r.body.clone(),
                attributes,
                group: if fifo { group } else { None },
                // The dumped id: loading the same dump twice within SQS's five-minute
                // window does not double it.
                dedup: fifo.then(|| r.id.clone()),
                delay: None,
            })
        })
        .collect::<Outcome<Vec<_>>>()?;
    if !refused.is_empty() {
        refused.sort();
        let n = refused.len();
        refused.dedup();
        loaded.not_kept = format!(
            "; {n} message attribute(s) left out, as SQS refuses their name or type: {}",
            refused.join(", ")
        );
    }
    Ok(outgoing)
}

/// Send in batches as large as SQS takes, stopping at the first refusal.
fn send_sqs(
    s: &place::SqsPlace,
    outgoing: Vec<Outgoing>,
    bar: &Progress,
    loaded: &mut Loaded,
) -> Outcome {
    for batch in batches_by_size(outgoing) {
        if progress::interrupted() {
            break;
        }
        let results = s.sqs.send_batch(&s.url, &batch).map_err(Fail::Failed)?;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        loaded.count += ok;
        bar.inc(ok as u64);
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(Fail::Failed(format!("SQS refused a message: {e}")));
        }
    }
    Ok(())
}

/// Pure: `outgoing` in order, cut into batches of at most `MAX_BATCH` messages and
/// `MAX_PAYLOAD` bytes (bodies and attributes); a message larger than that alone goes alone,
/// for SQS to refuse by name.
fn batches_by_size(outgoing: Vec<Outgoing>) -> Vec<Vec<Outgoing>> {
    let size = |m: &Outgoing| m.body.len() + attrs::size(&m.attributes);
    let mut batches: Vec<Vec<Outgoing>> = Vec::new();
    let mut bytes = 0;
    for m in outgoing {
        let n = size(&m);
        match batches.last_mut() {
            Some(b) if b.len() < MAX_BATCH && bytes + n <= MAX_PAYLOAD => {
                bytes += n;
                b.push(m);
            }
            _ => {
                bytes = n;
                batches.push(vec![m]);
            }
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(bytes: usize) -> Outgoing {
        Outgoing {
            body: "x".repeat(bytes),
            group: None,
            dedup: None,
            delay: None,
            attributes: Vec::new(),
        }
    }

    fn shape(batches: &[Vec<Outgoing>]) -> Vec<Vec<usize>> {
        batches
            .iter()
            .map(|b| b.iter().map(|m| m.body.len()).collect())
            .collect()
    }

    #[test]
    fn batches_hold_at_most_ten_messages_and_the_payload_limit_in_order() {
        assert!(batches_by_size(Vec::new()).is_empty());
        let small = batches_by_size((0..23).map(|_| sized(1)).collect());
        assert_eq!(small.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 3]);
        let half = MAX_PAYLOAD / 2;
        let big = batches_by_size(vec![
            sized(half),
            sized(half),
            sized(1),
            sized(MAX_PAYLOAD + 1),
            sized(2),
        ]);
        // Two halves fill a batch; one too large for any goes alone, for SQS to refuse.
        assert_eq!(
            shape(&big),
            [vec![half, half], vec![1], vec![MAX_PAYLOAD + 1], vec![2]]
        );
    }
}
