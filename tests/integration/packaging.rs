//! Packaging: the systemd unit `chore systemd-unit` writes (checked by systemd's own
//! `systemd-analyze`), the shipped packaging/chore.service kept equal to it, the man pages
//! and completions generated from the command line's definitions, and each subcommand's
//! help offering only its own options. `systemd-analyze` and `man` must be installed
//! (scripts/test.sh installs them): a missing tool fails these tests.

use crate::harness::{CHORE, Sandbox};
use std::path::Path;
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The command that wrote packaging/chore.service: the unit for the package's Chorefile,
/// with the package's paths.
const SHIPPED: &[&str] = &[
    "systemd-unit",
    "-c",
    "packaging/Chorefile",
    "--chorefile-at",
    "/etc/chore/Chorefile",
    "--working-directory",
    "/var/lib/chore",
    "--binary",
    "/usr/bin/chore",
];

fn chore(args: &[&str]) -> Output {
    let out = Command::new(CHORE)
        .args(args)
        .current_dir(REPO)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chore {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(chore(args).stdout).unwrap()
}

fn tool(program: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed (scripts/test.sh installs it): {e}"))
}

#[test]
fn the_shipped_unit_is_the_generated_one() {
    let generated = stdout(SHIPPED);
    let shipped = std::fs::read_to_string(Path::new(REPO).join("packaging/chore.service")).unwrap();
    assert!(
        generated == shipped,
        "packaging/chore.service is out of date: write it again with\n  chore {}\n",
        SHIPPED.join(" ")
    );
}

/// `chore systemd-unit` for the package's Chorefile with `extra` options, but running this
/// binary (which `verify` checks exists), as `chore.service` in `sb`.
fn unit(sb: &Sandbox, extra: &[&str]) -> std::path::PathBuf {
    let mut args: Vec<&str> = SHIPPED[..SHIPPED.len() - 1].to_vec();
    args.push(CHORE);
    args.extend(extra);
    sb.write("chore.service", &stdout(&args))
}

/// The man pages, where `man` (which `verify` runs for Documentation=man:chore(1)) finds
/// them through MANPATH.
fn man_pages(sb: &Sandbox) -> std::path::PathBuf {
    let dir = sb.path().join("man/man1");
    std::fs::create_dir_all(&dir).unwrap();
    chore(&["generate", "man", dir.to_str().unwrap()]);
    sb.path().join("man")
}

#[test]
fn systemd_verifies_the_unit_and_rates_it_safe() {
    let sb = Sandbox::new("pkg-unit");
    let manpath = man_pages(&sb);
    for extra in [
        &[][..],
        &[
            "--allow-home",
            "--allow-write",
            "/srv",
            "--deny-write-execute",
        ],
        &["--no-hardening", "--user", "app", "--group", "app"],
    ] {
        let file = unit(&sb, extra);
        let path = file.to_str().unwrap();
        let out = tool(
            "systemd-analyze",
            &["verify", path],
            &[("MANPATH", &manpath)],
        );
        let said = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "verify {extra:?}:\n{said}"
        );
        if extra.contains(&"--no-hardening") {
            continue;
        }
        let out = tool(
            "systemd-analyze",
            &["security", "--offline=true", "--no-pager", path],
            &[],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let exposure: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for chore.service: ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no exposure level in:\n{text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        assert!(
            exposure <= 4.0,
            "exposure {exposure} with {extra:?}:\n{text}"
        );
    }
}

/// The long options `chore SUBCOMMAND --help` offers: the `--name` words of its option
/// column (not those its prose mentions), less `--help` and `--version`.
fn long_options(help: &str) -> Vec<String> {
    let mut opts: Vec<String> = help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| l.split("  ").next().unwrap_or("").split([' ', ',']))
        // A counted flag is shown as `--verbose...`.
        .map(|w| w.trim_end_matches('.'))
        .filter(|w| w.starts_with("--") && !["--help", "--version"].contains(w))
        .map(str::to_string)
        .collect();
    opts.sort();
    opts.dedup();
    opts
}

/// Every visible command, and the man page it has.
const COMMANDS: [(&[&str], &str); 15] = [
    (&[], "chore.1"),
    (&["enqueue"], "chore-enqueue.1"),
    (&["check-config"], "chore-check-config.1"),
    (&["queue"], "chore-queue.1"),
    (&["queue", "stats"], "chore-queue-stats.1"),
    (&["queue", "peek"], "chore-queue-peek.1"),
    (&["queue", "dump"], "chore-queue-dump.1"),
    (&["queue", "load"], "chore-queue-load.1"),
    (&["queue", "requeue"], "chore-queue-requeue.1"),
    (&["queue", "purge"], "chore-queue-purge.1"),
    (&["queue", "create"], "chore-queue-create.1"),
    (&["queue", "delete"], "chore-queue-delete.1"),
    (&["queue", "trace"], "chore-queue-trace.1"),
    (&["status"], "chore-status.1"),
    (&["systemd-unit"], "chore-systemd-unit.1"),
];

#[test]
fn man_pages_and_completions_cover_every_option() {
    let sb = Sandbox::new("pkg-man");
    let dir = man_pages(&sb).join("man1");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // Internal commands (`work`, `generate`) have no page.
    let mut expected: Vec<&str> = COMMANDS.iter().map(|(_, page)| *page).collect();
    expected.sort();
    assert_eq!(names, expected);
    let completions: Vec<(&str, String)> = ["bash", "zsh", "fish"]
        .into_iter()
        .map(|shell| (shell, stdout(&["generate", "completions", shell])))
        .collect();
    for (command, page) in COMMANDS {
        let mut args = command.to_vec();
        args.push("--help");
        let options = long_options(&stdout(&args));
        assert!(
            options.contains(&"--config-file".to_string()),
            "{command:?}: {options:?}"
        );
        // roff writes a dash as `\-`.
        let man = std::fs::read_to_string(dir.join(page))
            .unwrap()
            .replace("\\-", "-");
        for opt in &options {
            assert!(man.contains(opt.as_str()), "{page} does not mention {opt}");
            for (shell, script) in &completions {
                // fish names long options without their dashes (`-l concurrency`).
                let bare = opt.trim_start_matches('-');
                let found = match *shell {
                    "fish" => script.contains(&format!("-l {bare}")),
                    _ => script.contains(opt.as_str()),
                };
                assert!(found, "{shell} completion lacks {opt} ({command:?})");
            }
        }
    }
}

#[test]
fn each_subcommand_offers_only_its_options() {
    let enqueue = long_options(&stdout(&["enqueue", "--help"]));
    for theirs in [
        "--concurrency",
        "--batch-size",
        "--log-level",
        "--shutdown-timeout",
        "--queues",
    ] {
        assert!(
            !enqueue.contains(&theirs.to_string()),
            "enqueue offers {theirs}: {enqueue:?}"
        );
    }
    for ours in [
        "--fs-queue-root",
        "--queue-prefix",
        "--sqs-endpoint",
        "--aws-region",
        "--force",
    ] {
        assert!(
            enqueue.contains(&ours.to_string()),
            "enqueue lacks {ours}: {enqueue:?}"
        );
    }
    let sb = Sandbox::new("pkg-enqueue-flags");
    let out = sb.run(&["enqueue", "--concurrency", "3", "q", "{}"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--concurrency"));
    assert!(
        !sb.path().join("chore-queues").exists(),
        "nothing published"
    );
    // check-config checks what the master would run: it takes every option of the master.
    let master = long_options(&stdout(&["--help"]));
    let check = long_options(&stdout(&["check-config", "--help"]));
    assert_eq!(master, check);
    // status needs only where the control socket is.
    let status = long_options(&stdout(&["status", "--help"]));
    assert_eq!(
        status,
        [
            "--config-file",
            "--control-socket",
            "--fs-queue-root",
            "--json"
        ]
    );
    // The unit's options are its own.
    let unit = long_options(&stdout(&["systemd-unit", "--help"]));
    assert!(
        unit.contains(&"--allow-write".to_string()) && !unit.contains(&"--concurrency".to_string())
    );
}

#[test]
fn the_version_names_the_git_revision() {
    let version = stdout(&["--version"]);
    let rev = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(REPO)
        .output()
        .expect("git");
    let rev = String::from_utf8_lossy(&rev.stdout).trim().to_string();
    assert!(!rev.is_empty(), "the tests run from a git checkout");
    assert!(
        version.starts_with(&format!("chore {} ({rev}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
}

/// The unit lets the service write where it must: the queue root, the log's directory,
/// and the directory of a control socket set in so many words (the master does not start
/// without it).
#[test]
fn the_unit_lets_the_service_write_its_control_sockets_directory() {
    let sb = Sandbox::new("pkg-socket");
    let cf = sb.write(
        "Chorefile",
        "fs-queue-root = \"/var/lib/chore\"\nlog-file = \"/var/log/chore/chore.log\"\n\
         control-socket = \"/run/chore-ctl/chore.sock\"\n[queues.a]\nhandler = [\"true\"]\n",
    );
    let unit = stdout(&["systemd-unit", "-c", cf.to_str().unwrap()]);
    let rw = unit
        .lines()
        .find(|l| l.starts_with("ReadWritePaths="))
        .unwrap_or_else(|| panic!("{unit}"));
    assert_eq!(
        rw,
        "ReadWritePaths=/var/lib/chore /var/log/chore /run/chore-ctl"
    );
}
