//! Configuration mistakes: one line naming file, line and key; exit 2; nothing started.

use crate::check_config::check_ok;
use crate::harness::*;

/// Run the master on `Chorefile` (written as given, no preamble) with `extra` flags; it must
/// fail at once with status 2 and one line on stderr, which is returned.
pub(crate) fn rejected(sb: &Sandbox, chorefile: &str, extra: &[&str]) -> String {
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

pub(crate) fn preamble(sb: &Sandbox) -> String {
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
pub(crate) fn documented_keys() -> Vec<String> {
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
