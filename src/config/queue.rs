//! One `[queues.NAME]` table, read and checked into a `QueueConfig`.
//!
//! The keys are those of `options::QUEUE_KEYS` (the reader has already refused any other).
//! Each value is typed and checked here, once, and a mistake names the key's own line; a
//! mistake that spans keys (no handler, a bad name) names the table's line. Every mistake in
//! the table is reported, not just the first.

use super::chorefile::{QueueTable, RawKey};
use super::error::{ConfigError, Origin};
use super::handler::handler_of;
use super::http::{http_of, is_http};
use super::options::{MAX_SECONDS, QUEUE_KEYS, SQS_MAX_TIMEOUT, SQS_MAX_WAIT};
use super::suggest;
use super::value::toml_type;
use super::{Backend, Handler, HttpTarget, QueueConfig};
use crate::backoff::Backoff;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What a queue table falls back on from the top level.
pub struct QueueDefaults<'a> {
    /// `queue-prefix`, lower-cased, and where it came from.
    pub prefix: &'a str,
    pub prefix_origin: &'a Origin,
    /// The top-level `max-attempts`.
    pub max_attempts: Option<u32>,
}

/// `queue-prefix` is the start of every queue's name, on disk a directory under the queue
/// root: it may not leave that root, whatever the backend.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.contains(['/', '\0']) || prefix.contains("..") || prefix.starts_with('.') {
        return Err(format!(
            "{prefix:?} may not contain `/`, `..` or NUL, nor start with `.`: a queue's name (prefix + name) is a directory under fs-queue-root"
        ));
    }
    Ok(())
}

/// Resolve one queue table.
pub fn resolve(t: &QueueTable, d: &QueueDefaults) -> Result<QueueConfig, Vec<ConfigError>> {
    let mut r = Reader {
        name: &t.name,
        errors: Vec::new(),
    };
    let get = |key: &str| t.keys.get(key);
    let backend = get("backend").and_then(|k| r.read(k, "backend", parse_backend));
    let backend = backend.unwrap_or(Backend::Filesystem);
    let (handler, http) = match get("handler") {
        Some(k) if is_http(&k.value) => (None, r.read(k, "handler", http_of).map(Arc::new)),
        Some(k) => (r.read(k, "handler", |_| handler_of(k, &k.origin)), None),
        None => (None, None),
    };
    let classes = get("classes").and_then(|k| r.classes(k));
    let cron_seconds = get("cron-seconds").and_then(|k| r.read(k, "cron-seconds", boolean));
    let cron = get("cron-file").and_then(|k| {
        let path = k.origin.base_dir().join(r.read(k, "cron-file", string)?);
        match super::cron::load(&path, cron_seconds.unwrap_or(false)) {
            Ok(table) => Some(Arc::new(table)),
            Err(mistakes) => {
                // One line each, as for the Chorefile's own.
                for m in mistakes {
                    r.error(k, "cron-file", m);
                }
                None
            }
        }
    });
    let timeout = get("timeout").and_then(|k| r.read(k, "timeout", |v| timeout(v, backend)));
    let backoff = get("backoff").and_then(|k| r.read(k, "backoff", Backoff::from_toml));
    let max_attempts = get("max-attempts").and_then(|k| r.read(k, "max-attempts", attempts));
    let url = get("url").and_then(|k| r.read(k, "url", string));
    let create = get("create").and_then(|k| r.read(k, "create", boolean));
    let wait = get("wait-time").and_then(|k| r.read(k, "wait-time", wait_time));
    let dlq = get("dead-letter-queue").and_then(|k| r.read(k, "dead-letter-queue", string));
    let pass = get("pass-aws-credentials").and_then(|k| r.read(k, "pass-aws-credentials", boolean));
    let memory_limit = get("memory-limit").and_then(|k| r.read(k, "memory-limit", memory_size));
    let on_failure = get("on-permanent-failure")
        .and_then(|k| r.read(k, "on-permanent-failure", |_| handler_of(k, &k.origin)));
    let dedupe = get("dedupe").and_then(|k| r.read(k, "dedupe", boolean));
    let dedupe_key = get("dedupe-key").and_then(|k| r.read(k, "dedupe-key", string));

    let full_name = check_place(t, d, backend, url.is_some(), &mut r);
    // A handler that failed to read, or a mistyped key, has been reported already.
    let failed = (get("handler").is_some() && handler.is_none() && http.is_none())
        || (get("classes").is_some() && classes.is_none())
        || !t.unknown.is_empty();
    let (classes, http_classes) = classes.unwrap_or_default();
    if handler.is_none()
        && http.is_none()
        && classes.is_empty()
        && http_classes.is_empty()
        && !failed
    {
        r.errors.push(ConfigError::at(
            &t.origin,
            format!("queues.{}", t.name),
            "the queue has no handler (set `handler`, or `classes` to route by job class)",
        ));
    }
    if let (Some(false), Some(_), Some(raw)) = (dedupe, &dedupe_key, get("dedupe-key")) {
        r.error(
            raw,
            "dedupe-key",
            "a dedupe key needs dedupe; remove `dedupe = false`".into(),
        );
    }
    if let (Some(_), None, Some(raw)) = (&cron, &http, get("cron-file")) {
        let m = "periodic tasks are posted over HTTP: the queue's `handler` must be an HTTP handler (`url = ...`)";
        r.error(raw, "cron-file", m.into());
    }
    if let (Some(_), Some(raw)) = (memory_limit, get("memory-limit"))
        && handler.is_none()
        && classes.is_empty()
        && !failed
    {
        let m = "memory-limit applies to command handlers; this queue has only HTTP handlers";
        r.error(raw, "memory-limit", m.into());
    }
    if !r.errors.is_empty() {
        return Err(r.errors);
    }
    Ok(QueueConfig {
        name: t.name.clone(),
        full_name,
        backend,
        handler,
        classes,
        http,
        http_classes,
        cron,
        timeout,
        backoff: backoff.unwrap_or_default(),
        max_attempts: max_attempts.or(d.max_attempts),
        url,
        sqs: crate::config::SqsQueueOptions {
            create: create.unwrap_or(false),
            wait,
            dead_letter_queue: dlq,
            visibility_timeout: timeout,
            max_receive_count: max_attempts.or(d.max_attempts),
        },
        pass_aws_credentials: pass.unwrap_or(false),
        memory_limit,
        on_permanent_failure: on_failure,
        dedupe: dedupe.unwrap_or(backend == Backend::Sqs) || dedupe_key.is_some(),
        dedupe_key,
    })
}

/// The queue's full name (prefix + name), checked for its backend, and no SQS-only key on
/// a filesystem queue.
fn check_place(
    t: &QueueTable,
    d: &QueueDefaults,
    backend: Backend,
    has_url: bool,
    r: &mut Reader,
) -> String {
    let full_name = format!("{}{}", d.prefix, t.name);
    if let Err(m) = check_name(&t.name, &full_name, backend, has_url) {
        let from = match d.prefix_origin {
            Origin::Default => String::new(),
            o => format!("; queue-prefix `{}` comes from {o}", d.prefix),
        };
        let key = format!("queues.{}", t.name);
        r.errors
            .push(ConfigError::at(&t.origin, key, format!("{m}{from}")));
    }
    if backend == Backend::Filesystem {
        for k in QUEUE_KEYS.iter().filter(|k| k.sqs_only) {
            if let Some(raw) = t.keys.get(k.key) {
                let m = "only SQS queues (backend = \"sqs\") take this key";
                r.error(raw, k.key, m.into());
            }
        }
    }
    full_name
}

/// Reads keys of one table, collecting mistakes.
struct Reader<'a> {
    name: &'a str,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    fn error(&mut self, raw: &RawKey, key: &str, message: String) {
        let key = format!("queues.{}.{key}", self.name);
        self.errors.push(ConfigError::at(&raw.origin, key, message));
    }

    fn read<T>(
        &mut self,
        raw: &RawKey,
        key: &str,
        parse: impl FnOnce(&toml::Value) -> Result<T, String>,
    ) -> Option<T> {
        parse(&raw.value).map_err(|m| self.error(raw, key, m)).ok()
    }

    /// `classes`: a table of class = handler, each on its own line; commands and HTTP
    /// handlers apart.
    #[allow(clippy::type_complexity)]
    fn classes(
        &mut self,
        raw: &RawKey,
    ) -> Option<(BTreeMap<String, Handler>, BTreeMap<String, Arc<HttpTarget>>)> {
        let Some(table) = raw.value.as_table() else {
            self.error(raw, "classes", "expected a table of class = handler".into());
            return None;
        };
        let (mut out, mut http, before) = (BTreeMap::new(), BTreeMap::new(), self.errors.len());
        for (class, value) in table {
            let origin = raw.inner.get(class).unwrap_or(&raw.origin);
            let one = RawKey {
                value: value.clone(),
                origin: origin.clone(),
                inner: BTreeMap::new(),
            };
            if is_http(value) {
                match http_of(value) {
                    Ok(t) => {
                        http.insert(class.clone(), Arc::new(t));
                    }
                    Err(m) => self.error(&one, &format!("classes.{class}"), m),
                }
                continue;
            }
            match handler_of(&one, origin) {
                Ok(h) => {
                    out.insert(class.clone(), h);
                }
                Err(m) => self.error(&one, &format!("classes.{class}"), m),
            }
        }
        (self.errors.len() == before).then_some((out, http))
    }
}

fn parse_backend(v: &toml::Value) -> Result<Backend, String> {
    match string(v)?.as_str() {
        "filesystem" | "fs" => Ok(Backend::Filesystem),
        "sqs" => Ok(Backend::Sqs),
        other => Err(format!(
            "unknown backend `{other}` (known: filesystem, sqs){}",
            suggest::hint(other, ["filesystem", "sqs"])
        )),
    }
}

fn string(v: &toml::Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("expected a string, found {}", toml_type(v)))
}

fn boolean(v: &toml::Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("expected true or false, found {}", toml_type(v)))
}

fn seconds(v: &toml::Value) -> Result<f64, String> {
    match v {
        toml::Value::Integer(i) => Ok(*i as f64),
        toml::Value::Float(x) if !x.is_nan() => Ok(*x),
        other => Err(format!(
            "expected a number of seconds, found {}",
            toml_type(other)
        )),
    }
}

fn attempts(v: &toml::Value) -> Result<u32, String> {
    match v {
        toml::Value::Integer(i) if *i >= 1 => u32::try_from(*i)
            .map_err(|_| format!("{i} is out of range: must be at most {}", u32::MAX)),
        toml::Value::Integer(i) => Err(format!("{i} is out of range: must be at least 1")),
        other => Err(format!(
            "expected a whole number, found {}",
            toml_type(other)
        )),
    }
}

/// The smallest `memory-limit`: below it even a shell cannot start.
const MIN_MEMORY_LIMIT: u64 = 16 << 20;

/// A `memory-limit`: a number of bytes, or a string with a binary unit (`"512MiB"`,
/// `"2 GiB"`; `KiB`, `MiB`, `GiB`, `TiB`), at least 16 MiB.
fn memory_size(v: &toml::Value) -> Result<u64, String> {
    let bytes = match v {
        toml::Value::Integer(i) => u64::try_from(*i).map_err(|_| format!("{i} is negative"))?,
        toml::Value::String(s) => {
            let t = s.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (n, unit) = t.split_at(split);
            let n: u64 = n
                .parse()
                .map_err(|_| format!("`{s}` is not a size such as \"512MiB\""))?;
            let shift = match unit.trim() {
                "" | "B" => 0,
                "KiB" => 10,
                "MiB" => 20,
                "GiB" => 30,
                "TiB" => 40,
                other => {
                    return Err(format!(
                        "unknown unit `{other}` in `{s}` (known: KiB, MiB, GiB, TiB)"
                    ));
                }
            };
            n.checked_mul(1 << shift)
                .ok_or_else(|| format!("`{s}` is too large"))?
        }
        other => {
            return Err(format!(
                "expected a size such as \"512MiB\" or a number of bytes, found {}",
                toml_type(other)
            ));
        }
    };
    if bytes < MIN_MEMORY_LIMIT {
        return Err(format!(
            "{bytes} bytes is too small: must be at least 16MiB"
        ));
    }
    Ok(bytes)
}

fn timeout(v: &toml::Value, backend: Backend) -> Result<Duration, String> {
    let t = seconds(v)?;
    if !(t > 0.0 && t <= MAX_SECONDS) {
        return Err(format!(
            "{t} must be more than 0 seconds and at most 30 days"
        ));
    }
    if backend == Backend::Sqs && t > SQS_MAX_TIMEOUT {
        return Err(format!(
            "{t} is beyond SQS's 12-hour visibility limit ({SQS_MAX_TIMEOUT} seconds): a message held longer is delivered again"
        ));
    }
    Ok(Duration::from_secs_f64(t))
}

fn wait_time(v: &toml::Value) -> Result<Duration, String> {
    match seconds(v)? {
        w if (0.0..=SQS_MAX_WAIT).contains(&w) => Ok(Duration::from_secs_f64(w)),
        w => Err(format!(
            "{w} is not a long-poll wait between 0 and 20 seconds"
        )),
    }
}

/// A filesystem queue's name becomes directory and file names; an SQS name must be valid
/// for SQS unless the table gives the queue's URL.
pub fn check_name(
    name: &str,
    full: &str,
    backend: Backend,
    has_url: bool,
) -> Result<(), &'static str> {
    let odd = |c: char| c == '.' || c == '/' || c.is_whitespace() || c.is_control();
    match backend {
        Backend::Filesystem if name.is_empty() || full.contains(odd) || full.starts_with('-') => {
            Err(
                "a filesystem queue name (with its queue-prefix) may not be empty, start with `-`, or contain `.`, `/`, spaces or control characters (it names a directory, and Ruby Chore's file names split on `.`)",
            )
        }
        Backend::Sqs if !has_url => {
            let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            let stem = name.strip_suffix(".fifo").unwrap_or(name);
            if stem.is_empty() || !stem.chars().all(ok) || name.len() > 80 {
                Err(
                    "an SQS queue name has 1 to 80 letters, digits, `-` or `_` (and may end in `.fifo`); or give its `url`",
                )
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HandlerMode;
    use std::path::Path;

    fn table(text: &str) -> QueueTable {
        let path = Path::new("/srv/app/Chorefile");
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let file =
            std::env::temp_dir().join(format!("chore-queue-test-{}-{n}", std::process::id()));
        std::fs::write(&file, text).unwrap();
        let (mut layer, errors) = super::super::chorefile::read(&file);
        assert!(errors.is_empty(), "{errors:?}");
        let mut t = layer.queues.remove(0);
        // Pretend the file lives elsewhere, to see the handler directory follow it.
        let moved = |o: &mut Origin| {
            if let Origin::File { line, .. } = *o {
                *o = Origin::file(path, line);
            }
        };
        for k in t.keys.values_mut() {
            moved(&mut k.origin);
            k.inner.values_mut().for_each(moved);
        }
        t
    }

    fn defaults() -> QueueDefaults<'static> {
        QueueDefaults {
            prefix: "",
            prefix_origin: &Origin::Default,
            max_attempts: Some(7),
        }
    }

    fn errors(text: &str, d: &QueueDefaults) -> Vec<String> {
        resolve(&table(text), d)
            .unwrap_err()
            .iter()
            .map(|e| format!("{}: {}", e.line().unwrap_or(0), e.message))
            .collect()
    }

    #[test]
    fn a_queue_is_read_with_defaults() {
        let q = resolve(
            &table("[queues.mail]\nhandler = [\"./send\", \"-f\"]\nclasses.Welcome = { command = [\"w\"], mode = \"batch\", dir = \"bin\" }\n"),
            &defaults(),
        )
        .unwrap();
        assert_eq!(q.full_name, "mail");
        assert_eq!(q.backend, Backend::Filesystem);
        let h = q.handler.unwrap();
        assert_eq!(h.command, ["./send", "-f"]);
        assert_eq!(h.dir.as_deref(), Some(Path::new("/srv/app")));
        let w = &q.classes["Welcome"];
        assert_eq!(
            (w.mode, w.dir.as_deref()),
            (HandlerMode::Batch, Some(Path::new("/srv/app/bin")))
        );
        assert_eq!(q.max_attempts, Some(7));
        assert!(!q.dedupe);
    }

    #[test]
    fn every_mistake_in_a_table_is_reported_on_its_line() {
        let text = "[queues.a]\nhandler = \"x y\"\ntimeout = \"soon\"\nbackoff = \"attempt ^^ 2\"\nmax-attempts = 0\nurl = \"http://x\"\n";
        let got = errors(text, &defaults());
        assert_eq!(got.len(), 5, "{got:#?}");
        assert!(
            got[0].starts_with("2: expected the command as a list of strings"),
            "{got:#?}"
        );
        assert_eq!(got[1], "3: expected a number of seconds, found a string");
        assert!(
            got[2].starts_with("4: invalid backoff expression"),
            "{got:#?}"
        );
        assert_eq!(got[3], "5: 0 is out of range: must be at least 1");
        assert_eq!(
            got[4],
            "6: only SQS queues (backend = \"sqs\") take this key"
        );
    }

    #[test]
    fn an_sqs_timeout_beyond_twelve_hours_is_refused() {
        let text = "[queues.a]\nbackend = \"sqs\"\nhandler = [\"x\"]\ntimeout = 43201\n";
        let got = errors(text, &defaults());
        assert!(
            got[0].starts_with("4: 43201 is beyond SQS's 12-hour visibility limit"),
            "{got:?}"
        );
        let fs = "[queues.a]\nhandler = [\"x\"]\ntimeout = 86400\n";
        assert!(resolve(&table(fs), &defaults()).is_ok());
    }

    #[test]
    fn cross_key_mistakes_name_the_table_and_the_prefix_origin() {
        let got = errors("\n[queues.a]\ntimeout = 5\n", &defaults());
        assert_eq!(
            got,
            ["2: the queue has no handler (set `handler`, or `classes` to route by job class)"]
        );
        let d = QueueDefaults {
            prefix: "a.",
            prefix_origin: &Origin::CommandLine,
            ..defaults()
        };
        let got = errors("[queues.a]\nhandler = [\"x\"]\n", &d);
        assert!(
            got[0].ends_with("; queue-prefix `a.` comes from command line"),
            "{got:?}"
        );
        let got = errors(
            "[queues.a]\nhandler = { command = [\"x\"], mod = 1 }\n",
            &defaults(),
        );
        assert_eq!(
            got,
            [
                "2: unknown handler key `mod` (did you mean `mode`?) (known: command, mode, env, dir, kind, max-batches, max-age, max-memory, boot-timeout)"
            ]
        );
    }

    #[test]
    fn memory_limits_are_sizes_of_at_least_16_mib() {
        let size = |s: &str| memory_size(&s.parse::<toml::Table>().unwrap()["v"]);
        assert_eq!(size("v = \"512MiB\""), Ok(512 << 20));
        assert_eq!(size("v = \"2 GiB\""), Ok(2 << 30));
        assert_eq!(size("v = 33554432"), Ok(32 << 20));
        for bad in [
            "v = \"1MiB\"",
            "v = \"12MB\"",
            "v = \"lots\"",
            "v = -1",
            "v = 1.5",
            "v = \"99999999999TiB\"",
        ] {
            assert!(size(bad).is_err(), "{bad}");
        }
        assert!(
            size("v = \"12MB\"")
                .unwrap_err()
                .contains("known: KiB, MiB, GiB, TiB")
        );
    }

    #[test]
    fn memory_limit_is_refused_where_no_handler_process_runs() {
        let http = "[queues.a]\nhandler = \"http://127.0.0.1:3000/\"\nmemory-limit = \"64MiB\"\n";
        let got = resolve(&table(http), &defaults()).unwrap_err();
        assert!(got[0].to_string().contains("only HTTP handlers"), "{got:?}");
        let preload = "[queues.a]\nhandler = { command = [\"x\"], mode = \"preload\" }\nmemory-limit = \"64MiB\"\n";
        let q = resolve(&table(preload), &defaults()).unwrap();
        assert_eq!(
            q.memory_limit,
            Some(64 << 20),
            "a preloaded handler's child sets it"
        );
    }

    #[test]
    fn every_documented_key_is_read() {
        let cron = std::env::temp_dir().join(format!("chore-cron-{}.yaml", std::process::id()));
        let task = "version: 1\ncron:\n - name: t\n   url: /t\n   schedule: \"*/5 * * * * *\"\n";
        std::fs::write(&cron, task).unwrap();
        let cron = format!("{:?}", cron.display().to_string());
        let values = [
            ("backend", "\"sqs\""),
            ("handler", "\"http://127.0.0.1:3000/\""),
            ("classes", "{ A = [\"y\"], B = \"http://127.0.0.1:3001/\" }"),
            ("timeout", "30"),
            ("backoff", "[1, 2]"),
            ("max-attempts", "3"),
            ("on-permanent-failure", "[\"z\"]"),
            ("dedupe", "true"),
            ("dedupe-key", "\"k\""),
            ("pass-aws-credentials", "true"),
            ("memory-limit", "\"512MiB\""),
            ("cron-file", &cron),
            ("cron-seconds", "true"),
            ("url", "\"http://q\""),
            ("create", "true"),
            ("wait-time", "5"),
            ("dead-letter-queue", "\"dlq\""),
        ];
        assert_eq!(values.len(), QUEUE_KEYS.len());
        let text: String = values.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let q = resolve(&table(&format!("[queues.a]\n{text}")), &defaults()).unwrap();
        assert_eq!(
            (q.backend, q.max_attempts, q.dedupe_key.as_deref()),
            (Backend::Sqs, Some(3), Some("k"))
        );
        assert_eq!(q.memory_limit, Some(512 << 20));
        assert!(q.sqs.create && q.pass_aws_credentials && q.on_permanent_failure.is_some());
        assert!(
            q.http.is_some() && q.http_classes.contains_key("B") && q.classes.contains_key("A")
        );
        assert_eq!(q.cron.map(|c| c.tasks.len()), Some(1));
    }
}
