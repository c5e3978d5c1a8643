//! The connection to SQS, shared by every SQS queue of the process and by `chore enqueue`:
//! connecting (`Sqs::connect`), finding a queue's URL (creating it when asked), and
//! publishing (`Sqs::send_batch`; `Sqs::send_periodic`, a periodic task's tick in Elastic
//! Beanstalk's form). How request entries are built and how an answer maps back to the
//! messages are pure functions, tested here.

use super::MAX_WAIT;
use crate::config::{SqsQueueOptions, SqsSettings};
use crate::queue::Periodic;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry,
    SendMessageBatchResultEntry,
};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// How to reach SQS: shared by every SQS queue of the process.
#[derive(Clone)]
pub struct Sqs {
    pub client: Client,
    rt: Arc<tokio::runtime::Runtime>,
}

/// Counts every SQS call by action, and its failures (`chore_sqs_calls_total`), once per
/// operation (its retries included), in the one place every call passes.
#[derive(Debug)]
struct CountCalls;

impl aws_sdk_sqs::config::Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "chore-count-calls"
    }

    fn read_after_execution(
        &self,
        context: &aws_sdk_sqs::config::interceptors::FinalizerInterceptorContextRef<'_>,
        _components: &aws_sdk_sqs::config::RuntimeComponents,
        cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), aws_sdk_sqs::error::BoxError> {
        use aws_smithy_runtime_api::client::orchestrator::Metadata;
        let action = cfg.load::<Metadata>().map_or("unknown", |m| m.name());
        let failed = !matches!(context.output_or_error(), Some(Ok(_)));
        crate::observe::metrics::sqs_call(action, failed);
        Ok(())
    }
}

/// Why a queue could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// It does not exist: a configuration mistake (exit 2).
    Missing(String),
    /// SQS could not be asked (network, credentials).
    Failed(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Missing(m) | OpenError::Failed(m) => f.write_str(m),
        }
    }
}

/// The body of every periodic message Elastic Beanstalk's daemon sends; what matters is in
/// the attributes.
const PERIODIC_BODY: &str = "elasticbeanstalk scheduled job";

/// One message to publish.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub body: String,
    /// FIFO message group.
    pub group: Option<String>,
    /// FIFO deduplication id.
    pub dedup: Option<String>,
    /// Seconds before it becomes visible (≤ 900).
    pub delay: Option<u32>,
    /// Message attributes, by name (`chore queue load` carries a dump's along).
    pub attributes: Vec<(String, MessageAttributeValue)>,
}

impl Sqs {
    pub fn connect(settings: &SqsSettings) -> io::Result<Sqs> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sqs-io")
            .enable_all()
            .build()?;
        // Every call gets an attempt timeout: a connection that goes silent (a lost NAT
        // entry, a paused endpoint) must not hang a settler or a receive for ever. It
        // exceeds the longest long poll (20 s).
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(MAX_WAIT + Duration::from_secs(10))
            .build();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some((key, secret)) = &settings.credentials {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                key.clone(),
                secret.clone(),
                None,
                None,
                "chore-static",
            ));
        } else if let Some((key, secret, token)) = crate::secrets::environment_credentials() {
            // The environment's keys, read once: the master hides them from its own
            // environment, where the SDK would look again when its cache expires.
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                key,
                secret,
                token,
                None,
                "chore-environment",
            ));
        }
        let conf = rt.block_on(loader.load());
        let conf = aws_sdk_sqs::config::Builder::from(&conf)
            .interceptor(CountCalls)
            .build();
        Ok(Sqs {
            client: Client::from_conf(conf),
            rt: Arc::new(rt),
        })
    }

    /// Run one SDK future to completion.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Resolve a queue name (or URL) to its URL, creating it when asked.
    /// The URL of `name_or_url`. One that does not exist is created as declared when
    /// `create` is given (`SqsQueueOptions::create`), else `Missing`.
    pub fn queue_url(
        &self,
        name_or_url: &str,
        create: Option<&SqsQueueOptions>,
    ) -> Result<String, OpenError> {
        if is_url(name_or_url) {
            return Ok(name_or_url.to_string());
        }
        let got = self.block_on(self.client.get_queue_url().queue_name(name_or_url).send());
        match got {
            Ok(out) => Ok(out.queue_url().unwrap_or_default().to_string()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_does_not_exist()) =>
            {
                let Some(options) = create.filter(|o| o.create) else {
                    return Err(OpenError::Missing(format!(
                        "SQS queue `{name_or_url}` does not exist (create it, or set `create = true` on the queue)"
                    )));
                };
                let dlq = match &options.dead_letter_queue {
                    Some(dlq) => Some(self.queue_url(dlq, Some(&SqsQueueOptions::plain()))?),
                    None => None,
                };
                let attributes = self
                    .declared_attributes(name_or_url, options, dlq.as_deref())
                    .map_err(OpenError::Failed)?;
                let url = self
                    .create_queue(name_or_url, attributes)
                    .map_err(OpenError::Failed)?;
                tracing::info!(queue = name_or_url, "created SQS queue");
                Ok(url)
            }
            Err(e) => Err(OpenError::Failed(format!(
                "cannot look up SQS queue `{name_or_url}`: {}",
                DisplayErrorContext(&e)
            ))),
        }
    }

    /// The attributes chore creates a declared queue with, whoever creates it (the master
    /// or `chore enqueue` with `create = true`, `chore queue create`): FIFO by its name,
    /// the queue's `timeout` as its visibility timeout, and with a dead-letter queue
    /// (`dlq_url`) and `max-attempts`, a redrive policy to it after that many receives.
    pub fn declared_attributes(
        &self,
        name: &str,
        options: &SqsQueueOptions,
        dlq_url: Option<&str>,
    ) -> Result<HashMap<QueueAttributeName, String>, String> {
        let mut attrs = HashMap::new();
        if is_fifo_name(name) {
            attrs.insert(QueueAttributeName::FifoQueue, "true".to_string());
        }
        if let Some(t) = options.visibility_timeout {
            attrs.insert(
                QueueAttributeName::VisibilityTimeout,
                t.as_secs().to_string(),
            );
        }
        if let (Some(url), Some(max)) = (dlq_url, options.max_receive_count) {
            let arn = self.queue_arn(url)?;
            let policy = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max});
            attrs.insert(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        Ok(attrs)
    }

    /// `CreateQueue` with `attributes`; its URL.
    pub fn create_queue(
        &self,
        name: &str,
        attributes: HashMap<QueueAttributeName, String>,
    ) -> Result<String, String> {
        let out = self
            .block_on(
                self.client
                    .create_queue()
                    .queue_name(name)
                    .set_attributes(Some(attributes))
                    .send(),
            )
            .map_err(|e| {
                format!(
                    "cannot create SQS queue `{name}`: {}",
                    DisplayErrorContext(&e)
                )
            })?;
        Ok(out.queue_url().unwrap_or_default().to_string())
    }

    fn queue_arn(&self, url: &str) -> Result<String, String> {
        let out = self
            .block_on(
                self.client
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::QueueArn)
                    .send(),
            )
            .map_err(|e| format!("cannot read the ARN of {url}: {}", DisplayErrorContext(&e)))?;
        out.attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| format!("{url}: SQS did not give its ARN"))
    }

    /// Publish up to ten messages in one `SendMessageBatch`; one result per message, in
    /// order: its MessageId, or why SQS refused it.
    pub fn send_batch(
        &self,
        url: &str,
        batch: &[Outgoing],
    ) -> Result<Vec<Result<String, String>>, String> {
        let entries = send_entries(batch)?;
        let out = self
            .block_on(
                self.client
                    .send_message_batch()
                    .queue_url(url)
                    .set_entries(Some(entries))
                    .send(),
            )
            .map_err(|e| format!("SendMessageBatch failed: {}", DisplayErrorContext(&e)))?;
        Ok(send_results(batch.len(), out.successful(), out.failed()))
    }

    /// Publish one tick of a periodic task in Elastic Beanstalk's form (on a FIFO queue
    /// with the task's group and the tick's deduplication id); returns its MessageId.
    pub fn send_periodic(&self, url: &str, m: &Periodic, fifo: bool) -> Result<String, String> {
        let entry = periodic_entry(m, fifo)?;
        let out = self
            .block_on(
                self.client
                    .send_message_batch()
                    .queue_url(url)
                    .entries(entry)
                    .send(),
            )
            .map_err(|e| format!("SendMessageBatch failed: {}", DisplayErrorContext(&e)))?;
        send_results(1, out.successful(), out.failed()).remove(0)
    }
}

/// A periodic message: the daemon's body and its three String attributes; on a FIFO
/// queue, group = the task (so ticks of one task stay in order) and deduplication id =
/// task and tick (so the masters that all send a tick deliver it once).
fn periodic_entry(m: &Periodic, fifo: bool) -> Result<SendMessageBatchRequestEntry, String> {
    let mut e = SendMessageBatchRequestEntry::builder()
        .id("0")
        .message_body(PERIODIC_BODY);
    for (name, value) in m.fields() {
        let attr = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .map_err(|e| e.to_string())?;
        e = e.message_attributes(name, attr);
    }
    if fifo {
        let id = fifo_id(&m.task);
        e = e
            .message_deduplication_id(format!("{id}-{}", m.tick))
            .message_group_id(id);
    }
    e.build().map_err(|e| e.to_string())
}

/// A task's FIFO group id, which also starts its deduplication ids: the name itself when
/// SQS takes it (visible ASCII, short enough to leave room for the tick within SQS's 128
/// characters), else a digest of it, the same on every master.
fn fifo_id(task: &str) -> String {
    if !task.is_empty() && task.len() <= 100 && task.bytes().all(|b| b.is_ascii_graphic()) {
        task.to_string()
    } else {
        format!("sha1-{}", sha1_smol::Sha1::from(task).digest())
    }
}

/// A queue is given by URL rather than by name: used as is, never looked up.
fn is_url(name_or_url: &str) -> bool {
    name_or_url.starts_with("http://") || name_or_url.starts_with("https://")
}

/// SQS requires a FIFO queue's name (and so its URL) to end in `.fifo`.
pub(super) fn is_fifo_name(name_or_url: &str) -> bool {
    name_or_url.ends_with(".fifo")
}

/// The request entries of one `SendMessageBatch`, each identified by its position.
fn send_entries(batch: &[Outgoing]) -> Result<Vec<SendMessageBatchRequestEntry>, String> {
    batch
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut e = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(&m.body);
            if let Some(g) = &m.group {
                e = e.message_group_id(g);
            }
            if let Some(d) = &m.dedup {
                e = e.message_deduplication_id(d);
            }
            if let Some(s) = m.delay {
                e = e.delay_seconds(s as i32);
            }
            for (name, value) in &m.attributes {
                e = e.message_attributes(name, value.clone());
            }
            e.build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// One result per message of a batch of `n`, from SQS's answer: the MessageId, SQS's
/// reason for refusing it, or "no answer" for a message SQS did not mention.
fn send_results(
    n: usize,
    successful: &[SendMessageBatchResultEntry],
    failed: &[BatchResultErrorEntry],
) -> Vec<Result<String, String>> {
    let mut results: Vec<Result<String, String>> = vec![Err("no answer from SQS".into()); n];
    for ok in successful {
        if let Some(slot) = ok
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| results.get_mut(i))
        {
            *slot = Ok(ok.message_id().to_string());
        }
    }
    for f in failed {
        if let Some(slot) = f
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| results.get_mut(i))
        {
            *slot = Err(format!("{}: {}", f.code(), f.message().unwrap_or("")));
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(id: &str, message_id: &str) -> SendMessageBatchResultEntry {
        SendMessageBatchResultEntry::builder()
            .id(id)
            .message_id(message_id)
            .md5_of_message_body("-")
            .build()
            .unwrap()
    }

    fn failed(id: &str, code: &str, message: Option<&str>) -> BatchResultErrorEntry {
        BatchResultErrorEntry::builder()
            .id(id)
            .code(code)
            .set_message(message.map(str::to_string))
            .sender_fault(true)
            .build()
            .unwrap()
    }

    #[test]
    fn a_name_is_looked_up_and_a_url_is_not() {
        assert!(is_url("https://sqs.us-east-1.amazonaws.com/1/jobs"));
        assert!(is_url("http://127.0.0.1:5000/123456789012/jobs"));
        assert!(!is_url("jobs"));
        assert!(!is_url("httpjobs"));
    }

    #[test]
    fn fifo_is_told_by_the_name() {
        assert!(is_fifo_name("orders.fifo"));
        assert!(is_fifo_name("http://h/1/orders.fifo"));
        assert!(!is_fifo_name("orders"));
        assert!(!is_fifo_name("fifo"));
    }

    #[test]
    fn entries_carry_position_body_and_only_the_options_given() {
        let batch = [
            Outgoing {
                body: "{\"a\":1}".into(),
                ..Outgoing::default()
            },
            Outgoing {
                body: "b".into(),
                group: Some("g".into()),
                dedup: Some("d".into()),
                delay: Some(900),
                attributes: vec![(
                    "n".into(),
                    MessageAttributeValue::builder()
                        .data_type("Number")
                        .string_value("7")
                        .build()
                        .unwrap(),
                )],
            },
        ];
        let e = send_entries(&batch).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].id(), e[0].message_body()), ("0", "{\"a\":1}"));
        assert_eq!(e[0].message_group_id(), None);
        assert_eq!(e[0].message_deduplication_id(), None);
        assert_eq!(e[0].delay_seconds(), None);
        assert_eq!((e[1].id(), e[1].message_body()), ("1", "b"));
        assert_eq!(e[1].message_group_id(), Some("g"));
        assert_eq!(e[1].message_deduplication_id(), Some("d"));
        assert_eq!(e[1].delay_seconds(), Some(900));
        assert_eq!(e[0].message_attributes(), None);
        let n = &e[1].message_attributes().unwrap()["n"];
        assert_eq!((n.data_type(), n.string_value()), ("Number", Some("7")));
    }

    fn tick(task: &str) -> Periodic {
        Periodic {
            task: task.into(),
            path: "/periodic_tasks".into(),
            tick: 1_795_971_600,
            scheduled_time: "2026-11-29 17:00:00 UTC".into(),
        }
    }

    #[test]
    fn a_periodic_entry_is_the_daemons_body_and_attributes() {
        let e = periodic_entry(&tick("PeriodicTaskJob"), false).unwrap();
        assert_eq!(e.message_body(), "elasticbeanstalk scheduled job");
        let attrs = e.message_attributes().unwrap();
        assert_eq!(attrs.len(), 3);
        for (name, value) in [
            ("beanstalk.sqsd.path", "/periodic_tasks"),
            ("beanstalk.sqsd.task_name", "PeriodicTaskJob"),
            ("beanstalk.sqsd.scheduled_time", "2026-11-29 17:00:00 UTC"),
        ] {
            assert_eq!(attrs[name].data_type(), "String");
            assert_eq!(attrs[name].string_value(), Some(value));
        }
        assert_eq!(e.message_group_id(), None);
        assert_eq!(e.message_deduplication_id(), None);
    }

    #[test]
    fn on_fifo_the_group_is_the_task_and_the_dedup_id_the_task_and_tick() {
        let e = periodic_entry(&tick("Cleanup::Job"), true).unwrap();
        assert_eq!(e.message_group_id(), Some("Cleanup::Job"));
        assert_eq!(
            e.message_deduplication_id(),
            Some("Cleanup::Job-1795971600")
        );
    }

    #[test]
    fn a_task_name_sqs_would_refuse_as_an_id_is_digested_the_same_everywhere() {
        let e = periodic_entry(&tick("nightly report"), true).unwrap();
        let group = e.message_group_id().unwrap();
        assert!(group.starts_with("sha1-") && group.len() == 45, "{group}");
        assert_eq!(
            e.message_deduplication_id(),
            Some(format!("{group}-1795971600").as_str())
        );
        assert_eq!(fifo_id("nightly report"), fifo_id("nightly report"));
        assert_ne!(fifo_id(&"x".repeat(101)), "x".repeat(101));
        assert_eq!(fifo_id(&"x".repeat(100)), "x".repeat(100));
    }

    #[test]
    fn results_follow_the_batch_order_whatever_the_answer_order() {
        let r = send_results(
            3,
            &[ok("2", "m2"), ok("0", "m0")],
            &[failed("1", "InvalidMessageContents", Some("bad char"))],
        );
        assert_eq!(
            r,
            vec![
                Ok("m0".to_string()),
                Err("InvalidMessageContents: bad char".to_string()),
                Ok("m2".to_string()),
            ]
        );
    }

    #[test]
    fn a_message_sqs_does_not_mention_is_reported_unanswered() {
        let r = send_results(2, &[ok("0", "m0"), ok("7", "stray"), ok("x", "bad")], &[]);
        assert_eq!(
            r,
            vec![Ok("m0".to_string()), Err("no answer from SQS".to_string())]
        );
    }

    #[test]
    fn a_refusal_without_a_message_still_names_its_code() {
        let r = send_results(1, &[], &[failed("0", "Throttled", None)]);
        assert_eq!(r, vec![Err("Throttled: ".to_string())]);
    }
}
