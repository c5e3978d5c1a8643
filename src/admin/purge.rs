//! `chore queue purge QUEUE [--dead] [--yes]`: remove every waiting message (or every dead
//! letter), after asking. Filesystem: each file is removed under the lock a consumer takes,
//! so a file being written or claimed is left alone (and counted); claimed messages in
//! `inprogress/` are never touched. SQS: `PurgeQueue` on the queue or its dead-letter queue.

use super::confirm::confirm;
use super::place::{self, Place};
use super::progress::{self, Progress};
use super::{Ctx, Fail, Outcome, fs, sqs};
use aws_sdk_sqs::error::DisplayErrorContext;

pub fn run(ctx: &mut Ctx, queue: &str, dead: bool, yes: bool) -> Outcome {
    let p = place::resolve(ctx, queue)?;
    let what = if dead {
        "dead letter(s)"
    } else {
        "waiting message(s)"
    };
    match p {
        Place::Fs(f) => {
            let sub = if dead { "dead" } else { "new" };
            let entries =
                fs::list(&f, sub, super::now()).map_err(|e| Fail::Failed(e.to_string()))?;
            let dir = f.dir.join(sub);
            confirm(
                &format!("purge {} {what} from {}?", entries.len(), dir.display()),
                yes,
            )?;
            progress::catch_interrupts();
            let bar = Progress::new(Some(entries.len() as u64), "purge");
            let (mut removed, mut skipped) = (0usize, 0usize);
            for e in &entries {
                if progress::interrupted() {
                    break;
                }
                let taken = fs::open(&e.path)
                    .is_ok_and(|file| fs::try_lock(&file) && std::fs::remove_file(&e.path).is_ok());
                if taken {
                    removed += 1;
                    let mut note = e.path.clone().into_os_string();
                    note.push(".reason");
                    let _ = std::fs::remove_file(note);
                } else {
                    skipped += 1;
                }
                bar.inc(1);
            }
            bar.finish();
            let how = if progress::interrupted() {
                "interrupted: purged"
            } else {
                "purged"
            };
            let skipped = if skipped > 0 {
                format!(" ({skipped} left: being written, claimed or gone)")
            } else {
                String::new()
            };
            crate::logging::stderr_line(&format!(
                "{how} {removed} of {} {what} from {}{skipped}",
                entries.len(),
                dir.display()
            ));
            Ok(())
        }
        Place::Sqs(s) => {
            let url = if dead {
                place::dead_letter_url(&s)?
            } else {
                s.url.clone()
            };
            let (visible, in_flight, delayed) = sqs::counts(&s.sqs, &url)?;
            let n = visible + in_flight + delayed;
            confirm(&format!("purge about {n} message(s) from {url}?"), yes)?;
            s.sqs
                .block_on(s.sqs.client.purge_queue().queue_url(&url).send())
                .map_err(|e| {
                    Fail::Failed(format!("PurgeQueue on {url}: {}", DisplayErrorContext(&e)))
                })?;
            crate::logging::stderr_line(&format!(
                "purged about {n} message(s) from {url} (SQS may take up to a minute to finish)"
            ));
            Ok(())
        }
    }
}
