//! `load` end to end: Chorefiles and flags, precedence, origins and collected mistakes.

use super::*;

fn flags(words: &[&str]) -> Flags {
    Flags::from_words(words).unwrap()
}

/// Write `text` as a Chorefile of its own and load it under `cli`.
fn load_text(text: &str, cli: Flags) -> Result<Config, ConfigErrors> {
    load_files(&[text], cli)
}

fn load_files(texts: &[&str], mut cli: Flags) -> Result<Config, ConfigErrors> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("chore-config-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let file = dir.join(if i == 0 {
            "Chorefile".into()
        } else {
            format!("Chorefile{i}")
        });
        std::fs::write(&file, text).unwrap();
        files.push(file);
    }
    files.append(&mut cli.config_file);
    cli.config_file = files;
    load(cli)
}

fn lines(e: &ConfigErrors) -> Vec<String> {
    e.iter().map(ToString::to_string).collect()
}

const BASIC: &str = r#"
concurrency = 3
batch-timeout = 0.5

[queues.mail]
handler = ["./send.sh", "--fast"]
backoff = "min(2 ^ attempt, 900)"
max-attempts = 5

[queues.report]
handler = { command = ["report"], mode = "batch" }
timeout = 30
"#;

#[test]
fn file_beats_defaults_and_flags_beat_file() {
    let c = load_text(BASIC, Flags::default()).unwrap();
    assert_eq!(c.concurrency, 3);
    assert_eq!(c.batch_size, 50);
    assert_eq!(c.batch_timeout, Duration::from_millis(500));
    assert_eq!(c.default_queue_timeout, Duration::from_secs(43_200));
    assert_eq!(c.fs_queue_root, PathBuf::from("./chore-queues"));
    let c = load_text(BASIC, flags(&["--concurrency", "9"])).unwrap();
    assert_eq!(c.concurrency, 9);
    assert_eq!(c.declared.len(), 2);
    let mail = c.queue("mail").unwrap();
    assert_eq!(mail.max_attempts, Some(5));
    assert_eq!(mail.handler.as_ref().unwrap().mode, HandlerMode::Message);
    let report = c.queue("report").unwrap();
    assert_eq!(report.handler.as_ref().unwrap().mode, HandlerMode::Batch);
    assert_eq!(report.timeout, Some(Duration::from_secs(30)));
}

#[test]
fn a_later_file_wins_key_by_key_and_verbose_adds_up() {
    let second = "concurrency = 5\nverbose = 1\n[queues.mail]\nmax-attempts = 2\n";
    let c = load_files(&[BASIC, second], flags(&["-v"])).unwrap();
    assert_eq!(c.concurrency, 5);
    assert_eq!(c.batch_timeout, Duration::from_millis(500));
    let mail = c.queue("mail").unwrap();
    assert_eq!((mail.max_attempts, mail.handler.is_some()), (Some(2), true));
    assert_eq!(c.log_level, tracing::Level::TRACE);
}

#[test]
fn every_mistake_is_reported_at_its_own_place() {
    let text = "concurrency = 0\nconcurency = 3\nbatch-size = \"x\"\n[queues.a]\nhandlr = [\"x\"]\n\
                [queues.b]\ntimeout = 5\n";
    let e = load_text(text, flags(&["--shutdown-timeout", "-1"])).unwrap_err();
    let got: Vec<String> = lines(&e)
        .iter()
        .map(|l| {
            l.rsplit_once("/Chorefile")
                .map_or(l.clone(), |(_, rest)| format!("Chorefile{rest}"))
        })
        .collect();
    assert_eq!(
        got,
        [
            "Chorefile:1: key `concurrency`: 0 is out of range: must be from 1 to 4096",
            "Chorefile:2: key `concurency`: unknown key (did you mean `concurrency`?)",
            "Chorefile:3: key `batch-size`: expected a whole number, found a string",
            // A mistyped key brings no second mistake (queue a has a handler, misspelt) …
            "Chorefile:5: key `queues.a.handlr`: unknown key (did you mean `handler`?)",
            // … but a queue with none at all is one.
            "Chorefile:6: key `queues.b`: the queue has no handler (set `handler`, or `classes` to route by job class)",
            "command line: key `shutdown-timeout`: -1 is not valid: must be a number of seconds ≥ 0",
        ]
    );
}

#[test]
fn a_command_line_value_is_never_blamed_on_a_chorefile_line() {
    let e = load_text(BASIC, flags(&["--concurrency", "100000"])).unwrap_err();
    assert_eq!(
        lines(&e),
        ["command line: key `concurrency`: 100000 is out of range: must be from 1 to 4096"]
    );
    let e = load_text(
        "max-attempts = 3\n[queues.a]\nhandler = [\"x\"]\n",
        flags(&["--max-attempts", "0"]),
    )
    .unwrap_err();
    assert_eq!(
        lines(&e),
        ["command line: key `max-attempts`: 0 is out of range: must be at least 1"]
    );
    let e = load_text(BASIC, flags(&["--queues", "mial"])).unwrap_err();
    assert_eq!(
        lines(&e),
        [
            "command line: key `queues`: unknown queue `mial` (did you mean `mail`?) (declared: mail, report)"
        ]
    );
}

#[test]
fn the_master_refuses_values_that_cannot_work() {
    for (text, want) in [
        (
            "consumer-sleep-interval = 0\n",
            "key `consumer-sleep-interval`: 0 is not valid: must be at least 0.01 seconds",
        ),
        (
            "concurrency = 3000000000\n",
            "key `concurrency`: 3000000000 is out of range",
        ),
        (
            "[queues.s]\nbackend = \"sqs\"\nhandler = [\"x\"]\ntimeout = 50000\n",
            "key `queues.s.timeout`: 50000 is beyond SQS's 12-hour",
        ),
    ] {
        let e = load_text(text, Flags::default()).unwrap_err();
        assert!(e[0].to_string().contains(want), "{e}");
    }
}

#[test]
fn toml_syntax_error_has_a_line_and_stops_there() {
    let e = load_text("concurrency = 2\n[queues.a\n", flags(&["--queues", "a"])).unwrap_err();
    assert_eq!(e.len(), 1, "{e}");
    assert_eq!(e[0].line(), Some(2), "{e}");
}

#[test]
fn a_duplicate_key_is_named_at_its_second_line() {
    for (text, line, key) in [
        (
            "concurrency = 2\nbatch-size = 3\nconcurrency = 4\n",
            3,
            "concurrency",
        ),
        (
            "[queues.a]\nhandler = [\"true\"]\ntimeout = 3\n\"timeout\" = 4\n",
            4,
            "timeout",
        ),
    ] {
        let e = load_text(text, Flags::default()).unwrap_err();
        assert_eq!(e[0].line(), Some(line), "{e}");
        assert!(
            e[0].to_string()
                .contains(&format!("key `{key}`: duplicate key")),
            "{e}"
        );
    }
}

#[test]
fn queues_and_except_are_exclusive_and_checked() {
    let e = load_text(BASIC, flags(&["-q", "mail", "-x", "report"])).unwrap_err();
    assert!(e[0].message.contains("both"));
    let e = load_text(BASIC, flags(&["--queues", "nope"])).unwrap_err();
    assert!(e[0].message.contains("unknown queue `nope`"));
    let c = load_text(BASIC, flags(&["--except-queues", "mail"])).unwrap();
    let names: Vec<&str> = c.selected_queues().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["report"]);
    // The command line's selection replaces the file's, whichever form each used.
    let c = load_files(
        &[&format!("except-queues = [\"report\"]\n{BASIC}")],
        flags(&["-q", "report"]),
    )
    .unwrap();
    let names: Vec<&str> = c.selected_queues().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["report"]);
}

#[test]
fn ruby_chorefile_is_read() {
    let text = "--concurrency 7\n--batch-size=20\n--queue_polling_size 5\n--queue-prefix Staging_\n-v\n--require ./app.rb\n";
    let c = load_text(text, Flags::default()).unwrap();
    assert_eq!(
        (c.concurrency, c.batch_size, c.queue_polling_size),
        (7, 20, 5)
    );
    assert_eq!(c.queue_prefix, "staging_");
    assert_eq!(c.log_level, tracing::Level::DEBUG);
    assert_eq!(c.ignored_options, vec!["--require"]);
    let e = load_text("--concurrency 2\n--frobnicate 3\n", Flags::default()).unwrap_err();
    assert_eq!(e[0].line(), Some(2), "{e}");
    let e = load_text("--concurrency many\n", Flags::default()).unwrap_err();
    assert_eq!(e[0].line(), Some(1), "{e}");
    let e = load_text("--concurrency 0\n", Flags::default()).unwrap_err();
    assert_eq!(
        e[0].line(),
        Some(1),
        "range mistakes keep their line too: {e}"
    );
}

#[test]
fn queue_prefix_applies_to_full_name() {
    let c = load_text(BASIC, flags(&["--queue-prefix", "Prod-"])).unwrap();
    assert_eq!(c.queue("mail").unwrap().full_name, "prod-mail");
}

#[test]
fn handler_dir_defaults_to_chorefile_dir() {
    let c = load_text(BASIC, Flags::default()).unwrap();
    let h = c.queue("mail").unwrap().handler.clone().unwrap();
    assert_eq!(h.dir.as_deref(), c.files[0].parent());
}

#[test]
fn aws_keys_come_in_pairs() {
    let e = load_text(BASIC, flags(&["--aws-access-key", "AKIA"])).unwrap_err();
    assert_eq!(
        lines(&e),
        [
            "command line: key `aws-access-key`: give both --aws-access-key and --aws-secret-key, or neither"
        ]
    );
}

#[test]
fn a_leading_tilde_in_a_path_is_the_home_directory() {
    let home = std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME is set"));
    let ruby = "--fs-queue-root ~/chore-queues\n--log-file ~/chore.log\n";
    let c = load_files(&[ruby, BASIC], Flags::default()).unwrap();
    assert_eq!(c.fs_queue_root, home.join("chore-queues"));
    assert_eq!(c.log_file, Some(home.join("chore.log")));
    let c = load_text(&format!("fs-queue-root = \"~\"\n{BASIC}"), Flags::default()).unwrap();
    assert_eq!(c.fs_queue_root, home);
    // Only a leading `~` or `~/`.
    let c = load_text(
        &format!("fs-queue-root = \"a/~/b\"\n{BASIC}"),
        Flags::default(),
    )
    .unwrap();
    assert_eq!(c.fs_queue_root, std::path::PathBuf::from("a/~/b"));
}
