//! Logs an operator can use: handlers' output as log events (JSON logs stay JSON, line by
//! line, whatever a handler prints), and one line per settled message, followed by the id
//! `chore enqueue` printed.

use crate::harness::*;
use serde_json::Value;

/// Every line of the master's log, each of which must be one JSON object.
fn json_lines(master: &Master) -> Vec<Value> {
    master
        .log_text()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}"))
        })
        .collect()
}

/// The events a handler printed (their `message` is the line).
fn printed<'a>(lines: &'a [Value], needle: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["message"].as_str().is_some_and(|m| m.contains(needle)))
        .filter(|v| v.get("pid").is_some() && v.get("ids").is_some())
        .collect()
}

/// Output that would break a JSON log if written raw: a partial last line, bytes that are
/// not UTF-8, a line far longer than one event holds, an empty line, a carriage return.
const NOISE: &str = "printf 'to stdout\\n'\n\
     printf '\\377\\376 garbage\\r\\n' >&2\n\
     head -c 40000 /dev/zero | tr '\\0' x >&2; echo >&2\n\
     printf '\\n' >&2\n\
     printf 'partial, no newline' >&2\n";

#[test]
fn json_logs_stay_json_while_per_message_handlers_print_anything() {
    let sb = Sandbox::new("steer-logs-message");
    let h = sb.script("noisy.sh", &format!("cat > /dev/null\n{NOISE}"));
    sb.chorefile(&format!(
        "log-format = \"json\"\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let id = sb.enqueue_id("jobs", "[1]");
    let mut master = sb.start(&[]);
    master.wait_log("partial, no newline");
    master.wait_log("\"completed\"");
    assert_eq!(master.stop().code(), Some(0));
    let lines = json_lines(&master);
    for needle in ["to stdout", "garbage", "partial, no newline"] {
        let found = printed(&lines, needle);
        assert_eq!(found.len(), 1, "{needle}: {found:?}");
        let v = found[0];
        assert_eq!(v["queue"], "jobs");
        assert_eq!(v["ids"], id.as_str());
        assert!(v["pid"].as_u64().is_some_and(|p| p > 1), "{v}");
    }
    let garbage = printed(&lines, "garbage")[0]["message"].as_str().unwrap();
    assert_eq!(garbage, "\u{fffd}\u{fffd} garbage", "escaped, the \\r gone");
    let long = printed(&lines, "xxxxxxxx");
    assert_eq!(long.len(), 3, "40000 bytes in events of at most 16 KiB");
    let total: usize = long
        .iter()
        .map(|v| v["message"].as_str().unwrap().len())
        .sum();
    assert_eq!(total, 40000, "nothing of the long line lost");
}

#[test]
fn json_logs_stay_json_while_batch_handlers_print_anything() {
    let sb = Sandbox::new("steer-logs-batch");
    let h = sb.ok_batch_handler("batch.sh", NOISE, "echo \"not a result for $id\"");
    sb.chorefile(&format!(
        "log-format = \"json\"\nbatch-size = 2\n\
         [queues.jobs]\nhandler = {{ command = [{h:?}], mode = \"batch\" }}\n"
    ));
    let a = sb.enqueue_id("jobs", "[1]");
    let b = sb.enqueue_id("jobs", "[2]");
    let mut master = sb.start(&[]);
    master.wait_log("partial, no newline");
    master.wait("both completed", || {
        master
            .log_text()
            .matches("\"outcome\":\"completed\"")
            .count()
            == 2
    });
    assert_eq!(master.stop().code(), Some(0));
    let lines = json_lines(&master);
    let not_results = printed(&lines, "not a result for");
    assert_eq!(not_results.len(), 2, "{not_results:?}");
    let partial = printed(&lines, "partial, no newline");
    assert_eq!(partial.len(), 1);
    let ids = partial[0]["ids"].as_str().unwrap();
    assert!(ids.contains(&a) && ids.contains(&b), "{ids}");
    assert_eq!(printed(&lines, "garbage").len(), 1);
}

/// What a batch handler prints on stdout that is not a result is logged like its stderr:
/// a long line in events of at most 16 KiB (the worker holds at most 1 MiB of a line),
/// control characters escaped, not written raw into the log.
#[test]
fn a_batch_handlers_other_stdout_is_logged_in_bounded_printable_events() {
    let sb = Sandbox::new("steer-logs-stdout");
    let before = "head -c 3000000 /dev/zero | tr '\\0' x; echo
                  printf 'esc \\033[31m red\\n'";
    let h = sb.ok_batch_handler("batch.sh", before, "");
    sb.chorefile(&format!(
        "log-format = \"json\"\n[queues.jobs]\nhandler = {{ command = [{h:?}], mode = \"batch\" }}\n"
    ));
    sb.enqueue_id("jobs", "[1]");
    let mut master = sb.start(&[]);
    master.wait_log("\"outcome\":\"completed\"");
    assert_eq!(master.stop().code(), Some(0));
    let lines = json_lines(&master);
    let long = printed(&lines, "xxxxxxxx");
    let sizes: Vec<usize> = long
        .iter()
        .map(|v| v["message"].as_str().unwrap().len())
        .collect();
    assert!(sizes.iter().all(|&n| n <= 16 * 1024), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 3_000_000, "nothing lost");
    let esc = printed(&lines, "red");
    assert_eq!(esc.len(), 1);
    assert_eq!(esc[0]["message"], "esc \\u{1b}[31m red");
}

#[test]
fn a_batch_handler_flooding_its_stderr_before_reading_is_not_stuck() {
    // 300 kB on stderr before it reads a line: far more than a pipe holds, so the handler
    // waits on its stderr until the worker reads it, while the worker feeds its stdin and
    // waits for its results. Every line is in the log, and each message completes.
    let sb = Sandbox::new("steer-logs-flood");
    let h = sb.ok_batch_handler(
        "batch.sh",
        "awk 'BEGIN { for (i = 0; i < 3000; i++) printf \"flood line %d %080d\\n\", i, 0 }' >&2",
        "",
    );
    sb.chorefile(&format!(
        "batch-size = 3\n[queues.jobs]\nhandler = {{ command = [{h:?}], mode = \"batch\" }}\n"
    ));
    for i in 0..3 {
        sb.enqueue("jobs", &format!("[{i}]"));
    }
    let mut master = sb.start(&[]);
    master.wait("all three completed", || {
        master.log_text().matches("completed").count() >= 3
    });
    master.wait_log("flood line 2999 ");
    assert_eq!(master.stop().code(), Some(0));
    assert_eq!(master.log_text().matches("flood line ").count(), 3000);
}

#[test]
fn each_settled_message_has_a_line_with_the_id_enqueue_printed() {
    let sb = Sandbox::new("steer-logs-fate");
    let h = sb.script(
        "job.sh",
        "body=$(cat)\ncase \"$body\" in *bad*) exit 65 ;; *again*) exit 75 ;; esac",
    );
    sb.chorefile(&format!(
        "log-format = \"json\"\n[queues.jobs]\nhandler = [{h:?}]\nbackoff = \"3600\"\n"
    ));
    let ok = sb.enqueue_id("jobs", "[\"good\"]");
    let bad = sb.enqueue_id("jobs", "[\"bad\"]");
    let again = sb.enqueue_id("jobs", "[\"again\"]");
    let mut master = sb.start(&[]);
    master.wait("three settlements", || {
        let t = master.log_text();
        t.contains("\"completed\"") && t.contains("dead-lettered") && t.contains("will retry")
    });
    assert_eq!(master.stop().code(), Some(0));
    let lines = json_lines(&master);
    let fate = |id: &str| -> &Value {
        let found: Vec<&Value> = lines
            .iter()
            .filter(|v| v["id"] == id && v.get("outcome").is_some())
            .collect();
        assert_eq!(found.len(), 1, "one settlement line for {id}: {found:?}");
        found[0]
    };
    let v = fate(&ok);
    assert_eq!(
        (v["outcome"].as_str(), v["level"].as_str()),
        (Some("completed"), Some("INFO"))
    );
    assert_eq!(
        (v["queue"].as_str(), v["attempt"].as_u64()),
        (Some("jobs"), Some(1))
    );
    assert!(v["secs"].as_f64().is_some_and(|s| s >= 0.0));
    let v = fate(&bad);
    assert_eq!(v["outcome"], "dead-letter");
    assert!(v["reason"].as_str().unwrap().contains("exit 65"), "{v}");
    let v = fate(&again);
    assert_eq!(v["outcome"], "retry");
    assert!(v["error"].as_str().unwrap().contains("exit 75"), "{v}");
}

#[test]
fn log_settlements_false_keeps_only_failures() {
    let sb = Sandbox::new("steer-logs-fate-off");
    let h = sb.script(
        "job.sh",
        "body=$(cat)\ncase \"$body\" in *bad*) exit 65 ;; esac",
    );
    sb.chorefile(&format!(
        "log-format = \"json\"\nlog-settlements = false\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let ok = sb.enqueue_id("jobs", "[\"good\"]");
    let bad = sb.enqueue_id("jobs", "[\"bad\"]");
    let mut master = sb.start(&[]);
    master.wait("both settled", || {
        sb.queue("jobs").dead_letters() == 1 && sb.queue("jobs").is_idle()
    });
    master.wait_log("dead-lettered");
    assert_eq!(master.stop().code(), Some(0));
    let lines = json_lines(&master);
    assert!(
        !lines
            .iter()
            .any(|v| v["id"] == ok.as_str() && v.get("outcome").is_some())
    );
    assert!(
        lines
            .iter()
            .any(|v| v["id"] == bad.as_str() && v["outcome"] == "dead-letter")
    );
    // Other info lines are still there.
    assert!(lines.iter().any(|v| v["message"] == "worker started"));
}

#[test]
fn json_logs_stay_json_while_preloaded_children_print() {
    // The Python preloader of examples/preload/, its app printing on stderr.
    let sb = Sandbox::new("steer-logs-preload");
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/preload");
    for f in ["app.py", "preloader.py"] {
        std::fs::copy(example.join(f), sb.file(f)).unwrap();
    }
    sb.chorefile(
        "log-format = \"json\"\nbatch-size = 10\n[queues.work]\n\
         handler = { command = [\"python3\", \"preloader.py\"], mode = \"preload\" }\n",
    );
    let names = sb.enqueue_lines(&["work", "--class", "Greet", "[\"ada\"]"], None, &[]);
    let id = id_of(&names[0]);
    let mut master = sb.start(&[]);
    master.wait_log("app.py: hello, ada");
    master.wait_log("\"outcome\":\"completed\"");
    assert_eq!(master.stop().code(), Some(0));
    let lines = json_lines(&master);
    let hello = printed(&lines, "app.py: hello, ada");
    assert_eq!(hello.len(), 1, "{hello:?}");
    assert_eq!(hello[0]["ids"], id.as_str());
    assert_eq!(hello[0]["queue"], "work");
}

#[test]
fn what_handlers_print_is_logged_at_any_log_level() {
    let sb = Sandbox::new("steer-logs-level");
    let h = sb.script("job.sh", "cat > /dev/null\necho 'traceback: it broke' >&2");
    sb.chorefile(&format!(
        "log-level = \"error\"\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    sb.enqueue_id("jobs", "[1]");
    let mut master = sb.start(&[]);
    master.wait("the job", || sb.queue("jobs").is_idle());
    master.wait_log("traceback: it broke");
    assert_eq!(master.stop().code(), Some(0));
    assert!(
        !master.log_text().contains("worker started"),
        "info stays off"
    );
}

#[test]
fn a_handler_whose_leftover_child_holds_its_output_is_not_waited_for() {
    // The handler exits at once; what it started in the background keeps its output open
    // for a minute. The verdict must not wait for it, and what it printed before is logged.
    let sb = Sandbox::new("steer-logs-leftover");
    let h = sb.script(
        "job.sh",
        "cat > /dev/null\necho 'before the background'\n(sleep 60; echo never) &\nexit 0",
    );
    sb.chorefile(&format!("[queues.jobs]\nhandler = [{h:?}]\n"));
    let id = sb.enqueue_id("jobs", "[1]");
    let mut master = sb.start(&[]);
    master.wait("the job settled", || sb.queue("jobs").is_idle());
    master.wait_log("before the background");
    master.wait("its worker gone", || master.workers().is_empty());
    let log = master.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("completed") && l.contains(&id)),
        "{log}"
    );
    assert!(!log.contains("never"));
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn json_logs_stay_json_while_permanent_failure_hooks_print() {
    let sb = Sandbox::new("steer-logs-hook");
    let hook = sb.script("hook.sh", &format!("cat > /dev/null\n{NOISE}"));
    sb.chorefile(&format!(
        "log-format = \"json\"\n[queues.jobs]\nhandler = [\"false\"]\nmax-attempts = 1\n\
         on-permanent-failure = [{hook:?}]\n"
    ));
    let id = sb.enqueue_id("jobs", "[1]");
    let mut master = sb.start(&[]);
    master.wait_log("partial, no newline");
    assert_eq!(master.stop().code(), Some(0));
    let lines = json_lines(&master);
    for needle in ["garbage", "partial, no newline"] {
        let found = printed(&lines, needle);
        assert_eq!(found.len(), 1, "{needle}: {found:?}");
        assert_eq!(found[0]["queue"], "jobs");
        assert_eq!(found[0]["ids"], id.as_str());
    }
}
