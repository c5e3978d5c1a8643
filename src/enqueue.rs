//! `chore enqueue QUEUE [BODY | -]`: publish messages, in Ruby Chore's exact file format
//! for filesystem queues (reference §8.2–8.3), one message per JSON line on stdin for many.

use crate::cli::EnqueueArgs;
use crate::config::{self, Backend, Config};
use crate::consumer::classify;
use crate::queue::filesystem::FilesystemQueue;
use std::io::{self, BufRead, Write};

/// Run the command; returns the exit status (2: bad usage or configuration, 1: failure).
pub fn run(args: EnqueueArgs) -> i32 {
    let config = match config::load(args.flags.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chore: {e}");
            return 2;
        }
    };
    let queue = match open(&config, &args.queue) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("chore enqueue: {e}");
            return 2;
        }
    };
    let mut published = 0usize;
    let mut out = io::stdout().lock();
    let mut publish = |raw: &str, line: Option<usize>| -> Result<(), String> {
        let at = line.map(|n| format!("line {n}: ")).unwrap_or_default();
        let body = wrap(raw, args.class.as_deref()).map_err(|e| format!("{at}{e}"))?;
        let class = classify(&body).map_err(|e| format!("{at}the body is not valid JSON: {e}"))?;
        let name = queue
            .publish(class.as_deref(), &body)
            .map_err(|e| format!("{at}{e}"))?;
        let _ = writeln!(out, "{name}");
        published += 1;
        Ok(())
    };
    let result = match args.body.as_deref() {
        Some(body) if body != "-" => publish(body, None),
        _ => io::stdin()
            .lock()
            .lines()
            .enumerate()
            .try_for_each(|(n, line)| {
                let line = line.map_err(|e| format!("reading standard input: {e}"))?;
                if line.trim().is_empty() {
                    Ok(())
                } else {
                    publish(&line, Some(n + 1))
                }
            }),
    };
    match result {
        Ok(()) => {
            eprintln!(
                "enqueued {published} message(s) to {}",
                queue.dir().display()
            );
            0
        }
        Err(e) => {
            eprintln!("chore enqueue: {e} ({published} message(s) enqueued before it)");
            1
        }
    }
}

/// With `--class`, the body is the arguments: build Ruby Chore's `{"class":…,"args":…}`.
fn wrap(raw: &str, class: Option<&str>) -> Result<String, String> {
    let Some(class) = class else {
        return Ok(raw.trim().to_string());
    };
    let args: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("the arguments are not valid JSON: {e}"))?;
    let args = match args {
        serde_json::Value::Array(a) => a,
        other => vec![other],
    };
    // Ruby Chore writes the class first, then the args, compact (reference §2.1).
    let mut body = String::from("{\"class\":");
    body.push_str(&serde_json::to_string(class).expect("a string serialises"));
    body.push_str(",\"args\":");
    body.push_str(&serde_json::to_string(&args).expect("JSON serialises"));
    body.push('}');
    Ok(body)
}

fn open(config: &Config, name: &str) -> Result<FilesystemQueue, String> {
    // A declared queue brings its backend and timeout; any other name is a filesystem
    // queue under the root, so a producer needs no Chorefile.
    let (full_name, timeout) = match config.queue(name) {
        Some(q) => match q.backend {
            Backend::Filesystem => (q.full_name.clone(), q.timeout),
        },
        None => {
            if name.is_empty() || name.contains(['.', '/']) {
                return Err(format!("`{name}` is not a valid queue name"));
            }
            (format!("{}{name}", config.queue_prefix), None)
        }
    };
    FilesystemQueue::open(
        &config.fs_queue_root,
        &full_name,
        timeout,
        config.default_queue_timeout,
        config.fs_claim_lease,
        config.consumer_sleep_interval,
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wraps_like_ruby_chore() {
        assert_eq!(
            wrap("[1,\"a\"]", Some("Foo::Bar")).unwrap(),
            r#"{"class":"Foo::Bar","args":[1,"a"]}"#
        );
        assert_eq!(
            wrap("{\"k\":1}", Some("X")).unwrap(),
            r#"{"class":"X","args":[{"k":1}]}"#
        );
        assert_eq!(wrap(" {\"a\":1} ", None).unwrap(), r#"{"a":1}"#);
    }
}
