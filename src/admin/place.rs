//! Which queue a verb acts on: a name the Chorefile declares (with its prefix, backend,
//! timeout and dead-letter queue), a filesystem queue directory (a path with a `/`), or an
//! SQS queue URL. Anything else is a usage mistake, reported before anything is touched.

use super::{Ctx, Fail, Outcome};
use crate::config::{Backend, QueueConfig};
use crate::queue::sqs::{OpenError, Sqs};
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A filesystem queue: its directory and the timeout its claims are read against.
pub struct FsPlace {
    pub name: String,
    pub dir: PathBuf,
    pub timeout: Duration,
    /// How far ahead a held claim is renewed: a claim lapsing later than this is a delay.
    pub lease: Duration,
}

/// An SQS queue: its URL, and where its dead letters go when the Chorefile says.
pub struct SqsPlace {
    pub name: String,
    pub url: String,
    pub sqs: Sqs,
    /// Boxed: a queue's configuration is large, and most places have none.
    pub declared: Option<Box<QueueConfig>>,
}

pub enum Place {
    Fs(FsPlace),
    Sqs(SqsPlace),
}

impl Place {
    pub fn describe(&self) -> String {
        match self {
            Place::Fs(f) => f.dir.display().to_string(),
            Place::Sqs(s) => s.url.clone(),
        }
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Resolve what was typed. The queue must exist (for `create`, use `declared`).
pub fn resolve(ctx: &mut Ctx, text: &str) -> Outcome<Place> {
    if is_url(text) {
        let sqs = ctx.sqs()?;
        let name = text.rsplit('/').next().unwrap_or(text).to_string();
        let declared = ctx
            .config
            .declared
            .iter()
            .find(|q| q.url.as_deref() == Some(text))
            .cloned()
            .map(Box::new);
        return Ok(Place::Sqs(SqsPlace {
            name,
            url: text.to_string(),
            sqs,
            declared,
        }));
    }
    if text.contains('/') {
        return fs_dir(ctx, Path::new(text), None);
    }
    let Some(q) = ctx.config.queue(text).cloned() else {
        return Err(unknown(ctx, text));
    };
    match q.backend {
        Backend::Filesystem => {
            let dir = ctx.config.fs_queue_root.join(&q.full_name);
            fs_dir(ctx, &dir, Some(q))
        }
        Backend::Sqs => {
            let sqs = ctx.sqs()?;
            let url = sqs_url(&sqs, &q)?;
            Ok(Place::Sqs(SqsPlace {
                name: q.full_name.clone(),
                url,
                sqs,
                declared: Some(Box::new(q)),
            }))
        }
    }
}

/// The URL of a declared SQS queue, which must exist.
pub fn sqs_url(sqs: &Sqs, q: &QueueConfig) -> Outcome<String> {
    let lookup = q.url.as_deref().unwrap_or(&q.full_name);
    sqs.queue_url(lookup, None).map_err(|e| match e {
        OpenError::Missing(m) => Fail::Usage(m),
        OpenError::Failed(m) => Fail::Failed(m),
    })
}

fn unknown(ctx: &Ctx, text: &str) -> Fail {
    let names: Vec<&str> = ctx
        .config
        .declared
        .iter()
        .map(|q| q.name.as_str())
        .collect();
    if ctx.config.files.is_empty() {
        Fail::Usage(format!(
            "unknown queue `{text}`: give a Chorefile with -c, a queue directory (a path with a `/`), or an SQS queue URL"
        ))
    } else if names.is_empty() {
        Fail::Usage(format!(
            "unknown queue `{text}`: the Chorefile declares no queue"
        ))
    } else {
        Fail::Usage(format!(
            "unknown queue `{text}`: the Chorefile declares {}",
            names.join(", ")
        ))
    }
}

/// A filesystem queue directory, which must hold a readable `new/`.
fn fs_dir(ctx: &Ctx, dir: &Path, declared: Option<QueueConfig>) -> Outcome<Place> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let new = dir.join("new");
    match std::fs::read_dir(&new) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Fail::Usage(format!(
                "{}: not a queue directory (no new/ in it; `chore queue create` makes one)",
                dir.display()
            )));
        }
        Err(e) => {
            return Err(Fail::Usage(format!("{}: cannot read: {e}", new.display())));
        }
    }
    let timeout = match declared.as_ref().and_then(|q| q.timeout) {
        Some(t) => t,
        None => config_timeout(&dir)?.unwrap_or(ctx.config.default_queue_timeout),
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Place::Fs(FsPlace {
        name,
        timeout,
        lease: ctx.config.fs_claim_lease.min(timeout),
        dir,
    }))
}

/// `config/timeout`, whole seconds, as every consumer reads it.
fn config_timeout(dir: &Path) -> Outcome<Option<Duration>> {
    let path = dir.join("config").join("timeout");
    match std::fs::read_to_string(&path) {
        Ok(t) => t
            .trim()
            .parse::<u64>()
            .map(|s| Some(Duration::from_secs(s.max(1))))
            .map_err(|_| Fail::Usage(format!("{}: not a whole number of seconds", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Fail::Usage(format!("{}: {e}", path.display()))),
    }
}

/// The dead-letter queue of an SQS queue: the Chorefile's `dead-letter-queue`, else the
/// target of the queue's redrive policy.
pub fn dead_letter_url(p: &SqsPlace) -> Outcome<String> {
    if let Some(dlq) = p
        .declared
        .as_ref()
        .and_then(|q| q.sqs.dead_letter_queue.as_deref())
    {
        return p.sqs.queue_url(dlq, None).map_err(|e| match e {
            OpenError::Missing(m) => Fail::Usage(format!("dead-letter queue: {m}")),
            OpenError::Failed(m) => Fail::Failed(m),
        });
    }
    let attrs = p
        .sqs
        .block_on(
            p.sqs
                .client
                .get_queue_attributes()
                .queue_url(&p.url)
                .attribute_names(QueueAttributeName::RedrivePolicy)
                .send(),
        )
        .map_err(|e| Fail::Failed(format!("{}: {}", p.url, DisplayErrorContext(&e))))?;
    let policy = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        .cloned();
    let arn = policy
        .as_deref()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .and_then(|v| v["deadLetterTargetArn"].as_str().map(str::to_string));
    let Some(arn) = arn else {
        return Err(Fail::Usage(format!(
            "{}: no dead-letter queue (neither `dead-letter-queue` in the Chorefile nor a redrive policy)",
            p.name
        )));
    };
    let name = arn.rsplit(':').next().unwrap_or(&arn);
    p.sqs.queue_url(name, None).map_err(|e| match e {
        OpenError::Missing(m) => Fail::Usage(format!("dead-letter queue: {m}")),
        OpenError::Failed(m) => Fail::Failed(m),
    })
}
