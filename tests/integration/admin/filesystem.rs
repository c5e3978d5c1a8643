//! `chore queue` on filesystem queues.

use super::{bodies, queue, queue_ok, snapshot};
use crate::harness::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub(super) fn epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A Chorefile with queues `mail` (timeout 60) and `copy`, both created.
pub(super) fn sandbox(name: &str) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.chorefile(
        "fs-claim-lease = 10\n[queues.mail]\nhandler = [\"true\"]\ntimeout = 60\n\
         [queues.copy]\nhandler = [\"true\"]\n",
    );
    let (out, _) = queue_ok(&sb, &["create"], None, &[]);
    assert!(out.contains("created:") && out.contains("/mail"), "{out}");
    assert_eq!(sb.queue("mail").read("config", "timeout"), "60\n");
    sb
}

/// A dead letter as the master writes one: `dead/<id>.<attempts>.job` and its note.
pub(super) fn dead_letter(q: &QueueDir, id: &str, attempts: u32, body: &str, reason: &str) {
    let name = format!("{id}.{attempts}.job");
    q.put("dead", &name, body.as_bytes());
    q.put(
        "dead",
        &format!("{name}.reason"),
        format!("queue: mail\nid: {id}\nattempts: {attempts}\nat: 1\nreason: {reason}\n")
            .as_bytes(),
    );
}

#[test]
fn stats_peek_and_dump_show_the_queue_and_leave_it_exactly_as_it_was() {
    let sb = sandbox("admin-look");
    let q = sb.queue("mail");
    let a = sb.enqueue_id("mail", r#"{"class":"Mail","args":[1]}"#);
    let b = sb.enqueue_id("mail", r#"{"class":"Bill","args":[2]}"#);
    // Held by a master (lapses within the lease) and waiting out a retry (an hour ahead).
    let now = epoch();
    q.put(
        "inprogress",
        &format!("held-1.0.{}.job", now - 60 + 5),
        b"{}",
    );
    q.put(
        "inprogress",
        &format!("later-1.1.{}.job", now + 3600),
        b"{}",
    );
    dead_letter(
        &q,
        "gone-1",
        3,
        r#"{"class":"Mail","args":[3]}"#,
        "exit status 1",
    );
    let before = snapshot(&q.path);

    let (out, _) = queue_ok(&sb, &["stats", "--json", "mail"], None, &[]);
    let s: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (&s["new"], &s["in_progress"], &s["delayed"], &s["dead"]),
        (&2.into(), &1.into(), &1.into(), &1.into()),
        "{out}"
    );
    assert!(s["oldest_age_secs"].as_i64().unwrap() >= 0, "{out}");
    let (out, _) = queue_ok(&sb, &["stats"], None, &[]);
    assert!(out.lines().any(|l| l.starts_with("mail ")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("copy ")),
        "every declared queue: {out}"
    );

    let (out, _) = queue_ok(&sb, &["peek", "mail", "-n", "1"], None, &[]);
    assert!(out.contains(&a) && !out.contains(&b), "{out}");
    assert!(
        out.contains("class=Mail") && out.contains("attempts=0"),
        "{out}"
    );
    let (out, _) = queue_ok(&sb, &["peek", "mail", "--json"], None, &[]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (out, _) = queue_ok(&sb, &["peek", "mail", "--dead"], None, &[]);
    assert!(
        out.contains("gone-1") && out.contains("reason=exit status 1"),
        "{out}"
    );
    assert!(out.contains("attempts=3"), "{out}");

    let (out, err) = queue_ok(&sb, &["dump", "mail"], None, &[]);
    assert_eq!(
        bodies(&out),
        [
            r#"{"class":"Mail","args":[1]}"#,
            r#"{"class":"Bill","args":[2]}"#
        ]
    );
    assert!(err.contains("dumped 2 messages"), "{err}");
    let (out, _) = queue_ok(&sb, &["dump", "mail", "--dead"], None, &[]);
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["id"], "gone-1");
    assert_eq!(line["attributes"]["reason"], "exit status 1");
    assert_eq!(line["attributes"]["attempts"], "3");

    assert_eq!(
        snapshot(&q.path),
        before,
        "looking changed a file, a name or an mtime"
    );
}

#[test]
fn dump_then_load_moves_bodies_byte_for_byte() {
    let sb = sandbox("admin-roundtrip");
    let (mail, copy) = (sb.queue("mail"), sb.queue("copy"));
    let tricky = [
        "{\"class\":\"A\",\"args\":[\"é ü 😀\", \"tab\\tquote\\\"\"]}  \n",
        "{ \"spaced\" : [1.50, 2e3, null] }",
        "[\"\\u0000 nul escaped\", \"\\\\\"]\r\n",
    ];
    for (i, body) in tricky.iter().enumerate() {
        mail.put(
            "new",
            &format!("mail-Job-1-2026010{i}-000000-000000.0.job"),
            body.as_bytes(),
        );
    }
    let dump = sb.file("mail.jsonl");
    queue_ok(
        &sb,
        &["dump", "mail", "-o", dump.to_str().unwrap()],
        None,
        &[],
    );
    let (_, err) = queue_ok(&sb, &["load", "copy", dump.to_str().unwrap()], None, &[]);
    assert!(err.contains("loaded 3 of 3"), "{err}");
    let mut loaded: Vec<Vec<u8>> = copy
        .new_files()
        .iter()
        .map(|n| std::fs::read(copy.path.join("new").join(n)).unwrap())
        .collect();
    let mut original: Vec<Vec<u8>> = tricky.iter().map(|b| b.as_bytes().to_vec()).collect();
    loaded.sort();
    original.sort();
    assert_eq!(loaded, original, "bodies changed on the way");
    // And through standard input, a second time: the dumps of both queues agree.
    queue_ok(&sb, &["purge", "copy", "--yes"], None, &[]);
    queue_ok(&sb, &["load", "copy"], Some(&sb.read("mail.jsonl")), &[]);
    let (again, _) = queue_ok(&sb, &["dump", "copy"], None, &[]);
    let (mut x, mut y) = (bodies(&again), bodies(&sb.read("mail.jsonl")));
    x.sort();
    y.sort();
    assert_eq!(x, y);
}

#[test]
fn purge_and_delete_ask_first() {
    let sb = sandbox("admin-purge");
    let q = sb.queue("mail");
    sb.enqueue("mail", "{}");
    sb.enqueue("mail", "{}");
    dead_letter(&q, "d-1", 1, "{}", "exit status 1");
    let before = snapshot(&q.path);

    let out = queue(&sb, &["purge", "mail"], Some("no\n"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("purge 2 waiting message(s)") && err.contains("not confirmed"),
        "{err}"
    );
    assert_eq!(snapshot(&q.path), before);
    // No answer at all refuses too.
    assert_eq!(
        queue(&sb, &["purge", "mail"], None, &[]).status.code(),
        Some(1)
    );
    assert_eq!(snapshot(&q.path), before);

    let (_, err) = queue_ok(&sb, &["purge", "mail"], Some("yes\n"), &[]);
    assert!(err.contains("purged 2 of 2"), "{err}");
    assert!(q.new_files().is_empty());
    assert_eq!(q.dead().len(), 2, "dead letters are purged separately");
    queue_ok(&sb, &["purge", "mail", "--dead", "--yes"], None, &[]);
    assert!(q.dead().is_empty(), "{:?}", q.dead());

    let out = queue(&sb, &["delete", "mail"], Some("n\n"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(q.path.join("new").is_dir());
    let (_, err) = queue_ok(&sb, &["delete", "mail"], Some("y\n"), &[]);
    assert!(err.contains("deleted"), "{err}");
    assert!(!q.path.exists());
}

#[test]
fn trace_says_where_a_message_is_and_what_the_log_says() {
    let sb = sandbox("admin-trace");
    let q = sb.queue("mail");
    let waiting = sb.enqueue_id("mail", "{}");
    let now = epoch();
    q.put(
        "inprogress",
        &format!("later-1.1.{}.job", now + 3600),
        b"{}",
    );
    dead_letter(&q, "dead-1", 4, "{}", "exit status 3");
    // With a line that is not UTF-8 (a hook may write anything there) before the rest.
    let mut log = b"hook output \xff\xfe\n".to_vec();
    log.extend_from_slice(
        "2026-11-29T20:00:00Z  INFO worker started pid=999999 queue=mail messages=1 ids=dead-1\n\
             2026-11-29T20:00:01Z ERROR dead-lettered queue=mail id=dead-1 attempt=4 reason=exit status 3\n\
             {\"timestamp\":\"2026-11-29T20:00:02Z\",\"level\":\"WARN\",\"message\":\"failed; will retry\",\"id\":\"later-1\"}\n"
            .as_bytes(),
    );
    std::fs::write(sb.file("chore.log"), log).unwrap();
    let (out, _) = queue_ok(&sb, &["trace", &waiting], None, &[]);
    assert!(out.contains("waiting, 0 attempt(s) made"), "{out}");
    let (out, _) = queue_ok(&sb, &["trace", "later-1", "--log", "chore.log"], None, &[]);
    assert!(
        out.contains("delayed: attempt 2 failed, offered again at"),
        "{out}"
    );
    assert!(
        out.contains("WARN failed; will retry id=later-1"),
        "JSON rendered: {out}"
    );
    let (out, _) = queue_ok(
        &sb,
        &["trace", "dead-1", "-q", "mail", "--log", "chore.log"],
        None,
        &[],
    );
    assert!(
        out.contains("dead after 4 attempt(s): exit status 3"),
        "{out}"
    );
    assert!(out.contains("worker started pid=999999"), "{out}");
    let (out, _) = queue_ok(&sb, &["trace", "nowhere-1"], None, &[]);
    assert!(out.contains("not in"), "{out}");
}

#[test]
fn bad_input_is_one_clear_line_and_exit_2() {
    let sb = sandbox("admin-bad");
    let cf = sb.chorefile_path();
    let cf = cf.to_str().unwrap();
    let check = |args: &[&str], stdin: Option<&str>, want: &str| {
        let out = sb.run_with_stdin(args, stdin);
        let line = one_line_exit_2(&out, args);
        assert!(line.contains(want), "{args:?}: {line}");
    };
    check(
        &["queue", "-c", cf, "peek", "nope"],
        None,
        "unknown queue `nope`: the Chorefile declares copy, mail",
    );
    check(&["queue", "peek", "mail"], None, "give a Chorefile with -c");
    let missing = sb.file("no/such/queue");
    check(
        &["queue", "stats", missing.to_str().unwrap()],
        None,
        "not a queue directory",
    );
    // A `new` that cannot be read as a directory.
    let odd = sb.file("odd");
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::write(odd.join("new"), "").unwrap();
    check(
        &["queue", "dump", odd.to_str().unwrap()],
        None,
        "cannot read",
    );
    let good = r#"{"id":"a","attributes":{},"body":"{}"}"#;
    check(
        &["queue", "-c", cf, "load", "mail"],
        Some(&format!("{good}\n{{\"id\":\"b\",\"body\":\n{good}\n")),
        "standard input:2: not a dump line",
    );
    assert!(
        sb.queue("mail").new_files().is_empty(),
        "a malformed dump loaded something"
    );
    let dump = sb.write("bad.jsonl", "[1]\n");
    check(
        &["queue", "-c", cf, "load", "mail", dump.to_str().unwrap()],
        None,
        "bad.jsonl:1:",
    );
    // An empty body would never run (a consumer takes an empty file for one being written).
    check(
        &["queue", "-c", cf, "load", "mail"],
        Some(&format!("{good}\n{{\"id\":\"e\",\"body\":\"\"}}\n")),
        "standard input:2: an empty body cannot be a message; nothing was loaded",
    );
    assert!(sb.queue("mail").new_files().is_empty());
}

#[test]
fn trace_names_the_worker_and_master_running_a_message() {
    let sb = Sandbox::new("admin-trace-live");
    let h = sb.script(
        "wait.sh",
        "cat >/dev/null\nwhile [ ! -e release ]; do sleep 0.05; done",
    );
    sb.chorefile(&format!("[queues.mail]\nhandler = [{h:?}]\n"));
    let mut master = sb.start(&[]);
    let id = sb.enqueue_id("mail", "{}");
    master.wait_log("worker started");
    let (out, _) = queue_ok(&sb, &["trace", &id, "--log", "master.log"], None, &[]);
    assert!(
        out.contains(&format!("{id}: in progress, attempt 1")),
        "{out}"
    );
    let worker = master.workers()[0];
    assert!(
        out.contains(&format!(
            "last started in worker pid {worker}, which is running (master pid {})",
            master.pid
        )),
        "{out}"
    );
    sb.write("release", "");
    master.wait("the message to complete", || sb.queue("mail").is_idle());
    let (out, _) = queue_ok(&sb, &["trace", &id], None, &[]);
    assert!(out.contains("not in"), "{out}");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn stats_watch_refreshes_until_ctrl_c() {
    let sb = sandbox("admin-watch");
    let cf = sb.chorefile_path();
    let child = sb
        .command(&[
            "queue",
            "-c",
            cf.to_str().unwrap(),
            "stats",
            "--watch",
            "--interval",
            "1",
            "--json",
            "mail",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let q = sb.queue("mail");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    sb.enqueue("mail", "{}");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 3, "{lines:?}");
    assert_eq!(lines[0]["new"], 0);
    assert_eq!(
        lines.last().unwrap()["new"],
        1,
        "the refresh saw the new message"
    );
    assert_eq!(q.new_files().len(), 1);
}

/// `chore queue create` makes the directories as the master does: mode 0750 and the
/// timeout file 0640 whatever the umask, and a link planted at `config/timeout` is
/// replaced, not written through.
#[test]
fn create_makes_private_directories_whatever_the_umask_and_writes_through_no_link() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let sb = Sandbox::new("admin-create-modes");
    sb.chorefile("[queues.mail]\nhandler = [\"true\"]\ntimeout = 60\n");
    let victim = sb.write("victim.txt", "precious\n");
    let config = sb.root().join("mail/config");
    std::fs::create_dir_all(&config).unwrap();
    std::os::unix::fs::symlink(&victim, config.join("timeout")).unwrap();
    let cf = sb.chorefile_path();
    let mut cmd = sb.command(&["queue", "-c", cf.to_str().unwrap(), "create"]);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::libc::umask(0);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    for sub in ["new", "inprogress", "dead"] {
        assert_eq!(mode(&sb.root().join("mail").join(sub)), 0o750, "{sub}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let timeout = config.join("timeout");
    assert!(std::fs::symlink_metadata(&timeout).unwrap().is_file());
    assert_eq!(mode(&timeout), 0o640);
    assert_eq!(std::fs::read_to_string(&timeout).unwrap(), "60\n");
}

/// A verb blocked reading its input (a pipe its writer keeps open) is still stopped by
/// SIGTERM, with exit status 1, and loads nothing half-way.
#[test]
fn a_load_waiting_for_input_is_stopped_by_sigterm() {
    let sb = sandbox("admin-load-blocked");
    let cf = sb.chorefile_path();
    let mut child = sb
        .command(&["queue", "-c", cf.to_str().unwrap(), "load", "copy"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, b"{\"id\":\"a\",\"body\":\"{}\"}\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let stopped = crate::support::poll::poll_until(std::time::Duration::from_secs(15), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !stopped {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    drop(input);
    assert!(stopped, "still waiting for input 15 s after SIGTERM");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(sb.queue("copy").new_files().len() <= 1);
}
