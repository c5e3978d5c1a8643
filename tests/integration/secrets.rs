//! The master's AWS secrets stay out of its children's reach: a handler knows the
//! master's pid (`CHORE_MASTER_PID`), and `/proc/<pid>/environ` shows a process's original
//! environment, so the master blanks the secrets there and is not dumpable. SQS keeps
//! working with the credentials it read at start.

use crate::harness::*;
use crate::support::moto::Moto;
use serde_json::json;

const SECRET: &str = "s3cr3t-kept-from-handlers";
const TOKEN: &str = "session-token-kept-from-handlers";

#[test]
fn a_handler_cannot_read_the_masters_secrets_through_proc() {
    let moto = Moto::start();
    let url = moto.create("jobs", json!({}));
    let sb = Sandbox::new("secrets");
    // The handler copies the master's /proc environ (it may be refused: the master is not
    // dumpable, and the test may not run as root), and whether it could read it.
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "if cat /proc/$CHORE_MASTER_PID/environ > environ.tmp; then echo read > outcome.txt; \
         else echo refused > outcome.txt; fi\nmv environ.tmp environ.bin",
    );
    sb.chorefile(&format!(
        "sqs-endpoint = {:?}\n[queues.jobs]\nbackend = \"sqs\"\nwait-time = 1\nhandler = [{h:?}]\n",
        moto.endpoint()
    ));
    let mut master = sb.start_with_env(
        "master",
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDHIDDEN"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_SESSION_TOKEN", TOKEN),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    moto.send(&url, "{\"n\":1}");
    master.wait("the job to run", || sb.file("environ.bin").exists());
    master.wait("SQS to settle it", || moto.is_empty(&url));
    let seen = std::fs::read(sb.file("environ.bin")).unwrap();
    let outcome = sb.read("outcome.txt");
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if root {
        assert_eq!(outcome.trim(), "read", "as root the handler reads it");
        assert!(
            seen.windows(16).any(|w| w == b"AWS_REGION=us-ea"),
            "the handler read the master's environment block"
        );
    }
    // Whatever the handler could read, no secret is in it; nor in what the test reads.
    let direct = std::fs::read(format!("/proc/{}/environ", master.pid)).unwrap_or_default();
    for block in [&seen, &direct] {
        for secret in [SECRET, TOKEN, "AKIDHIDDEN"] {
            assert!(
                !block.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is readable in /proc/<master>/environ"
            );
        }
    }
    if root {
        assert!(
            direct.windows(22).any(|w| w == b"AWS_SECRET_ACCESS_KEY="),
            "the name stays, its value blanked"
        );
    }
    // The master is not dumpable: its /proc files belong to root, whoever runs it.
    let owner = std::fs::metadata(format!("/proc/{}/environ", master.pid)).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    assert_eq!(owner.unwrap(), 0, "the master's /proc files belong to root");
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TTIN {}", master.pid)])
        .status()
        .unwrap();
    assert!(status.success());
    master.wait_log("status");
    moto.send(&url, "{\"n\":2}");
    master.wait("a second job after the status dump", || {
        sb.runs("runs.txt").len() == 2 && moto.is_empty(&url)
    });
    assert_eq!(master.stop().code(), Some(0));
}
