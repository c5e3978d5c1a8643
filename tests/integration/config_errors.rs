//! Configuration mistakes: one line naming file, line and key; exit 2; nothing started.

use crate::harness::*;

/// Run the master on `Chorefile` (written as given, no preamble) with `extra` flags; it must
/// fail at once with status 2 and one line on stderr, which is returned.
fn rejected(sb: &Sandbox, chorefile: &str, extra: &[&str]) -> String {
    let cf = sb.write("Chorefile", chorefile);
    let mut args = vec!["-c", cf.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = sb.run(&args);
    one_line_exit_2(&out, &args);
    assert!(
        !sb.root().exists() && !sb.file("chore-queues").exists(),
        "queues were created although the configuration was rejected"
    );
    let line = String::from_utf8(out.stderr).unwrap();
    // check-config says the same.
    let mut check = vec!["check-config"];
    check.extend_from_slice(&args);
    let out = sb.run(&check);
    one_line_exit_2(&out, &check);
    assert_eq!(String::from_utf8(out.stderr).unwrap(), line);
    line.trim().to_string()
}

fn preamble(sb: &Sandbox) -> String {
    sb.preamble()
}

#[test]
fn an_unknown_top_level_key() {
    let sb = Sandbox::new("cfg-unknown");
    let text = format!(
        "{}concurency = 3\n[queues.a]\nhandler = [\"true\"]\n",
        preamble(&sb)
    );
    let line = rejected(&sb, &text, &[]);
    assert!(
        line.contains("Chorefile:3: key `concurency`: unknown key"),
        "{line}"
    );
}

#[test]
fn an_unknown_key_in_a_queue_table() {
    let sb = Sandbox::new("cfg-unknown-queue-key");
    let text = format!(
        "{}[queues.a]\nhandler = [\"true\"]\nretries = 3\n",
        preamble(&sb)
    );
    let line = rejected(&sb, &text, &[]);
    assert!(
        line.contains("Chorefile:5: key `queues.a.retries`"),
        "{line}"
    );
    assert!(line.contains("unknown key"), "{line}");
}

#[test]
fn a_bad_backoff_expression() {
    let sb = Sandbox::new("cfg-backoff");
    let text = format!(
        "{}[queues.a]\nhandler = [\"true\"]\nbackoff = \"attempt ^^ 2\"\n",
        preamble(&sb)
    );
    let line = rejected(&sb, &text, &[]);
    assert!(
        line.contains("Chorefile:5: key `queues.a.backoff`"),
        "{line}"
    );
    assert!(line.contains("attempt ^^ 2"), "{line}");
    // An expression of something other than `attempt`.
    let text = format!(
        "{}[queues.a]\nhandler = [\"true\"]\nbackoff = \"retries * 2\"\n",
        preamble(&sb)
    );
    let line = rejected(&sb, &text, &[]);
    assert!(
        line.contains("Chorefile:5: key `queues.a.backoff`"),
        "{line}"
    );
    assert!(line.contains("retries"), "{line}");
}

#[test]
fn bad_values() {
    let sb = Sandbox::new("cfg-values");
    let p = preamble(&sb);
    let q = "[queues.a]\nhandler = [\"true\"]\n";
    let line = rejected(&sb, &format!("{p}concurrency = \"many\"\n{q}"), &[]);
    assert!(line.contains("Chorefile:3: key `concurrency`"), "{line}");
    let line = rejected(
        &sb,
        &format!("{p}[queues.a]\nhandler = \"./run.sh --fast\"\n"),
        &[],
    );
    assert!(
        line.contains("Chorefile:4: key `queues.a.handler`"),
        "{line}"
    );
    let line = rejected(
        &sb,
        &format!("{p}[queues.a]\nhandler = [\"true\"]\ntimeout = \"soon\"\n"),
        &[],
    );
    assert!(
        line.contains("Chorefile:5: key `queues.a.timeout`"),
        "{line}"
    );
    let line = rejected(
        &sb,
        &format!("{p}[queues.a]\nhandler = {{ command = [\"x\"], mode = \"bulk\" }}\n"),
        &[],
    );
    assert!(
        line.contains("Chorefile:4: key `queues.a.handler`"),
        "{line}"
    );
    let line = rejected(&sb, &format!("{p}log-format = \"xml\"\n{q}"), &[]);
    assert!(line.contains("log-format"), "{line}");
    let line = rejected(&sb, &format!("{p}[queues.a]\ntimeout = 5\n"), &[]);
    assert!(line.contains("queues.a"), "a queue with no handler: {line}");
    assert!(line.contains("handler"), "{line}");
}

#[test]
fn a_toml_syntax_error() {
    let sb = Sandbox::new("cfg-syntax");
    let line = rejected(
        &sb,
        &format!("{}[queues.a\nhandler = [\"true\"]\n", preamble(&sb)),
        &[],
    );
    assert!(line.contains("Chorefile:3"), "{line}");
}

#[test]
fn queues_together_with_except_queues() {
    let sb = Sandbox::new("cfg-both");
    let text = format!(
        "{}[queues.a]\nhandler = [\"true\"]\n[queues.b]\nhandler = [\"true\"]\n",
        preamble(&sb)
    );
    let line = rejected(&sb, &text, &["--queues", "a", "--except-queues", "b"]);
    assert!(line.contains("--queues"), "{line}");
    assert!(line.contains("--except-queues"), "{line}");
    // Ruby Chore's spelling of the same mistake.
    let line = rejected(&sb, &text, &["-q", "a", "-x", "b"]);
    assert!(line.contains("--except-queues"), "{line}");
    // One in the Chorefile, the other on the command line: the command line beats the
    // Chorefile, so its selection replaces the file's.
    let text2 = format!("except-queues = [\"a\"]\n{text}");
    let cf = sb.write("Chorefile", &text2);
    let out = sb.run(&["check-config", "-c", cf.to_str().unwrap(), "--queues", "a"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("queue a ") && !stdout.contains("queue b "),
        "{stdout}"
    );
}

#[test]
fn an_unknown_queue_name() {
    let sb = Sandbox::new("cfg-unknown-queue");
    let text = format!(
        "{}[queues.a]\nhandler = [\"true\"]\n[queues.b]\nhandler = [\"true\"]\n",
        preamble(&sb)
    );
    let line = rejected(&sb, &text, &["--queues", "a,nope"]);
    assert!(line.contains("unknown queue `nope`"), "{line}");
    assert!(line.contains("a, b"), "lists the declared queues: {line}");
    let line = rejected(&sb, &text, &["--except", "zzz"]);
    assert!(line.contains("unknown queue `zzz`"), "{line}");
}

#[test]
fn a_ruby_format_chorefile_with_an_unknown_flag() {
    let sb = Sandbox::new("cfg-ruby");
    let line = rejected(
        &sb,
        "# Ruby Chore options\n--concurrency 2\n--frobnicate 3\n",
        &[],
    );
    assert!(line.contains("Chorefile:3"), "{line}");
    assert!(line.contains("frobnicate"), "{line}");
    let line = rejected(&sb, "--concurrency many\n", &[]);
    assert!(line.contains("Chorefile:1"), "{line}");
    assert!(line.contains("concurrency"), "{line}");
}

#[test]
fn a_ruby_format_chorefile_is_read() {
    // An existing Ruby Chore deployment's Chorefile, with the queues added in TOML.
    let sb = Sandbox::new("cfg-ruby-ok");
    let ruby = sb.write(
        "Chorefile.ruby",
        "--concurrency 7\n--batch-size=20\n--queue_polling_size 5\n\
         --require ./app.rb\n--queue-prefix Staging_\n",
    );
    let toml = sb.chorefile("[queues.mail]\nhandler = [\"true\"]\n");
    let out = sb.run(&[
        "check-config",
        "-c",
        ruby.to_str().unwrap(),
        "-c",
        toml.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("concurrency = 7"), "{stdout}");
    assert!(stdout.contains("batch-size = 20"), "{stdout}");
    assert!(
        stdout.contains("staging_mail"),
        "prefix, lower-cased: {stdout}"
    );
    // A flag beats both files.
    let out = sb.run(&[
        "check-config",
        "-c",
        ruby.to_str().unwrap(),
        "-c",
        toml.to_str().unwrap(),
        "--concurrency",
        "3",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("concurrency = 3"));
}

#[test]
fn a_missing_chorefile() {
    let sb = Sandbox::new("cfg-missing");
    let path = sb.file("NoSuchChorefile");
    let args = ["-c", path.to_str().unwrap()];
    let out = sb.run(&args);
    one_line_exit_2(&out, &args);
    assert!(String::from_utf8_lossy(&out.stderr).contains("NoSuchChorefile"));
}

#[test]
fn values_checked_after_parsing_still_name_file_and_line() {
    // Every mistake in a Chorefile is pinned to its file, line and key, including values
    // that are well-typed TOML but out of range.
    let sb = Sandbox::new("cfg-late");
    let p = preamble(&sb);
    let q = "[queues.a]\nhandler = [\"true\"]\n";
    let cases = [
        (
            format!("{p}concurrency = 0\n{q}"),
            "Chorefile:3: key `concurrency`",
        ),
        (
            format!("{p}log-format = \"xml\"\n{q}"),
            "Chorefile:3: key `log-format`",
        ),
        (
            format!("{p}fs-claim-lease = 1\n{q}"),
            "Chorefile:3: key `fs-claim-lease`",
        ),
        (
            format!("{p}{q}max-attempts = 0\n"),
            "Chorefile:5: key `queues.a.max-attempts`",
        ),
        (
            format!("{p}{q}timeout = 0\n"),
            "Chorefile:5: key `queues.a.timeout`",
        ),
    ];
    let mut wrong = Vec::new();
    for (text, want) in &cases {
        let line = rejected(&sb, text, &[]);
        if !line.contains(want) {
            wrong.push(format!("want {want:?}, got {line:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn help_documents_every_option() {
    let sb = Sandbox::new("help");
    let out = sb.run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--config-file",
        "--concurrency",
        "--batch-size",
        "--batch-timeout",
        "--strict-batching",
        "--threads-per-queue",
        "--queue-polling-size",
        "--consumer-sleep-interval",
        "--queue-prefix",
        "--max-attempts",
        "--default-queue-timeout",
        "--shutdown-timeout",
        "--fs-queue-root",
        "--fs-claim-lease",
        "--queues",
        "--except-queues",
        "--log-file",
        "--log-format",
        "--log-level",
        "--verbose",
        "enqueue",
        "check-config",
    ] {
        assert!(help.contains(opt), "--help does not mention {opt}:\n{help}");
    }
    assert!(help.contains("--except"), "Ruby Chore's alias is shown");
}

#[test]
fn good_backoffs_are_accepted() {
    let sb = Sandbox::new("cfg-good-backoff");
    for backoff in [
        "\"min(2 ^ attempt, 900)\"",
        "\"attempt ^ 2\"",
        "\"attempt ** 2\"",
        "\"attempt * 0\"",
        "[5, 30, 300]",
        "10",
        "2.5",
    ] {
        let cf = sb.chorefile(&format!(
            "[queues.a]\nhandler = [\"true\"]\nbackoff = {backoff}\n"
        ));
        let out = sb.run(&["check-config", "-c", cf.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "backoff = {backoff}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------
// check-config says no wherever the master would refuse to start, and where every message
// would fail; it prints everything it resolved; every unknown name gets a suggestion.

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
fn check_ok(sb: &Sandbox, args: &[&str]) -> String {
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

#[test]
fn enqueue_to_an_undeclared_queue_needs_force() {
    let sb = Sandbox::new("cfg-enqueue-force");
    let cf = sb.chorefile("[queues.mail]\nhandler = [\"true\"]\n");
    let cf = cf.to_str().unwrap();
    let args = ["enqueue", "-c", cf, "mial", "{}"];
    let out = sb.run(&args);
    let line = one_line_exit_2(&out, &args);
    assert_eq!(
        line,
        format!(
            "chore enqueue: queue `mial` is not declared in {cf} (did you mean `mail`?) (declared: mail); give --force to publish to it anyway"
        )
    );
    assert!(!sb.queue("mial").path.exists(), "nothing was published");
    let out = sb.run(&["enqueue", "-c", cf, "--force", "mial", "{}"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sb.queue("mial").new_files().len(), 1);
    // A declared queue needs no --force.
    sb.enqueue("mail", "{}");
}

/// The Chorefile keys in docs/configuration.md's option table: the second column of each
/// row that starts with a flag.
fn documented_keys() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let keys: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with("| `-"))
        .filter_map(|l| {
            let column = l.split(" | ").nth(1)?;
            let key = column.strip_prefix('`')?.split('`').next()?;
            Some(key.to_string())
        })
        .collect();
    assert!(keys.len() > 20, "the option table was not found: {keys:?}");
    keys
}

/// A queue-prefix that would put a queue outside the queue root is
/// refused, naming the option and where it was given, by the master, check-config and
/// enqueue alike; nothing is written anywhere.
#[test]
fn a_queue_prefix_that_leaves_the_queue_root_is_refused() {
    let sb = Sandbox::new("cfg-prefix-escape");
    let elsewhere = sb.file("elsewhere");
    let outside = format!("{}/", elsewhere.display());
    let queue = "[queues.jobs]\nhandler = [\"true\"]\n";
    for bad in [outside.as_str(), "../", ".hidden-", "a..b", "x/y"] {
        // On the command line.
        let line = rejected(
            &sb,
            &format!("{}{queue}", preamble(&sb)),
            &["--queue-prefix", bad],
        );
        assert!(
            line.starts_with("chore: command line: key `queue-prefix`:"),
            "{line}"
        );
        assert!(line.contains("may not contain `/`, `..` or NUL"), "{line}");
        // In the Chorefile, on its line.
        let text = format!("{}queue-prefix = {bad:?}\n{queue}", preamble(&sb));
        let line = rejected(&sb, &text, &[]);
        assert!(line.contains("Chorefile:3: key `queue-prefix`:"), "{line}");
        // enqueue, to a declared queue and to any other name.
        let cf = sb.file("Chorefile");
        let cf = cf.to_str().unwrap();
        for args in [
            vec!["enqueue", "-c", cf, "jobs", "{}"],
            vec!["enqueue", "-c", cf, "--force", "x", "{}"],
            vec![
                "enqueue",
                "-c",
                cf,
                "--force",
                "--queue-prefix",
                bad,
                "x",
                "{}",
            ],
        ] {
            let out = sb.run(&args);
            let line = one_line_exit_2(&out, &args);
            assert!(line.contains("key `queue-prefix`"), "{line}");
        }
    }
    assert!(!elsewhere.exists(), "nothing was written outside the root");
    assert!(!sb.file("x").exists() && !sb.root().exists());
}

/// A queue name that cannot be a directory name under the root is refused on its line, and
/// `enqueue --force` refuses the same names.
#[test]
fn a_queue_name_with_a_space_or_a_control_character_is_refused() {
    let sb = Sandbox::new("cfg-queue-name");
    for name in ["a b", "tab\\tbed", "nul\\u0000"] {
        let text = format!(
            "{}[queues.ok]\nhandler = [\"true\"]\n[queues.\"{name}\"]\nhandler = [\"true\"]\n",
            preamble(&sb)
        );
        let line = rejected(&sb, &text, &[]);
        assert!(line.contains("Chorefile:5: key `queues."), "{line}");
        assert!(line.contains("spaces or control characters"), "{line}");
    }
    let cf = sb.file("Chorefile");
    let cf = cf.to_str().unwrap();
    for name in ["a b", "../x", "x.y"] {
        let args = ["enqueue", "-c", cf, "--force", name, "{}"];
        let line = one_line_exit_2(&sb.run(&args), &args);
        assert!(line.contains("not be empty"), "{line}");
    }
    assert!(!sb.root().exists(), "nothing was written");
}

/// A byte-order mark is skipped, in either format; a file that is not UTF-8 is refused on
/// the line of its first bad byte.
#[test]
fn a_byte_order_mark_is_skipped_and_bad_utf8_is_located() {
    let sb = Sandbox::new("cfg-encoding");
    let toml = format!(
        "\u{feff}{}[queues.a]\nhandler = [\"true\"]\n",
        preamble(&sb)
    );
    let cf = sb.write("Chorefile", &toml);
    let out = check_ok(&sb, &["-c", cf.to_str().unwrap()]);
    assert!(out.contains("queue a"), "{out}");
    let ruby = sb.write("ruby.opts", "\u{feff}--concurrency 3\n");
    let out = check_ok(
        &sb,
        &["-c", ruby.to_str().unwrap(), "-c", cf.to_str().unwrap()],
    );
    assert!(out.contains("concurrency = 3"), "{out}");
    let mut bytes = format!("{}# caf", preamble(&sb)).into_bytes();
    bytes.extend_from_slice(b"\xe9\n[queues.a]\nhandler = [\"true\"]\n");
    std::fs::write(sb.file("Chorefile"), bytes).unwrap();
    let cf = sb.file("Chorefile");
    let args = ["check-config", "-c", cf.to_str().unwrap()];
    let line = one_line_exit_2(&sb.run(&args), &args);
    assert!(
        line.contains("Chorefile:3: not UTF-8 text: an invalid byte at column 6"),
        "{line}"
    );
}

/// Loading is linear in the number of queues (it was quadratic: 4,000 queues took 8 s, 20,000
/// more than 20 s in a debug build; now about a second).
#[test]
fn thousands_of_queues_load_quickly() {
    let sb = Sandbox::new("cfg-many-queues");
    let text: String = (0..20_000)
        .map(|i| format!("[queues.q{i}]\nhandler = [\"true\"]\n"))
        .collect();
    // (`enqueue` takes no --except-queues: the selection is the Chorefile's here.)
    let except: String = (0..20_000)
        .step_by(2)
        .map(|i| format!("\"q{i}\","))
        .collect();
    let cf = sb.write(
        "Chorefile",
        &format!("{}except-queues = [{except}]\n{text}", preamble(&sb)),
    );
    // CPU time, not wall time, so a busy machine does not fail it: bash's `time` reports
    // the command's own user and system seconds on stderr's last line.
    let script = r#"TIMEFORMAT='%3U %3S'; time "$@""#;
    let out = std::process::Command::new("bash")
        .args(["-c", script, "bash", CHORE, "enqueue", "-c"])
        .arg(&cf)
        .args(["q19999", "{}"])
        .current_dir(sb.path())
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cpu: f64 = stderr
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .map(|s| s.parse::<f64>().expect("seconds"))
        .sum();
    // Linear loading takes about 1.2 s of CPU in a debug build; quadratic took over 20.
    assert!(cpu < 8.0, "took {cpu} s of CPU: {stderr}");
}
