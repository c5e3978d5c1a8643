//! The handler contract: per-message exit statuses and batch-mode result lines.

use crate::harness::*;
use std::collections::BTreeMap;

/// Attempts seen per message id, in order.
fn attempts_by_id(runs: &[Run]) -> BTreeMap<String, Vec<u32>> {
    let mut m: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in runs {
        m.entry(r.id.clone()).or_default().push(r.attempt);
    }
    m
}

#[test]
fn per_message_exit_statuses_mean_ok_retry_fail_and_permanent() {
    let sb = Sandbox::new("per-message");
    // First attempts end as the body says; later attempts succeed.
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "[ \"$CHORE_ATTEMPT\" = 1 ] || exit 0\n\
         case \"$body\" in\n\
           *'\"ok\"'*) exit 0 ;;\n\
           *'\"retry\"'*) exit 75 ;;\n\
           *'\"fail\"'*) echo 'boom on stderr' >&2; exit 3 ;;\n\
           *'\"permanent\"'*) exit 65 ;;\n\
         esac\nexit 99",
    );
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [{h:?}]\nbackoff = [1]\n"
    ));
    let mut master = sb.start(&[]);
    let mut ids = BTreeMap::new();
    for what in ["ok", "retry", "fail", "permanent"] {
        ids.insert(
            what,
            sb.enqueue_id("jobs", &format!("{{\"do\":\"{what}\"}}")),
        );
    }
    let q = sb.queue("jobs");
    master.wait("every message settled for good", || {
        q.is_idle() && q.dead_letters() == 1 && sb.runs("runs.txt").len() >= 6
    });
    let attempts = attempts_by_id(&sb.runs("runs.txt"));
    assert_eq!(attempts[&ids["ok"]], vec![1], "exit 0 completes");
    assert_eq!(attempts[&ids["retry"]], vec![1, 2], "exit 75 retries");
    assert_eq!(attempts[&ids["fail"]], vec![1, 2], "other exits retry");
    assert_eq!(
        attempts[&ids["permanent"]],
        vec![1],
        "exit 65 is never retried"
    );
    let dead = q.dead();
    let name = format!("{}.1.job", ids["permanent"]);
    assert_eq!(dead, vec![name.clone(), format!("{name}.reason")]);
    assert_eq!(q.read("dead", &name), r#"{"do":"permanent"}"#);
    let reason = q.read("dead", &format!("{name}.reason"));
    assert!(reason.contains("permanent"), "{reason}");
    assert!(
        master.log_text().contains("boom on stderr"),
        "handler stderr goes to the log"
    );
    assert_eq!(master.stop().code(), Some(0));
}

/// A batch handler answering as each body says (`ok`, `retry` with delay 1, `fail`,
/// `permanent`, `silent`: no answer at all) on attempt 1, and `ok` afterwards.
fn scripted_batch_handler(sb: &Sandbox) -> String {
    sb.script(
        "batch.sh",
        "echo \"$CHORE_BATCH_SIZE\" >> batches.txt\n\
         while IFS= read -r line; do\n\
           id=$(printf '%s\\n' \"$line\" | sed 's/^{\"id\":\"\\([^\"]*\\)\".*/\\1/')\n\
           attempt=$(printf '%s\\n' \"$line\" | sed 's/.*\"attempt\":\\([0-9]*\\).*/\\1/')\n\
           echo \"$id $attempt\" >> seen.txt\n\
           echo \"$line\" >> lines.txt\n\
           do=ok\n\
           if [ \"$attempt\" = 1 ]; then\n\
             case \"$line\" in\n\
               *'\"do\":\"retry\"'*) do=retry ;;\n\
               *'\"do\":\"fail\"'*) do=fail ;;\n\
               *'\"do\":\"permanent\"'*) do=permanent ;;\n\
               *'\"do\":\"silent\"'*) do=silent ;;\n\
             esac\n\
           fi\n\
           case $do in\n\
             ok) printf '{\"id\":\"%s\",\"result\":\"ok\"}\\n' \"$id\" ;;\n\
             retry) printf '{\"id\":\"%s\",\"result\":\"retry\",\"delay\":1}\\n' \"$id\" ;;\n\
             fail) printf '{\"id\":\"%s\",\"result\":\"fail\",\"error\":\"it broke\"}\\n' \"$id\" ;;\n\
             permanent) printf '{\"id\":\"%s\",\"result\":\"permanent\",\"error\":\"bad input xyz\"}\\n' \"$id\" ;;\n\
             silent) echo 'not a result line' ;;\n\
           esac\n\
         done",
    )
}

#[test]
fn batch_handler_results_are_settled_one_by_one() {
    let sb = Sandbox::new("batch-results");
    let h = scripted_batch_handler(&sb);
    sb.chorefile(&format!(
        "batch-size = 10\nbatch-timeout = 1\nstrict-batching = true\n\
         [queues.jobs]\nhandler = {{ command = [{h:?}], mode = \"batch\" }}\nbackoff = [1]\n"
    ));
    let mut ids = BTreeMap::new();
    for what in ["ok", "retry", "fail", "permanent", "silent"] {
        ids.insert(
            what,
            sb.enqueue_id("jobs", &format!("{{\"do\":\"{what}\"}}")),
        );
    }
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    master.wait("every message settled for good", || {
        q.is_idle() && q.dead_letters() == 1 && sb.lines("seen.txt").len() >= 8
    });
    let mut attempts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for l in sb.lines("seen.txt") {
        let (id, a) = l.split_once(' ').unwrap();
        attempts
            .entry(id.to_string())
            .or_default()
            .push(a.parse().unwrap());
    }
    assert_eq!(attempts[&ids["ok"]], vec![1]);
    assert_eq!(attempts[&ids["retry"]], vec![1, 2]);
    assert_eq!(attempts[&ids["fail"]], vec![1, 2]);
    assert_eq!(attempts[&ids["permanent"]], vec![1]);
    assert_eq!(
        attempts[&ids["silent"]],
        vec![1, 2],
        "a message left without a result is retried"
    );
    let first_batch: usize = sb.lines("batches.txt")[0].trim().parse().unwrap();
    assert_eq!(first_batch, 5, "all five ran in one batch process");
    // The input lines carry id, queue, attempt, class and the body as JSON.
    let line = sb
        .lines("lines.txt")
        .into_iter()
        .find(|l| l.contains(&ids["ok"]))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["id"], ids["ok"].as_str());
    assert_eq!(v["queue"], "jobs");
    assert_eq!(v["attempt"], 1);
    assert!(v["class"].is_null(), "{line}");
    assert_eq!(v["body"], serde_json::json!({"do": "ok"}));
    let name = format!("{}.1.job", ids["permanent"]);
    let reason = q.read("dead", &format!("{name}.reason"));
    assert!(reason.contains("bad input xyz"), "{reason}");
    let log = master.log_text();
    assert!(log.contains("it broke"), "the fail error is logged");
    assert!(
        log.contains("not a result line"),
        "other stdout goes to the log"
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_batch_handler_that_exits_early_keeps_its_results_and_the_rest_run_again_uncharged() {
    let sb = Sandbox::new("batch-partial");
    // Answers the first line only, then exits 0 leaving the rest unreported.
    let h = sb.script(
        "batch.sh",
        "n=0\n\
         while IFS= read -r line; do\n\
           n=$((n+1))\n\
           id=$(printf '%s\\n' \"$line\" | sed 's/^{\"id\":\"\\([^\"]*\\)\".*/\\1/')\n\
           attempt=$(printf '%s\\n' \"$line\" | sed 's/.*\"attempt\":\\([0-9]*\\).*/\\1/')\n\
           echo \"$id $attempt\" >> seen.txt\n\
           printf '{\"id\":\"%s\",\"result\":\"ok\"}\\n' \"$id\"\n\
           if [ \"$attempt\" = 1 ]; then exit 0; fi\n\
         done",
    );
    sb.chorefile(&format!(
        "batch-size = 10\nbatch-timeout = 1\nstrict-batching = true\n\
         [queues.jobs]\nhandler = {{ command = [{h:?}], mode = \"batch\" }}\nbackoff = [1]\n"
    ));
    let ids: Vec<String> = (0..3)
        .map(|i| sb.enqueue_id("jobs", &format!("[{i}]")))
        .collect();
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    master.wait("all three done", || {
        q.is_idle() && sb.lines("seen.txt").len() >= 3
    });
    let seen = sb.lines("seen.txt");
    let mut attempts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for l in &seen {
        let (id, a) = l.split_once(' ').unwrap();
        attempts
            .entry(id.to_string())
            .or_default()
            .push(a.parse().unwrap());
    }
    assert_eq!(attempts.len(), 3, "{seen:?}");
    // The one reported on is done; the two left without a result ran again, each in a
    // batch of its own, without being charged an attempt, and were done there.
    for (id, a) in &attempts {
        assert!(ids.contains(id));
        assert_eq!(a, &vec![1], "{id}: {seen:?}");
    }
    let log = master.log_text();
    assert!(
        log.contains("running them again in two smaller batches"),
        "the rerun is logged"
    );
    assert!(q.dead().is_empty());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_handler_that_cannot_start_fails_and_is_dead_lettered_at_max_attempts() {
    let sb = Sandbox::new("no-such-handler");
    sb.chorefile(
        "[queues.jobs]\nhandler = [\"./does-not-exist.sh\"]\nbackoff = \"attempt * 0\"\nmax-attempts = 2\n",
    );
    let mut master = sb.start(&[]);
    let id = sb.enqueue_id("jobs", "{}");
    let q = sb.queue("jobs");
    master.wait("the message to be dead-lettered", || q.dead_letters() == 1);
    let reason = q.read("dead", &format!("{id}.2.job.reason"));
    assert!(reason.contains("does-not-exist.sh"), "{reason}");
    assert!(master.running());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_script_without_its_hash_bang_line_is_refused_however_it_is_found() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new("no-hash-bang");
    let script = sb.write("bin/plain", "echo ran >> ran.txt\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Found through the handler's own PATH, and named by a path: the same refusal (the
    // standard library, left to look the first up, would have run it under /bin/sh).
    let path = format!("{}:/usr/bin:/bin", sb.file("bin").display());
    sb.chorefile(&format!(
        "[queues.found]\nhandler = {{ command = [\"plain\"], env = {{ PATH = {path:?} }} }}\n\
         [queues.named]\nhandler = [\"bin/plain\"]\n"
    ));
    let mut master = sb.start(&[]);
    sb.enqueue("found", "{}");
    sb.enqueue("named", "{}");
    master.wait("both to fail", || {
        master.log_text().matches("Exec format error").count() >= 2
    });
    let log = master.log_text();
    for queue in ["found", "named"] {
        assert!(
            log.lines().any(|l| l.contains("will retry")
                && l.contains(&format!("queue={queue} "))
                && l.contains("cannot start handler")),
            "{queue}: {log}"
        );
    }
    assert_eq!(sb.read("ran.txt"), "", "it never ran");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_handler_killed_by_a_signal_is_a_failure() {
    let sb = Sandbox::new("handler-signal");
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "[ \"$CHORE_ATTEMPT\" = 1 ] && kill -9 $$\nexit 0",
    );
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [{h:?}]\nbackoff = \"attempt * 0\"\n"
    ));
    let mut master = sb.start(&[]);
    sb.enqueue("jobs", "{}");
    let q = sb.queue("jobs");
    master.wait("the second attempt to succeed", || {
        sb.runs("runs.txt").len() == 2 && q.is_idle()
    });
    let attempts: Vec<u32> = sb.runs("runs.txt").iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, vec![1, 2]);
    assert!(
        master.log_text().contains("signal"),
        "the failure names the signal"
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn large_bodies_pass_through_and_unread_stdin_does_not_wedge() {
    let sb = Sandbox::new("large-body");
    sb.script("count.sh", "wc -c | tr -d ' ' >> sizes.txt");
    // Never reads its stdin.
    sb.script("ignore.sh", "echo ignored >> ignored.txt");
    sb.chorefile(
        "[queues.count]\nhandler = [\"./count.sh\"]\ntimeout = 20\n\
         [queues.ignore]\nhandler = [\"./ignore.sh\"]\ntimeout = 20\n",
    );
    let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(300_000));
    let q = sb.queue("count");
    q.put(
        "new",
        "count-Job-1-20240101-000000-000001.0.job",
        big.as_bytes(),
    );
    sb.queue("ignore").put(
        "new",
        "ignore-Job-1-20240101-000000-000001.0.job",
        big.as_bytes(),
    );
    let mut master = sb.start(&[]);
    master.wait("both handlers", || {
        sb.lines("sizes.txt").len() == 1 && sb.lines("ignored.txt").len() == 1
    });
    assert_eq!(sb.lines("sizes.txt")[0], big.len().to_string());
    master.wait("both queues to empty", || {
        q.is_idle() && sb.queue("ignore").is_idle()
    });
    assert!(q.dead().is_empty() && sb.queue("ignore").dead().is_empty());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_pretty_printed_body_reaches_its_handler() {
    // Valid JSON with newlines in it (written by hand, or by a producer that pretty-prints)
    // is a body like any other: the per-message handler gets it untouched, the batch
    // handler gets it as its `body`, and it never breaks the batch it travels in.
    let sb = Sandbox::new("pretty-body");
    let h = sb.recorder("job.sh", "runs.txt", "");
    let b = sb.ok_batch_handler("batch.sh", "", "echo \"$line\" >> batch-lines.txt");
    sb.chorefile(&format!(
        "[queues.single]\nhandler = [{h:?}]\nbackoff = [1]\nmax-attempts = 2\n\
         [queues.batch]\nhandler = {{ command = [{b:?}], mode = \"batch\" }}\nbackoff = [1]\nmax-attempts = 2\n"
    ));
    let pretty = "{\n  \"pretty\": true,\n  \"list\": [1, 2]\n}";
    for q in ["single", "batch"] {
        let dir = sb.queue(q);
        dir.put(
            "new",
            &format!("{q}-Job-1-20240101-000000-000001.0.job"),
            pretty.as_bytes(),
        );
        dir.put(
            "new",
            &format!("{q}-Job-1-20240101-000000-000002.0.job"),
            b"{\"compact\":true}",
        );
    }
    let mut master = sb.start(&[]);
    let (single, batch) = (sb.queue("single"), sb.queue("batch"));
    master.wait("both queues to settle", || {
        single.is_idle() && batch.is_idle()
    });
    assert!(
        single.dead().is_empty() && batch.dead().is_empty(),
        "dead-lettered: {:?} {:?}; reason: {}",
        single.dead(),
        batch.dead(),
        single.read(
            "dead",
            single
                .dead()
                .iter()
                .find(|n| n.ends_with(".reason"))
                .map(String::as_str)
                .unwrap_or("")
        )
    );
    let text = sb.read("runs.txt");
    assert!(
        text.contains(pretty),
        "the per-message handler got the body untouched:\n{text}"
    );
    assert!(text.contains("{\"compact\":true}"));
    let lines = sb.lines("batch-lines.txt");
    assert_eq!(lines.len(), 2, "one JSON line per message: {lines:?}");
    let bodies: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["body"].clone())
        .collect();
    assert!(bodies.contains(&serde_json::json!({"pretty": true, "list": [1, 2]})));
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn workers_and_handlers_get_no_aws_credentials() {
    let sb = Sandbox::new("no-creds");
    sb.script(
        "job.sh",
        "cat >/dev/null; env | grep '^AWS_' | sort >> env.txt; echo done >> done.txt",
    );
    sb.chorefile("[queues.jobs]\nhandler = [\"./job.sh\"]\n");
    let mut master = sb.start_with_env(
        "master",
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIATEST"),
            ("AWS_SECRET_ACCESS_KEY", "sekrit"),
            ("AWS_SESSION_TOKEN", "tok"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    sb.enqueue("jobs", "{}");
    master.wait("the job", || !sb.lines("done.txt").is_empty());
    assert_eq!(master.stop().code(), Some(0));
    let env = sb.read("env.txt");
    assert!(!env.contains("sekrit"), "{env}");
    assert!(!env.contains("AKIATEST"), "{env}");
    assert!(!env.contains("tok"), "{env}");
    assert!(
        env.contains("AWS_REGION=us-east-1"),
        "only credentials are stripped: {env}"
    );
}
