//! What the configuration tells the backends: the SQS connection and each SQS queue's
//! options, and the memcached servers for dedupe. Defined here, with the rest of the
//! configuration, so that the backends depend on the configuration and never the other way
//! round.

use std::time::Duration;

/// SQS connection settings: the standard AWS chain, optionally overridden.
#[derive(Debug, Clone, Default)]
pub struct SqsSettings {
    /// Endpoint URL; None = `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL` / AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Static credentials (Ruby Chore's `--aws-access-key` / `--aws-secret-key`).
    pub credentials: Option<(String, String)>,
}

/// An SQS queue's options from the Chorefile.
#[derive(Debug, Clone, Default)]
pub struct SqsQueueOptions {
    /// Create the queue (and its dead-letter queue) when missing.
    pub create: bool,
    /// Long-poll wait (≤ 20 s).
    pub wait: Option<Duration>,
    /// Dead-letter queue name or URL.
    pub dead_letter_queue: Option<String>,
    /// A queue chore creates gets this visibility timeout (the queue's `timeout`)...
    pub visibility_timeout: Option<Duration>,
    /// ...and, with a dead-letter queue, a redrive policy after this many receives
    /// (`max-attempts`).
    pub max_receive_count: Option<u32>,
}

impl SqsQueueOptions {
    /// A queue created with SQS's defaults (and FIFO by its name): a dead-letter queue.
    pub fn plain() -> SqsQueueOptions {
        SqsQueueOptions {
            create: true,
            ..SqsQueueOptions::default()
        }
    }
}

/// Dedupe settings from the Chorefile.
#[derive(Debug, Clone)]
pub struct DedupeSettings {
    /// `host:port` of each server (a bare host means port 11211).
    pub servers: Vec<String>,
    /// Treat a message as a duplicate when memcached cannot be asked.
    pub dupe_on_cache_failure: bool,
    /// Joined before every key.
    pub prefix: String,
}
