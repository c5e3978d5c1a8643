//! `chore check-config`: it says no wherever the master would refuse to start, and where
//! every message would fail; it prints everything it resolved; every unknown name gets a
//! suggestion.

use crate::config_errors::{documented_keys, preamble, rejected};
use crate::harness::*;

/// `chore check-config ARGS`: exit 2, nothing on stdout; its stderr lines.
fn check_refused(sb: &Sandbox, args: &[&str]) -> Vec<String> {
    let mut all = vec!["check-config"];
    all.extend_from_slice(args);
    check_refused_by(sb.command(&all), &all)
}

fn check_refused_by(mut cmd: std::process::Command, args: &[&str]) -> Vec<String> {
    let out = cmd.output().expect("chore runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "chore {args:?}: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "chore {args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr.lines().map(str::to_owned).collect()
}

/// `chore check-config ARGS` must succeed: its stdout.
pub(crate) fn check_ok(sb: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["check-config"];
    all.extend_from_slice(args);
    let out = sb.run(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "chore {all:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn check_config_fails_where_there_is_no_queue_to_consume() {
    let sb = Sandbox::new("cfg-no-queue");
    let cf = sb.chorefile("concurrency = 2\n");
    let cf = cf.to_str().unwrap();
    assert_eq!(
        check_refused(&sb, &["-c", cf]),
        [
            "chore: key `queues`: no queues to consume: declare [queues.NAME] tables in the Chorefile"
        ]
    );
    // The master refuses the same.
    assert_eq!(sb.run(&["-c", cf]).status.code(), Some(2));
    let cf = sb.chorefile("[queues.a]\nhandler = [\"true\"]\n");
    let cf = cf.to_str().unwrap();
    assert_eq!(
        check_refused(&sb, &["-c", cf, "--except", "a"]),
        [
            "chore: command line: key `except-queues`: no queues to consume: --except-queues excludes every declared queue"
        ]
    );
    assert_eq!(sb.run(&["-c", cf, "--except", "a"]).status.code(), Some(2));
}

#[test]
fn check_config_fails_where_the_queue_directory_cannot_be_written() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let sb = Sandbox::new("cfg-unwritable");
    let ro = sb.file("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let root = ro.join("queues");
    let cf = sb.write(
        "Chorefile",
        &format!(
            "fs-queue-root = {:?}\n[queues.a]\nhandler = [\"true\"]\n",
            root.display().to_string()
        ),
    );
    let cf = cf.to_str().unwrap();
    // Root may write anywhere: run as nobody then, who may not write a 0555 directory.
    let as_user = |args: &[&str]| {
        let mut cmd = sb.command(args);
        if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
            cmd.uid(65534).gid(65534);
        }
        cmd
    };
    let args = ["check-config", "-c", cf];
    let lines = check_refused_by(as_user(&args), &args);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let want = format!(
        "chore: {cf}:1: key `fs-queue-root`: queue `a`: cannot create {}/a/new: {} is not writable by this user (uid ",
        root.display(),
        ro.display()
    );
    assert!(lines[0].contains(&want), "{}\nwant {want}", lines[0]);
    // The master fails at start there too.
    let out = as_user(&["-c", cf]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_fails_where_the_log_file_cannot_be_written() {
    let sb = Sandbox::new("cfg-log");
    let log = sb.file("no-such-dir/chore.log");
    let cf = sb.chorefile(&format!(
        "log-file = {:?}\n[queues.a]\nhandler = [\"true\"]\n",
        log.display().to_string()
    ));
    let cf = cf.to_str().unwrap();
    let lines = check_refused(&sb, &["-c", cf]);
    assert_eq!(
        lines,
        [format!(
            "chore: {cf}:3: key `log-file`: cannot create {}: {} does not exist",
            log.display(),
            sb.file("no-such-dir").display()
        )]
    );
    assert_eq!(
        sb.run(&["-c", cf]).status.code(),
        Some(2),
        "the master refuses it too"
    );
    // On the command line, it is the command line's mistake.
    let lines = check_refused(&sb, &["-c", cf, "--log-file", sb.path().to_str().unwrap()]);
    assert!(
        lines[0].starts_with("chore: command line: key `log-file`: ")
            && lines[0].ends_with("is a directory"),
        "{lines:?}"
    );
}

#[test]
fn check_config_fails_where_the_master_could_not_listen() {
    let sb = Sandbox::new("cfg-listen");
    let check = |text: &str| -> (String, String) {
        let cf = sb.chorefile(&format!("{text}\n[queues.a]\nhandler = [\"true\"]\n"));
        let cf = cf.to_str().unwrap().to_string();
        let lines = check_refused(&sb, &["-c", &cf]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        (cf, lines[0].clone())
    };
    // An address another process listens on, and one that is not this machine's.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (cf, line) = check(&format!("metrics-listen = {addr:?}"));
    assert!(
        line.starts_with(&format!(
            "chore: {cf}:3: key `metrics-listen`: cannot listen on {addr}: "
        )),
        "{line}"
    );
    assert_eq!(
        sb.run(&["-c", &cf]).status.code(),
        Some(1),
        "the master refuses it too"
    );
    let (_, line) = check("metrics-listen = \"192.0.2.1:9100\"");
    assert!(line.contains("cannot listen on 192.0.2.1:9100: "), "{line}");
    // A control socket named where it cannot be: a missing directory, a path too long
    // for a socket, a file that is not one.
    let missing = sb.file("no-such-dir/chore.sock");
    let (cf, line) = check(&format!("control-socket = {:?}", missing.to_str().unwrap()));
    assert_eq!(
        line,
        format!(
            "chore: {cf}:3: key `control-socket`: cannot create {}: {} does not exist",
            missing.display(),
            sb.file("no-such-dir").display()
        )
    );
    assert_eq!(
        sb.run(&["-c", &cf]).status.code(),
        Some(1),
        "the master refuses it too"
    );
    let long = sb.file(&format!("{}.sock", "x".repeat(110)));
    let (cf, line) = check(&format!("control-socket = {:?}", long.to_str().unwrap()));
    assert!(
        line.ends_with("a Unix socket's path has at most 107"),
        "{line}"
    );
    assert_eq!(
        sb.run(&["-c", &cf]).status.code(),
        Some(1),
        "the master refuses it too"
    );
    let file = sb.file("plain");
    std::fs::write(&file, "").unwrap();
    let (_, line) = check(&format!("control-socket = {:?}", file.to_str().unwrap()));
    assert!(line.ends_with("exists and is not a socket"), "{line}");
    drop(taken);
}

#[test]
fn check_config_notes_a_running_master_where_it_listens() {
    let sb = Sandbox::new("cfg-listen-running");
    let sock = sb.file("control.sock");
    let addr = crate::observe::free_address();
    let cf = sb.chorefile(&format!(
        "control-socket = {:?}\nmetrics-listen = {addr:?}\n[queues.a]\nhandler = [\"true\"]\n",
        sock.to_str().unwrap()
    ));
    let cf = cf.to_str().unwrap();
    let free = check_ok(&sb, &["-c", cf]);
    assert!(
        !free.contains("# control-socket") && !free.contains("# metrics-listen"),
        "{free}"
    );
    let mut master = sb.start(&[]);
    master.wait_log("metrics served at");
    // Checking before a reload is no mistake: the master's socket and address are noted.
    let out = check_ok(&sb, &["-c", cf]);
    assert!(
        out.contains(&format!(
            "# control-socket {}: a master answers on it now (or it is another user's socket); a second master with this configuration would not start",
            sock.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("# metrics-listen {addr}: in use now, by ")),
        "{out}"
    );
    // A check that does not find the master's socket (under systemd it is in the
    // master's RuntimeDirectory, which an operator's shell does not name) still knows
    // the metrics address for a chore master's by what it serves there.
    master.wait("chore's metrics on the page", || {
        crate::observe::scrape(&addr).contains("chore_")
    });
    let elsewhere = sb.file("elsewhere.sock");
    let out = check_ok(
        &sb,
        &["-c", cf, "--control-socket", elsewhere.to_str().unwrap()],
    );
    assert!(
        out.contains(&format!(
            "# metrics-listen {addr}: in use now, by a running chore master (it serves chore's metrics there)"
        )),
        "{out}"
    );
    assert!(!out.contains("# control-socket"), "{out}");
    assert!(
        master.running(),
        "the check's connections did the master no harm"
    );
    master.stop();
}

#[test]
fn check_config_names_the_periodic_tasks_that_are_never_due() {
    let sb = Sandbox::new("cfg-cron-never");
    sb.write(
        "cron.yaml",
        "version: 1\ncron:\n  - name: nightly\n    url: /tasks/nightly\n    schedule: \"0 3 * * *\"\n  \
         - name: switched-off\n    url: /tasks/off\n    schedule: \"0 0 31 2 *\"\n",
    );
    let cf = sb
        .chorefile("[queues.app]\nhandler = \"http://127.0.0.1:9/\"\ncron-file = \"cron.yaml\"\n");
    // A day that never comes is a way to switch a task off, not a mistake: noted.
    let out = check_ok(&sb, &["-c", cf.to_str().unwrap()]);
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("cron-file = "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.ends_with("2 task(s): nightly, switched-off; never due: switched-off"),
        "{line}"
    );
}

#[test]
fn check_config_fails_where_a_handler_cannot_be_started() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new("cfg-handler");
    let job = sb.script("job.sh", "exit 0");
    let plain = sb.write("plain.sh", "#!/bin/sh\n");
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cf = sb.chorefile(&format!(
        "[queues.a]\nhandler = [\"no-such-program-for-chore\"]\non-permanent-failure = [\"./missing.sh\"]\n\
         [queues.a.classes]\nOk = [{job:?}]\nPlain = [\"./plain.sh\"]\n\
         [queues.b]\nhandler = {{ command = [\"job.sh\"], env = {{ PATH = \"/nowhere\" }} }}\n\
         [queues.c]\nhandler = {{ command = [\"true\"], dir = \"gone\" }}\n"
    ));
    let cf = cf.to_str().unwrap();
    let dir = sb.path().display().to_string();
    let out = sb.run_with_env(
        &["check-config", "-c", cf],
        None,
        &[("PATH", "/usr/bin:/bin")],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "chore: {cf}:4: key `queues.a.handler`: program `no-such-program-for-chore` not found: looked in PATH (/usr/bin:/bin)"
            ),
            format!(
                "chore: {cf}:5: key `queues.a.on-permanent-failure`: program {dir}/missing.sh (relative to the handler's directory {dir}) does not exist"
            ),
            format!(
                "chore: {cf}:8: key `queues.a.classes.Plain`: program {dir}/plain.sh (relative to the handler's directory {dir}) is not executable by this user (uid {})",
                uid()
            ),
            format!(
                "chore: {cf}:10: key `queues.b.handler`: program `job.sh` not found: looked in the handler's env PATH (/nowhere)"
            ),
            format!(
                "chore: {cf}:12: key `queues.c.handler`: its working directory {dir}/gone does not exist"
            ),
        ]
    );
    // A missing program fails each message, not the start: the master runs.
    let mut master = sb.start(&["--queues", "a"]);
    master.wait_log("chore master started");
    assert_eq!(master.stop().code(), Some(0));
}

fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

#[test]
fn check_config_fails_where_config_timeout_is_unreadable() {
    let sb = Sandbox::new("cfg-timeout-file");
    let cf = sb.chorefile("[queues.a]\nhandler = [\"true\"]\n");
    sb.write("queues/a/config/timeout", "soon\n");
    let cf = cf.to_str().unwrap();
    let timeout = sb.root().join("a/config/timeout");
    assert_eq!(
        check_refused(&sb, &["-c", cf]),
        [format!(
            "chore: {cf}:3: key `queues.a`: {}: not a whole number of seconds",
            timeout.display()
        )]
    );
    assert_eq!(
        sb.run(&["-c", cf]).status.code(),
        Some(2),
        "the master refuses it too"
    );
}

#[test]
fn values_that_cannot_work_are_refused_by_both() {
    let sb = Sandbox::new("cfg-cannot-work");
    let p = preamble(&sb);
    let q = "[queues.a]\nhandler = [\"true\"]\n";
    let sqs = "[queues.s]\nbackend = \"sqs\"\nhandler = [\"true\"]\ntimeout = 43201\n";
    for (text, want) in [
        (
            format!("{p}concurrency = 3000000000\n{q}"),
            "Chorefile:3: key `concurrency`: 3000000000 is out of range: must be from 1 to 4096",
        ),
        (
            format!("{p}batch-size = 100000\n{q}"),
            "Chorefile:3: key `batch-size`: 100000 is out of range: must be from 1 to 10000",
        ),
        (
            format!("fs-queue-root = \"x\"\nconsumer-sleep-interval = 0\n{q}"),
            "Chorefile:2: key `consumer-sleep-interval`: 0 is not valid: must be at least 0.01 seconds",
        ),
        (
            format!("{p}{sqs}"),
            "Chorefile:6: key `queues.s.timeout`: 43201 is beyond SQS's 12-hour visibility limit (43200 seconds)",
        ),
    ] {
        let line = rejected(&sb, &text, &[]);
        assert!(line.contains(want), "{line}\nwant {want}");
    }
}

#[test]
fn every_mistake_is_one_line_in_file_order() {
    let sb = Sandbox::new("cfg-many");
    let text = format!(
        "{}concurency = 3\nbatch-timeout = \"soon\"\n[queues.a]\nhandler = [\"true\"]\ntimout = 5\nmax-attempts = 0\n",
        preamble(&sb)
    );
    let cf = sb.write("Chorefile", &text);
    let cf = cf.to_str().unwrap();
    let want = [
        format!("chore: {cf}:3: key `concurency`: unknown key (did you mean `concurrency`?)"),
        format!("chore: {cf}:4: key `batch-timeout`: expected a number of seconds, found a string"),
        format!("chore: {cf}:7: key `queues.a.timout`: unknown key (did you mean `timeout`?)"),
        format!("chore: {cf}:8: key `queues.a.max-attempts`: 0 is out of range: must be at least 1"),
        "chore: command line: key `shutdown-timeout`: -5 is not valid: must be a number of seconds ≥ 0".to_string(),
    ];
    assert_eq!(
        check_refused(&sb, &["-c", cf, "--shutdown-timeout", "-5"]),
        want
    );
    let out = sb.run(&["-c", cf, "--shutdown-timeout", "-5"]);
    assert_eq!(out.status.code(), Some(2));
    let master: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(master, want, "the master says the same");
    assert!(!sb.root().exists());
}

#[test]
fn unknown_names_get_the_nearest_known_one() {
    let sb = Sandbox::new("cfg-suggest");
    let p = preamble(&sb);
    let q = "[queues.mail]\nhandler = [\"true\"]\n";
    for (text, extra, want) in [
        (
            format!("{p}[queue.mail]\nhandler = [\"true\"]\n"),
            &[][..],
            "Chorefile:3: key `queue`: unknown key (did you mean `[queues.mail]`?)",
        ),
        (
            format!("{p}queue_polling_size = 3\n{q}"),
            &[],
            "Chorefile:3: key `queue_polling_size`: unknown key (did you mean `queue-polling-size`?)",
        ),
        (
            format!("{p}{q}hanlder = [\"x\"]\n"),
            &[],
            "Chorefile:5: key `queues.mail.hanlder`: unknown key (did you mean `handler`?)",
        ),
        (
            format!("{p}[queues.mail]\nhandler = {{ command = [\"true\"], mod = \"batch\" }}\n"),
            &[],
            "unknown handler key `mod` (did you mean `mode`?)",
        ),
        (
            format!("{p}{q}backend = \"sq\"\n"),
            &[],
            "unknown backend `sq` (known: filesystem, sqs) (did you mean `sqs`?)",
        ),
        (
            format!("{p}{q}"),
            &["--queues", "mial"],
            "command line: key `queues`: unknown queue `mial` (did you mean `mail`?) (declared: mail)",
        ),
        (
            "--concurency 3\n".to_string(),
            &[],
            "Chorefile:1: key `concurency`: unknown option `--concurency` (did you mean `--concurrency`?)",
        ),
    ] {
        let line = rejected(&sb, &text, extra);
        assert!(line.contains(want), "{line}\nwant {want}");
    }
}

#[test]
fn a_command_line_value_is_never_blamed_on_a_chorefile_line() {
    let sb = Sandbox::new("cfg-blame");
    let text = format!(
        "{}concurrency = 3\nqueue-prefix = \"ok_\"\n[queues.a]\nhandler = [\"true\"]\n",
        preamble(&sb)
    );
    let line = rejected(&sb, &text, &["--concurrency", "0"]);
    assert_eq!(
        line,
        "chore: command line: key `concurrency`: 0 is out of range: must be from 1 to 4096"
    );
    // A prefix from the command line that makes the Chorefile's queue name unusable: the
    // queue's table is named, and so is where the prefix came from.
    let line = rejected(&sb, &text, &["--queue-prefix", "a."]);
    assert!(
        line.contains("Chorefile:5: key `queues.a`")
            && line.ends_with("queue-prefix `a.` comes from command line"),
        "{line}"
    );
    // A Ruby-format Chorefile's value is the Chorefile's.
    let ruby = sb.write("Chorefile.ruby", "--concurrency 0\n");
    let toml = sb.write("Chorefile", &text.replace("concurrency = 3\n", ""));
    let out = sb.run(&[
        "check-config",
        "-c",
        ruby.to_str().unwrap(),
        "-c",
        toml.to_str().unwrap(),
    ]);
    let line = one_line_exit_2(&out, &["check-config"]);
    assert!(
        line.contains("Chorefile.ruby:1: key `concurrency`"),
        "{line}"
    );
}

#[test]
fn check_config_prints_everything_it_resolved() {
    let sb = Sandbox::new("cfg-print");
    let job = sb.script("job.sh", "exit 0");
    let cf = sb.chorefile(&format!(
        "concurrency = 3\naws-access-key = \"AKIA\"\naws-secret-key = \"s3cret-for-test\"\n\
         [queues.mail]\nhandler = [{job:?}, \"--fast\"]\ntimeout = 30\nbackoff = [1, 5]\nmax-attempts = 4\n\
         [queues.mail.classes]\nWelcome = {{ command = [\"true\"], mode = \"batch\", env = {{ TOKEN = \"t0ken-for-test\" }} }}\n\
         [queues.orders]\nbackend = \"sqs\"\nhandler = [\"true\"]\ndedupe-key = \"order_id\"\n\
         [queues.idle]\nhandler = [\"true\"]\n"
    ));
    let cf = cf.to_str().unwrap();
    let out = check_ok(&sb, &["-c", cf, "--batch-size", "7", "-x", "idle"]);
    // Every Chorefile key the documentation lists (a unit test ties that table to the
    // options chore has).
    for key in documented_keys() {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{key} = "))),
            "{key} is not printed:\n{out}"
        );
    }
    let dir = sb.path().display().to_string();
    for want in [
        format!("concurrency = 3  # {cf}:3"),
        "batch-size = 7  # command line".to_string(),
        "max-attempts = unlimited  # default".to_string(),
        format!("queue mail (mail)  # {cf}:6"),
        "  backend = filesystem  # default".to_string(),
        format!(
            "  directory = {:?}  # fs-queue-root + name",
            sb.root().join("mail").display().to_string()
        ),
        format!("  timeout = 30  # {cf}:8"),
        format!(
            "  handler = [{job:?}, \"--fast\"]  # {cf}:7; message mode, in {dir}, runs {dir}/job.sh"
        ),
        format!("  classes.Welcome = [\"true\"]  # {cf}:12; batch mode, in {dir}, runs "),
        format!("  backoff = [1, 5] seconds  # {cf}:9"),
        format!("  max-attempts = 4  # {cf}:10"),
        "  dedupe = false  # default".to_string(),
        "queue orders (orders)".to_string(),
        "  backend = sqs".to_string(),
        "  timeout = the SQS queue's visibility timeout, read at start  # default".to_string(),
        format!("  dedupe = true (on the body's `order_id`)  # {cf}:16"),
        "# declared, not consumed: idle".to_string(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
    assert!(out.contains(", env TOKEN"), "{out}");
    for secret in ["s3cret-for-test", "t0ken-for-test"] {
        assert!(!out.contains(secret), "a secret is printed:\n{out}");
    }
    assert!(!out.lines().any(|l| l.starts_with("queue idle")), "{out}");
    // Nothing was created.
    assert!(!sb.root().exists());
}

#[test]
fn the_documented_check_config_sample_is_the_real_output() {
    // Run as the documentation did: in a directory holding Chorefile.example and examples/.
    let sb = Sandbox::new("cfg-doc-sample");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(repo.join("Chorefile.example"), sb.file("Chorefile.example")).unwrap();
    let status = std::process::Command::new("cp")
        .args([
            "-a",
            repo.join("examples").to_str().unwrap(),
            sb.path().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let path = "/usr/local/bin:/usr/bin:/bin";
    let mut cmd = sb.command(&["check-config", "-c", "Chorefile.example"]);
    cmd.env_clear().env("PATH", path);
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python = path
        .split(':')
        .map(|d| format!("{d}/python3"))
        .find(|p| std::path::Path::new(p).exists())
        .expect("python3, which the example needs");
    let real = String::from_utf8(out.stdout)
        .unwrap()
        .replace(&sb.path().display().to_string(), "/srv/app")
        .replace(&python, "/usr/bin/python3");
    let doc = std::fs::read_to_string(repo.join("docs/configuration.md")).unwrap();
    let marker = "$ chore check-config -c Chorefile.example\n";
    let start = doc.find(marker).expect("the sample") + marker.len();
    let sample = &doc[start..start + doc[start..].find("```").unwrap()];
    assert_eq!(
        real, sample,
        "docs/configuration.md's check-config sample is not the real output"
    );
}
