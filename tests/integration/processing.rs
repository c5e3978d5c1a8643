//! The plain data path: jobs go in, handlers run, files go away.

use crate::harness::*;
use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn a_handful_of_jobs_all_complete() {
    let sb = Sandbox::new("processing");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "concurrency = 2\nshutdown-timeout = 10\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    // Two waiting before the master starts, three more while it runs.
    let mut ids: BTreeSet<String> = (0..2)
        .map(|i| sb.enqueue_id("jobs", &format!("{{\"n\":{i}}}")))
        .collect();
    let mut master = sb.start(&[]);
    master.wait_log("chore master started");
    for i in 2..5 {
        ids.insert(sb.enqueue_id("jobs", &format!("{{\"n\":{i}}}")));
    }
    master.wait("all five jobs to run", || sb.runs("runs.txt").len() >= 5);
    let q = sb.queue("jobs");
    master.wait("new/ and inprogress/ to empty", || q.is_idle());
    let runs = sb.runs("runs.txt");
    let seen: BTreeSet<String> = runs.iter().map(|r| r.id.clone()).collect();
    assert_eq!(seen, ids, "every enqueued message ran");
    assert_eq!(runs.len(), 5, "each exactly once: {runs:?}");
    for r in &runs {
        assert_eq!(r.queue, "jobs");
        assert_eq!(r.attempt, 1);
        assert_eq!(r.class, "");
        assert!(
            r.body.starts_with("{\"n\":"),
            "body passed untouched: {r:?}"
        );
    }
    assert!(q.dead().is_empty());
    assert!(master.running(), "the master keeps running when idle");
    let status = master.stop();
    assert_eq!(status.code(), Some(0), "a drained master exits 0");
}

/// The Unix time of a title's `Started:` stamp, `YYYY-MM-DD HH:MM:SS +ZZZZ` (Ruby's
/// `Time#to_s`), or None if it is not one.
fn started_at(title: &str, prefix: &str) -> Option<i64> {
    let stamp = title.strip_prefix(&format!("{prefix}{}:Started:", env!("CARGO_PKG_VERSION")))?;
    let b = stamp.as_bytes();
    let shape = "dddd-dd-dd dd:dd:dd sdddd";
    if b.len() != shape.len()
        || !shape.bytes().zip(b).all(|(s, &c)| match s {
            b'd' => c.is_ascii_digit(),
            b's' => c == b'+' || c == b'-',
            _ => s == c,
        })
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| stamp[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days since 1970-01-01 (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let sign = if b[20] == b'-' { -1 } else { 1 };
    let offset = sign * (n(21..23) * 3600 + n(23..25) * 60);
    Some(days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19) - offset)
}

#[test]
fn the_master_and_workers_carry_ruby_chores_titles_and_workers_lead_their_groups() {
    let sb = Sandbox::new("titles");
    let h = sb.recorder("job.sh", "runs.txt", "sleep 30");
    sb.chorefile(&format!("[queues.jobs]\nhandler = [{h:?}]\n"));
    let before = unix_now() as i64;
    // Local time, as Ruby prints `Time.now`: a zone half an hour off, given as a POSIX TZ
    // string (no time zone files needed).
    let mut master = sb.start_with_env("master", &[], &[("TZ", "IST-5:30")]);
    sb.enqueue("jobs", "{}");
    master.wait("the job to start", || !sb.runs("runs.txt").is_empty());
    let after = unix_now() as i64 + 1;
    // The master: the same process, titled, its arguments kept after the title, so that
    // `pgrep -f '^chore-master'` finds it as it found Ruby Chore's.
    let argv = cmdline(master.pid);
    let started =
        started_at(&argv[0], "chore-master-").unwrap_or_else(|| panic!("master title {argv:?}"));
    assert!(before - 1 <= started && started <= after, "{argv:?}");
    assert!(argv[0].ends_with(" +0530"), "{argv:?}");
    let chorefile = sb.chorefile_path();
    assert_eq!(argv[1..], ["-c", chorefile.to_str().unwrap()]);
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", master.pid)).unwrap();
    assert_eq!(comm.trim_end(), "chore-master");
    // The worker.
    let workers = master.workers();
    assert_eq!(workers.len(), 1, "one worker for one job");
    let w = workers[0];
    let argv = cmdline(w);
    let started =
        started_at(&argv[0], "chore-worker-").unwrap_or_else(|| panic!("worker title {argv:?}"));
    assert!(before - 1 <= started && started <= after, "{argv:?}");
    assert!(argv[0].ends_with(" +0530"), "{argv:?}");
    assert_eq!(pgrp(w), Some(w), "the worker leads its own process group");
    assert_ne!(pgrp(master.pid), Some(w));
    // Drain, then a second TERM kills the sleeping handler.
    master.signal(nix::sys::signal::Signal::SIGTERM);
    master.wait_log("draining");
    master.signal(nix::sys::signal::Signal::SIGTERM);
    master.wait_exit(PATIENCE);
    wait_until("the worker to be gone", PATIENCE, || pid_gone(w));
}

#[test]
fn at_most_concurrency_workers_run_at_once() {
    let sb = Sandbox::new("concurrency");
    // Each handler counts the handlers running, including itself, into counts.txt.
    let h = sb.script(
        "job.sh",
        "mkdir -p running\n: > running/$CHORE_MESSAGE_ID\n\
         ls running | wc -l >> counts.txt\n\
         sleep 0.4\nrm running/$CHORE_MESSAGE_ID\necho $CHORE_MESSAGE_ID >> done.txt",
    );
    sb.chorefile(&format!(
        "concurrency = 2\nbatch-size = 1\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    for i in 0..6 {
        sb.enqueue("jobs", &format!("[{i}]"));
    }
    let mut master = sb.start(&[]);
    master.wait("six jobs done", || sb.lines("done.txt").len() == 6);
    let counts: Vec<usize> = sb
        .lines("counts.txt")
        .iter()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let max = counts.iter().copied().max().unwrap();
    assert!(
        max <= 2,
        "more than `concurrency` handlers ran at once: {counts:?}"
    );
    assert_eq!(max, 2, "the two slots were used in parallel: {counts:?}");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn handler_gets_its_env_and_runs_in_the_chorefile_directory() {
    let sb = Sandbox::new("handler-env");
    sb.script(
        "job.sh",
        "printf '%s|%s|%s\\n' \"$(pwd)\" \"$GREETING\" \"$CHORE_QUEUE\" >> env.txt",
    );
    sb.script("sub/job.sh", "printf '%s\\n' \"$(pwd)\" >> ../subdir.txt");
    sb.chorefile(
        "[queues.a]\nhandler = { command = [\"./job.sh\"], env = { GREETING = \"hello\" } }\n\
         [queues.b]\nhandler = { command = [\"./job.sh\"], dir = \"sub\" }\n",
    );
    // `dir = "sub"` is relative to the Chorefile; "./job.sh" is then sub/job.sh.
    let mut master = sb.start(&[]);
    sb.enqueue("a", "{}");
    sb.enqueue("b", "{}");
    master.wait("both handlers to run", || {
        sb.lines("env.txt").len() == 1 && sb.lines("subdir.txt").len() == 1
    });
    let here = std::fs::canonicalize(sb.path()).unwrap();
    let env = sb.lines("env.txt");
    assert_eq!(env[0], format!("{}|hello|a", here.display()));
    let sub_dir = std::fs::canonicalize(sb.file("sub")).unwrap();
    assert_eq!(sb.lines("subdir.txt")[0], sub_dir.display().to_string());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn ruby_format_logs_read_as_ruby_chores_lines() {
    let sb = Sandbox::new("ruby-logs");
    let h = sb.script("job.sh", "cat > /dev/null; echo from the handler; exit 65");
    sb.chorefile(&format!(
        "log-format = \"ruby\"\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    sb.enqueue("jobs", "{\"x\":1}");
    master.wait("the message to be dead-lettered", || q.dead_letters() == 1);
    master.wait_log("dead-lettered");
    assert_eq!(master.stop().code(), Some(0));
    // `[YYYY-MM-DD HH:MM:SS +ZZZZ (pid)] SEVERITY : message`, each line; its pid and severity.
    let shape = "[dddd-dd-dd dd:dd:dd sdddd (";
    let mut lines = Vec::new();
    for line in master.log_text().lines().filter(|l| !l.trim().is_empty()) {
        let ok = line.len() > shape.len()
            && shape.bytes().zip(line.bytes()).all(|(s, c)| match s {
                b'd' => c.is_ascii_digit(),
                b's' => c == b'+' || c == b'-',
                _ => s == c,
            });
        assert!(ok, "not Ruby Chore's line: {line}");
        let (pid, rest) = line[shape.len()..].split_once(")] ").unwrap();
        let (severity, message) = rest.split_once(" : ").unwrap();
        assert!(
            ["DEBUG", "INFO", "WARN", "ERROR"].contains(&severity),
            "{line}"
        );
        lines.push((
            pid.parse::<i32>().unwrap(),
            severity.to_string(),
            message.to_string(),
        ));
    }
    let find = |start: &str| {
        lines
            .iter()
            .find(|(_, _, m)| m.starts_with(start))
            .unwrap_or_else(|| panic!("no `{start}` line in {lines:?}"))
            .clone()
    };
    let (pid, severity, _) = find("dead-lettered");
    assert_eq!((pid, severity.as_str()), (master.pid, "ERROR"));
    let (pid, severity, _) = find("chore master started");
    assert_eq!((pid, severity.as_str()), (master.pid, "INFO"));
    // What the handler printed is logged by its worker, under the worker's pid.
    let (pid, _, message) = find("from the handler");
    assert_ne!(pid, master.pid, "{message}");
    assert!(message.contains("queue=\"jobs\""), "{message}");
}

#[test]
fn json_logs_carry_queue_and_message_id() {
    let sb = Sandbox::new("json-logs");
    let h = sb.script("job.sh", "cat > /dev/null; exit 65");
    sb.chorefile(&format!(
        "log-format = \"json\"\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let mut master = sb.start(&[]);
    let id = sb.enqueue_id("jobs", "{\"x\":1}");
    let q = sb.queue("jobs");
    master.wait("the message to be dead-lettered", || q.dead_letters() == 1);
    master.wait_log("dead-lettered");
    assert_eq!(master.stop().code(), Some(0));
    let text = master.log_text();
    let mut dead_line = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
        if v["message"] == "dead-lettered" {
            dead_line = Some(v);
        }
    }
    let v = dead_line.expect("a dead-lettered event");
    assert_eq!(v["queue"], "jobs", "{v}");
    assert_eq!(v["id"], id.as_str(), "{v}");
}

#[test]
fn queues_and_except_queues_choose_what_is_consumed() {
    let sb = Sandbox::new("select");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "[queues.a]\nhandler = [{h:?}]\n[queues.b]\nhandler = [{h:?}]\n[queues.c]\nhandler = [{h:?}]\n"
    ));
    for q in ["a", "b", "c"] {
        sb.enqueue(q, "{}");
    }
    let mut only = sb.start_as("only", &["--queues", "b"]);
    only.wait("b's job", || sb.runs("runs.txt").len() == 1);
    assert_eq!(only.stop().code(), Some(0));
    let mut except = sb.start_as("except", &["--except", "c"]);
    except.wait("a's job", || sb.runs("runs.txt").len() == 2);
    except.assert_for(Duration::from_millis(500), "c's job left alone", || {
        sb.runs("runs.txt").len() == 2 && sb.queue("c").new_files().len() == 1
    });
    assert_eq!(except.stop().code(), Some(0));
    let queues: Vec<String> = sb
        .runs("runs.txt")
        .iter()
        .map(|r| r.queue.clone())
        .collect();
    assert_eq!(queues, vec!["b", "a"]);
    assert_eq!(sb.queue("c").new_files().len(), 1, "c was left alone");
}

#[test]
fn queue_prefix_names_the_queue_on_disk() {
    let sb = Sandbox::new("prefix");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "queue-prefix = \"Staging_\"\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let name = sb.enqueue("jobs", "{}");
    // Ruby Chore lower-cases the prefix; the file is named after the full queue name.
    assert!(name.starts_with("staging_jobs-Job-"), "{name}");
    assert_eq!(sb.queue("staging_jobs").new_files(), vec![name]);
    let mut master = sb.start(&[]);
    master.wait("the job", || !sb.runs("runs.txt").is_empty());
    assert_eq!(sb.runs("runs.txt")[0].queue, "staging_jobs");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn several_consumer_threads_take_each_message_once() {
    let sb = Sandbox::new("threads");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "threads-per-queue = 3\nqueue-polling-size = 2\nbatch-size = 3\nconcurrency = 3\n\
         [queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let input: String = (0..20).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    sb.enqueue_lines(&["jobs"], Some(&input), &[]);
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    master.wait("twenty jobs", || {
        sb.runs("runs.txt").len() >= 20 && q.is_idle()
    });
    master.assert_for(Duration::from_millis(300), "no job run twice", || {
        sb.runs("runs.txt").len() == 20
    });
    let runs = sb.runs("runs.txt");
    let ids: BTreeSet<String> = runs.iter().map(|r| r.id.clone()).collect();
    assert_eq!(runs.len(), 20, "some ran twice");
    assert_eq!(ids.len(), 20);
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn sigterm_while_idle_exits_at_once_even_with_a_long_idle_poll() {
    let sb = Sandbox::new("idle-term");
    sb.chorefile("[queues.jobs]\nhandler = [\"true\"]\n");
    let mut master = sb.start(&["--consumer-sleep-interval", "30"]);
    master.wait_log("chore master started");
    // Parked in its 30 s wait for new files when the signal comes.
    master.wait_consumers(ConsumerWait::ForFiles);
    let t = std::time::Instant::now();
    master.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(master.wait_exit(PATIENCE).code(), Some(0));
    // Half the poll: waiting it out would take 30 s.
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "an idle master took {:?} to stop: it waited out its idle poll",
        t.elapsed()
    );
}

#[test]
fn no_declared_queue_is_a_configuration_error() {
    let sb = Sandbox::new("no-queues");
    sb.chorefile("concurrency = 2\n");
    let cf = sb.chorefile_path();
    let out = sb.run(&["-c", cf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("queues"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_relative_chorefile_path_finds_handlers_beside_it() {
    // `chore -c conf/Chorefile` from the directory above: `./job.sh` is conf/job.sh, as
    // the handler's working directory is the Chorefile's.
    let sb = Sandbox::new("relative-chorefile");
    sb.script("conf/job.sh", "cat > /dev/null; pwd >> ../ran-in.txt");
    sb.write(
        "conf/Chorefile",
        &format!(
            "{}[queues.jobs]\nhandler = [\"./job.sh\"]\nmax-attempts = 1\n",
            sb.preamble()
        ),
    );
    let mut master = sb.spawn_master("master", &["-c", "conf/Chorefile"], &[]);
    sb.run_ok(&["enqueue", "-c", "conf/Chorefile", "jobs", "{}"], None);
    let q = sb.queue("jobs");
    master.wait("the job to settle", || {
        !sb.lines("ran-in.txt").is_empty() || q.dead_letters() == 1
    });
    let conf = std::fs::canonicalize(sb.file("conf")).unwrap();
    assert_eq!(
        sb.lines("ran-in.txt"),
        vec![conf.display().to_string()],
        "the handler did not run; dead letter: {}",
        q.dead()
            .iter()
            .find(|n| n.ends_with(".reason"))
            .map(|n| q.read("dead", n))
            .unwrap_or_default()
    );
    assert_eq!(master.stop().code(), Some(0));
}

/// An idle master sleeps: its loop waits on its channels and timers, none of which may
/// wake it for nothing (a disconnected channel would, for ever). Generous: an idle master
/// uses a few milliseconds of CPU a second; a spinning one uses most of a core.
#[test]
fn an_idle_master_uses_next_to_no_cpu() {
    let sb = Sandbox::new("idle");
    sb.chorefile("[queues.jobs]\nhandler = [\"/bin/true\"]\n");
    let mut master = sb.start(&[]);
    master.wait_log("chore master started");
    let ticks = |pid: i32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = ticks(master.pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = ticks(master.pid) - before;
    // Clock ticks are 1/100 s: 2 s of spinning would be about 200.
    assert!(used <= 40, "an idle master used {used} ticks of CPU in 2 s");
    assert_eq!(master.stop().code(), Some(0));
}
