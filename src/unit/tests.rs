//! `chore systemd-unit` from the outside in: a Chorefile and the command line in, the
//! unit text out, for what the configuration implies (paths, users, sandbox loosening) and
//! what it must refuse.

use super::*;
use crate::config::cli::{Cli, Command};
use clap::Parser;

/// The unit `chore systemd-unit ARGS` writes for Chorefile `text`, read in `/srv/app`.
fn unit_for(text: &str, args: &[&str]) -> Result<(Spec, String), String> {
    let dir = std::env::temp_dir().join(format!("chore-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("Chorefile-{}", text.len() + args.len()));
    std::fs::write(&file, text).unwrap();
    let mut words = vec!["chore", "systemd-unit", "-c", file.to_str().unwrap()];
    words.extend(args);
    let Some(Command::SystemdUnit(a)) = Cli::try_parse_from(words).unwrap().command else {
        panic!("not systemd-unit");
    };
    let config = config::load(Flags {
        config_file: a.config_file.clone(),
        ..Flags::default()
    })
    .map_err(|e| e.to_string())?;
    let spec = spec(
        &config,
        &a,
        Path::new("/srv/app"),
        Path::new("/opt/chore/bin/chore"),
    )?;
    let text = render(&spec)?;
    Ok((spec, text))
}

const FS: &str =
    "fs-queue-root = \"queues\"\nshutdown-timeout = 10.5\n[queues.a]\nhandler = [\"true\"]\n";
const SQS: &str = "[queues.a]\nbackend = \"sqs\"\nhandler = [\"true\"]\n";

#[test]
fn the_unit_follows_the_chorefile() {
    let (spec, text) = unit_for(
        FS,
        &[
            "--chorefile-at",
            "/etc/chore/Chorefile",
            "--working-directory",
            "/var/lib/chore",
        ],
    )
    .unwrap();
    assert_eq!(spec.stop_timeout_secs, 11 + STOP_MARGIN_SECS);
    assert!(text.contains("\nTimeoutStopSec=41\n"), "{text}");
    assert!(text.contains("\nExecStart=/opt/chore/bin/chore -c /etc/chore/Chorefile\n"));
    assert!(text.contains("\nWorkingDirectory=/var/lib/chore\n"));
    // The relative queue root resolves against the unit's working directory.
    assert!(
        text.contains("\nReadWritePaths=/var/lib/chore/queues\n"),
        "{text}"
    );
    assert!(text.contains("\nUser=chore\nGroup=chore\n"));
    assert!(text.contains("\nType=notify\nNotifyAccess=main\n"));
    assert!(text.contains("\nProtectHome=yes\n"));
    assert!(text.contains("\n#MemoryDenyWriteExecute=yes\n"));
    // Every setting is explained by a comment line somewhere above it in its block.
    for block in text.split("\n\n") {
        let settings = match block.split_once('\n') {
            Some((section, rest)) if section.starts_with('[') => rest,
            _ => block,
        };
        assert!(settings.starts_with('#'), "an uncommented block: {block}");
    }
}

#[test]
fn the_default_working_directory_is_the_chorefiles() {
    let (spec, _) = unit_for(FS, &["--allow-write", "out"]).unwrap();
    let dir = spec.chorefiles[0].parent().unwrap().to_path_buf();
    assert_eq!(spec.working_directory, dir);
    assert_eq!(
        spec.writable,
        [dir.join("queues"), PathBuf::from("/srv/app/out")]
    );
    assert_eq!(spec.binary, Path::new("/opt/chore/bin/chore"));
}

#[test]
fn an_sqs_configuration_writes_only_its_log() {
    let (spec, text) = unit_for(SQS, &[]).unwrap();
    assert!(spec.writable.is_empty());
    assert!(!text.contains("ReadWritePaths="), "{text}");
    assert_eq!(spec.stop_timeout_secs, 120 + STOP_MARGIN_SECS);
    let logged = format!("log-file = \"/var/log/chore/chore.log\"\n{SQS}");
    let (spec, _) = unit_for(&logged, &[]).unwrap();
    assert_eq!(spec.writable, [PathBuf::from("/var/log/chore")]);
}

#[test]
fn options_loosen_the_sandbox() {
    let (_, text) = unit_for(
        FS,
        &[
            "--allow-home",
            "--deny-write-execute",
            "--user",
            "app",
            "--group",
            "www-data",
        ],
    )
    .unwrap();
    assert!(text.contains("\nProtectHome=read-only\n"));
    assert!(text.contains("\nMemoryDenyWriteExecute=yes\n"));
    assert!(text.contains("\nUser=app\nGroup=www-data\n"));
    let (_, text) = unit_for(FS, &["--no-hardening"]).unwrap();
    for gone in [
        "ProtectSystem",
        "ReadWritePaths",
        "NoNewPrivileges",
        "SystemCallFilter",
    ] {
        assert!(!text.contains(gone), "{gone} in\n{text}");
    }
    assert!(text.contains("\nKillMode=mixed\n"));
    assert!(text.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"));
}

#[test]
fn bad_input_is_refused_clearly() {
    let e = unit_for(FS, &["--user", "a b"]).unwrap_err();
    assert!(e.contains("--user \"a b\": not a valid user"), "{e}");
    let e = unit_for(FS, &["--chorefile-at", "Chorefile"]).unwrap_err();
    assert!(e.contains("give an absolute path"), "{e}");
    let e = unit_for("concurrency = 0\n", &[]).unwrap_err();
    assert!(e.contains("concurrency"), "{e}");
}

#[test]
fn paths_are_escaped_for_systemd() {
    assert_eq!(
        word(Path::new("/a b/%h$x"), true).unwrap(),
        "\"/a b/%%h$$x\""
    );
    assert_eq!(word(Path::new("/a/$x"), false).unwrap(), "/a/$x");
    assert_eq!(word(Path::new("/q\"s"), false).unwrap(), "\"/q\\\"s\"");
    assert_eq!(escaped(Path::new("/a b%")).unwrap(), "/a b%%");
    assert!(
        escaped(Path::new("/a\nb"))
            .unwrap_err()
            .contains("control character")
    );
}
