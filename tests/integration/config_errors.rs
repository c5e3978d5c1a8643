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
