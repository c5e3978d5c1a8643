//! `chore status` while a batch hangs, as text and JSON; its socket's mode, a stale socket
//! left by a killed master, and the `RUNTIME_DIRECTORY` default.

use super::status;
use crate::harness::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

#[test]
fn status_shows_a_hung_batch_its_queue_and_the_configuration() {
    let sb = Sandbox::new("status-hung");
    let h = sb.script(
        "hang.sh",
        "cat > /dev/null\necho \"$CHORE_MESSAGE_ID\" >> started.txt\nsleep 600\n",
    );
    sb.chorefile(&format!(
        "concurrency = 1\nbatch-size = 1\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    for i in 0..4 {
        sb.enqueue("jobs", &format!("[{i}]"));
    }
    let master = sb.start(&[]);
    master.wait("the first message to hang", || {
        !sb.lines("started.txt").is_empty()
    });
    let hung = sb.lines("started.txt")[0].clone();
    master.wait("a worker and a buffered message", || {
        status(&sb, &["--json"]).1.contains("\"buffered\":1")
    });

    let (code, text) = status(&sb, &[]);
    assert_eq!(code, Some(0), "healthy: {text}");
    let worker = master.workers()[0];
    let cf = sb.chorefile_path().display().to_string();
    for needle in [
        format!("pid {}: running, healthy", master.pid),
        format!("configuration: {cf}"),
        "workers: 1 of 1 busy".to_string(),
        format!("pid {worker} queue jobs running"),
        hung.clone(),
        "jobs: buffered 1, held 2, received 2, settled 0".to_string(),
    ] {
        assert!(text.contains(&needle), "{needle:?} in:\n{text}");
    }

    let (code, json) = status(&sb, &["--json"]);
    assert_eq!(code, Some(0), "{json}");
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["phase"], "running");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["pid"], master.pid);
    assert_eq!(v["config_files"][0], cf.as_str());
    let w = &v["workers"][0];
    assert_eq!(w["pid"], worker);
    assert_eq!(w["queue"], "jobs");
    assert_eq!(w["ids"][0], hung.as_str());
    assert!(w["elapsed_secs"].as_f64().unwrap() > 0.0);
    assert!(w["deadline_in_secs"].as_f64().unwrap() > 40_000.0, "{w}");
    let q = &v["queues"][0];
    assert_eq!(
        (q["name"].as_str(), q["buffered"].as_u64()),
        (Some("jobs"), Some(1))
    );

    // TSTP: the phase says so.
    master.signal(Signal::SIGTSTP);
    master.wait("the quiet phase", || {
        status(&sb, &[]).1.contains(": quiet, ")
    });
    master.signal(Signal::SIGCONT);
    master.wait("running again", || {
        status(&sb, &[]).1.contains(": running, ")
    });
}

#[test]
fn the_socket_is_owner_only_a_stale_one_is_replaced_and_runtime_directory_is_the_default() {
    let sb = Sandbox::new("status-socket");
    let run = sb.file("run");
    std::fs::create_dir_all(&run).unwrap();
    sb.chorefile("[queues.jobs]\nhandler = [\"true\"]\n");
    let env = [("RUNTIME_DIRECTORY", run.to_str().unwrap())];
    let sock = run.join("chore.sock");
    let mut first = sb.start_with_env("first", &[], &env);
    first.wait("the socket", || sock.exists());
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let by_path = ["--control-socket", sock.to_str().unwrap()];
    assert_eq!(status(&sb, &by_path).0, Some(0));

    // A master killed outright leaves its socket behind; nobody answers on it.
    first.signal(Signal::SIGKILL);
    first.wait_exit(PATIENCE);
    assert!(sock.exists(), "a killed master cannot remove its socket");
    let (code, err) = status(&sb, &by_path);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no master answers"), "{err}");

    let mut second = sb.start_with_env("second", &[], &env);
    second.wait("the stale socket replaced", || {
        status(&sb, &by_path)
            .1
            .contains(&format!("pid {}", second.pid))
    });
    // A drained master removes its socket.
    second.signal(Signal::SIGTERM);
    assert_eq!(second.wait_exit(PATIENCE).code(), Some(0));
    assert!(!sock.exists(), "the socket is removed at exit");
}

#[test]
fn a_queue_directory_that_cannot_be_recreated_makes_the_master_unhealthy_until_it_can() {
    let sb = Sandbox::new("status-broken-dir");
    sb.chorefile("[queues.jobs]\nhandler = [\"true\"]\n");
    let master = sb.start(&[]);
    master.wait("the control socket", || status(&sb, &[]).0 == Some(0));
    // A file where the queue's directory was: it cannot be recreated.
    let dir = sb.queue("jobs").path;
    // The consumer recreates a vanished directory at once: try until the file wins.
    wait_until("a file in the directory's place", PATIENCE, || {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::write(&dir, "in the way").is_ok()
    });
    // The directory is looked at every 15 s.
    master.wait_for("the master to say so", Duration::from_secs(60), || {
        let (code, text) = status(&sb, &[]);
        code == Some(3) && text.contains("UNHEALTHY: queue jobs cannot be read")
    });
    std::fs::remove_file(&dir).unwrap();
    master.wait_for("the directory recreated", Duration::from_secs(60), || {
        status(&sb, &[]).0 == Some(0)
    });
    assert!(dir.join("new").is_dir());
    assert!(master.log_text().contains("healthy again"));
}

/// Clients that connect and say nothing (or trickle) hold no one else up: `chore status`
/// is answered while they wait, each dropped after a few seconds.
#[test]
fn silent_clients_on_the_control_socket_do_not_hold_up_status() {
    let sb = Sandbox::new("status-silent");
    let run = sb.file("run");
    std::fs::create_dir_all(&run).unwrap();
    sb.chorefile("[queues.jobs]\nhandler = [\"true\"]\n");
    let env = [("RUNTIME_DIRECTORY", run.to_str().unwrap())];
    let sock = run.join("chore.sock");
    let master = sb.start_with_env("master", &[], &env);
    master.wait("the socket", || sock.exists());
    let silent: Vec<std::os::unix::net::UnixStream> = (0..3)
        .map(|_| std::os::unix::net::UnixStream::connect(&sock).unwrap())
        .collect();
    let mut trickle = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    std::io::Write::write_all(&mut trickle, b"sta").unwrap();
    let by_path = ["--control-socket", sock.to_str().unwrap()];
    // Served one after another, they made `chore status` give up ("no answer").
    let (code, text) = status(&sb, &by_path);
    assert_eq!(code, Some(0), "{text}");
    drop((silent, trickle));
}
