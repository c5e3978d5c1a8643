//! Fixes made after a code review: each test pins one of them on the real binary.
//!
//! (The FIFO batch-handler test lives in `sqs.rs`, beside its moto client; TTIN's
//! `status: dedupe` line during an SQS run is covered in `dedupe.rs`.)

use crate::harness::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// `chore -c Chorefile EXTRA…` and `chore check-config -c Chorefile EXTRA…` on `text`
/// (written as given): both must exit 2 with the same single line on stderr, nothing on
/// stdout, and no queue created. Returns the line.
fn rejected(sb: &Sandbox, text: &str, extra: &[&str]) -> String {
    let cf = sb.write("Chorefile", text);
    let mut args = vec!["-c", cf.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = sb.run(&args);
    let line = one_line_exit_2(&out, &args);
    assert!(
        !sb.root().exists() && !sb.file("chore-queues").exists(),
        "queues were created although the configuration was rejected"
    );
    let mut check = vec!["check-config"];
    check.extend_from_slice(&args);
    let out = sb.run(&check);
    assert_eq!(one_line_exit_2(&out, &check), line, "check-config agrees");
    line
}

/// `chore check-config ARGS` must succeed: its stdout.
fn check_ok(sb: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["check-config"];
    all.extend_from_slice(args);
    sb.run_ok(&all, None)
}

// ---------------------------------------------------------------------------------------
// 1. A queue-prefix with `.` or `/` cannot name a filesystem queue.

#[test]
fn review_a_queue_prefix_with_a_dot_or_slash_rejects_a_filesystem_queue() {
    let sb = Sandbox::new("rv-prefix");
    let p = sb.preamble();
    // A prefix with `/` is refused on its own line, naming `queue-prefix`, before any queue
    // is looked at (config_errors::a_queue_prefix_that_leaves_the_queue_root_is_refused).
    for prefix in ["a.", "b.c"] {
        // Line 3: the prefix; line 4: the queue's table, which the error points at.
        let text = format!("{p}queue-prefix = {prefix:?}\n[queues.jobs]\nhandler = [\"true\"]\n");
        let line = rejected(&sb, &text, &[]);
        assert!(
            line.contains("Chorefile:4: key `queues.jobs`"),
            "prefix {prefix:?}: {line}"
        );
        assert!(
            line.contains("with its queue-prefix") && line.contains("may not"),
            "prefix {prefix:?}: {line}"
        );
        // The same prefix given on the command line.
        let text = format!("{p}[queues.jobs]\nhandler = [\"true\"]\n");
        let line = rejected(&sb, &text, &["--queue-prefix", prefix]);
        assert!(
            line.contains("key `queues.jobs`") && line.contains("with its queue-prefix"),
            "--queue-prefix {prefix:?}: {line}"
        );
    }
    // A prefix without them is fine, and is part of the full name.
    let cf = sb.chorefile("queue-prefix = \"Staging_\"\n[queues.jobs]\nhandler = [\"true\"]\n");
    let out = check_ok(&sb, &["-c", cf.to_str().unwrap()]);
    assert!(out.contains("queue jobs (staging_jobs)"), "{out}");
}

// ---------------------------------------------------------------------------------------
// 2. A batch handler's non-UTF-8 output line does not stop chore reading its results.

#[test]
fn review_a_non_utf8_line_from_a_batch_handler_does_not_lose_its_results() {
    let sb = Sandbox::new("rv-lossy");
    let h = sb.ok_batch_handler(
        "batch.sh",
        "printf '\\377\\376 not UTF-8\\n'",
        "echo \"$id $attempt\" >> seen.txt",
    );
    sb.chorefile(&format!(
        "batch-size = 10\nbatch-timeout = 1\nstrict-batching = true\n\
         [queues.jobs]\nhandler = {{ command = [{h:?}], mode = \"batch\" }}\nbackoff = [1]\n"
    ));
    let ids: Vec<String> = (0..3)
        .map(|i| sb.enqueue_id("jobs", &format!("{{\"n\":{i}}}")))
        .collect();
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    master.wait("all three settled", || {
        q.is_idle() && sb.lines("seen.txt").len() >= 3
    });
    let mut seen: Vec<String> = sb.lines("seen.txt");
    seen.sort();
    let mut want: Vec<String> = ids.iter().map(|id| format!("{id} 1")).collect();
    want.sort();
    assert_eq!(
        seen, want,
        "every message ran once, in one batch, and none was retried"
    );
    assert!(q.dead().is_empty(), "{:?}", q.dead());
    assert!(
        !master.log_text().contains("without a result"),
        "{}",
        master.log_text()
    );
    assert_eq!(master.stop().code(), Some(0));
}

// ---------------------------------------------------------------------------------------
// 3. Durations are bounded at 30 days.

#[test]
fn review_timeouts_beyond_30_days_are_rejected_with_file_line_and_key() {
    let sb = Sandbox::new("rv-30-days");
    let p = sb.preamble();
    let line = rejected(
        &sb,
        &format!("{p}[queues.a]\nhandler = [\"true\"]\ntimeout = 1e18\n"),
        &[],
    );
    assert!(
        line.contains("Chorefile:5: key `queues.a.timeout`"),
        "{line}"
    );
    assert!(line.contains("at most 30 days"), "{line}");
    let line = rejected(
        &sb,
        &format!("{p}shutdown-timeout = 1e12\n[queues.a]\nhandler = [\"true\"]\n"),
        &[],
    );
    assert!(
        line.contains("Chorefile:3: key `shutdown-timeout`"),
        "{line}"
    );
    assert!(line.contains("more than 30 days"), "{line}");
}

#[test]
fn review_a_huge_config_timeout_file_is_clamped_not_a_panic() {
    let sb = Sandbox::new("rv-huge-timeout");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.rq]\nhandler = [{h:?}]\n"));
    // u64::MAX seconds: parses, and must be clamped to 30 days.
    sb.write("queues/rq/config/timeout", "18446744073709551615\n");
    let mut master = sb.start(&[]);
    master.wait_log("chore master started");
    let id = sb.enqueue_id("rq", "{\"n\":1}");
    let q = sb.queue("rq");
    master.wait("the job to run and complete", || {
        sb.runs("runs.txt").len() == 1 && q.is_idle()
    });
    assert_eq!(sb.runs("runs.txt")[0].id, id);
    assert!(q.dead().is_empty(), "{:?}", q.dead());
    assert!(master.running());
    // The one-message batch's deadline is the clamped timeout: 30 days.
    let log = master.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("worker started") && l.contains("deadline_secs=2592000")),
        "the timeout was not clamped to 30 days (2592000 s):\n{log}"
    );
    let status = master.stop();
    let log = master.log_text();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert!(!log.contains("panicked"), "log:\n{log}");
}

// ---------------------------------------------------------------------------------------
// 4. A dedupe key without dedupe.

#[test]
fn review_a_dedupe_key_with_dedupe_off_is_rejected() {
    let sb = Sandbox::new("rv-dedupe-key");
    let text = format!(
        "{}[queues.orders]\nhandler = [\"true\"]\ndedupe = false\ndedupe-key = \"k\"\n",
        sb.preamble()
    );
    let line = rejected(&sb, &text, &[]);
    assert!(line.contains("Chorefile:"), "{line}");
    assert!(line.contains("key `queues.orders.dedupe-key`"), "{line}");
    assert!(line.contains("dedupe = false"), "{line}");
}

// ---------------------------------------------------------------------------------------
// 5. A filesystem message over 64 MiB is dead-lettered unread.

/// Removes the big files however the test ends (a failing test keeps its sandbox).
struct BigFiles(QueueDir);

impl Drop for BigFiles {
    fn drop(&mut self) {
        for sub in ["new", "inprogress", "dead"] {
            if let Ok(rd) = std::fs::read_dir(self.0.path.join(sub)) {
                for e in rd.flatten() {
                    if e.metadata().is_ok_and(|m| m.len() > 1024 * 1024) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }
}

#[test]
fn review_a_body_over_64_mib_is_dead_lettered_unread() {
    let sb = Sandbox::new("rv-64mib");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.jobs]\nhandler = [{h:?}]\n"));
    let q = sb.queue("jobs");
    let guard = BigFiles(sb.queue("jobs"));
    // 65 MiB of valid JSON.
    let mut body = Vec::with_capacity(65 * 1024 * 1024 + 16);
    body.extend_from_slice(b"{\"x\":\"");
    body.resize(65 * 1024 * 1024, b'a');
    body.extend_from_slice(b"\"}");
    let size = body.len();
    let big = "jobs-Job-4242-20240101-000000-000001";
    q.put("new", &format!("{big}.0.job"), &body);
    drop(body);
    let mut master = sb.start(&[]);
    master.wait("the big message dead-lettered", || q.dead_letters() == 1);
    assert_eq!(
        q.dead(),
        vec![format!("{big}.1.job"), format!("{big}.1.job.reason")]
    );
    let meta = std::fs::metadata(q.path.join("dead").join(format!("{big}.1.job"))).unwrap();
    assert_eq!(meta.len() as usize, size, "moved whole, as it was");
    let reason = q.read("dead", &format!("{big}.1.job.reason"));
    assert!(reason.contains("64 MiB"), "{reason}");
    assert!(reason.contains(&size.to_string()), "{reason}");
    assert!(sb.runs("runs.txt").is_empty(), "the big body never ran");
    assert!(master.running(), "the master keeps running");
    drop(guard);
    // A normal job after it.
    let id = sb.enqueue_id("jobs", "{\"after\":1}");
    master.wait("the next job to run", || sb.runs("runs.txt").len() == 1);
    assert_eq!(sb.runs("runs.txt")[0].id, id);
    master.wait("the queue to empty", || q.is_idle());
    assert!(master.log_text().contains("larger than the 64 MiB limit"));
    assert_eq!(master.stop().code(), Some(0));
}

// ---------------------------------------------------------------------------------------
// 6. on-permanent-failure hooks hold no AWS credentials.

#[test]
fn review_permanent_failure_hooks_get_no_aws_credentials() {
    let sb = Sandbox::new("rv-hook-env");
    let h = sb.recorder("job.sh", "runs.txt", "exit 65");
    let hook = sb.script(
        "hook.sh",
        "cat > /dev/null\n\
         env | sort > \"hook-$CHORE_MESSAGE_ID.tmp\"\n\
         mv \"hook-$CHORE_MESSAGE_ID.tmp\" \"hook-$CHORE_MESSAGE_ID.env\"",
    );
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [{h:?}]\non-permanent-failure = [{hook:?}]\n"
    ));
    let q = sb.queue("jobs");
    let not_json = "jobs-Job-4242-20240101-000000-000002";
    q.put("new", &format!("{not_json}.0.job"), b"this is {not json");
    let permanent = sb.enqueue_id("jobs", "{\"doomed\":1}");
    let mut master = sb.start_with_env(
        "master",
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDFORTEST"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t-for-test"),
            ("AWS_SESSION_TOKEN", "token-for-test"),
            ("AWS_PROFILE", "profile-for-test"),
        ],
    );
    master.wait("both hooks to run", || {
        sb.file(&format!("hook-{permanent}.env")).exists()
            && sb.file(&format!("hook-{not_json}.env")).exists()
    });
    for id in [&permanent, &not_json.to_string()] {
        let env = sb.read(&format!("hook-{id}.env"));
        let vars: BTreeMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
        ] {
            assert!(
                !vars.contains_key(var),
                "{var} reached the hook for {id}:\n{env}"
            );
        }
        assert!(
            !env.contains("s3cr3t-for-test") && !env.contains("profile-for-test"),
            "{env}"
        );
        assert_eq!(vars.get("CHORE_MESSAGE_ID").copied(), Some(id.as_str()));
        assert_eq!(vars.get("CHORE_QUEUE").copied(), Some("jobs"), "{env}");
        assert!(
            vars.get("CHORE_REASON").is_some_and(|r| !r.is_empty()),
            "CHORE_REASON is set for {id}:\n{env}"
        );
    }
    let env = sb.read(&format!("hook-{not_json}.env"));
    assert!(
        env.lines()
            .any(|l| l.starts_with("CHORE_REASON=") && l.contains("not valid JSON")),
        "{env}"
    );
    // Both dead-lettered; only the JSON one ever reached its handler.
    master.wait("two dead letters", || q.dead_letters() == 2);
    let runs = sb.runs("runs.txt");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].id, permanent);
    assert_eq!(master.stop().code(), Some(0));
}

// ---------------------------------------------------------------------------------------
// 9. The command line's --except-queues replaces a Chorefile's --queues.

#[test]
fn review_command_line_except_queues_replaces_a_ruby_chorefiles_queues() {
    let sb = Sandbox::new("rv-except");
    let ruby = sb.write("Chorefile.ruby", "# Ruby Chore options\n-q a\n");
    let toml = sb.chorefile(&format!(
        "[queues.a]\nhandler = [{h:?}]\n[queues.b]\nhandler = [{h:?}]\n[queues.c]\nhandler = [{h:?}]\n",
        h = sb.recorder("job.sh", "runs.txt", "")
    ));
    let files = ["-c", ruby.to_str().unwrap(), "-c", toml.to_str().unwrap()];
    // The file alone selects a.
    let out = check_ok(&sb, &files);
    let listed = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.strip_prefix("queue "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(listed(&out), vec!["a"], "{out}");
    // -x on the command line replaces it: everything but b.
    let mut args = files.to_vec();
    args.extend(["-x", "b"]);
    let out = check_ok(&sb, &args);
    assert_eq!(listed(&out), vec!["a", "c"], "{out}");
    // And the master consumes just those.
    for q in ["a", "b", "c"] {
        sb.enqueue(q, &format!("{{\"q\":\"{q}\"}}"));
    }
    let mut master = sb.spawn_master("master", &args, &[]);
    master.wait("a and c to run", || sb.runs("runs.txt").len() >= 2);
    master.wait("a and c to be done", || {
        sb.queue("a").is_idle() && sb.queue("c").is_idle()
    });
    master.assert_for(Duration::from_millis(500), "b's job left alone", || {
        sb.runs("runs.txt").len() == 2 && sb.queue("b").new_files().len() == 1
    });
    let mut queues: Vec<String> = sb.runs("runs.txt").into_iter().map(|r| r.queue).collect();
    queues.sort();
    assert_eq!(queues, vec!["a", "c"]);
    assert_eq!(sb.queue("b").new_files().len(), 1, "b is left alone");
    assert_eq!(master.stop().code(), Some(0));
}
