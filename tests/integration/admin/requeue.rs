//! `chore queue requeue` on filesystem queues: selection, dry runs, attempts reset, and
//! runs interrupted half-way (SIGKILL, Ctrl-C) that a second run finishes.

use super::filesystem::{dead_letter, sandbox};
use super::{queue_ok, snapshot};
use crate::harness::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeSet;

#[test]
fn requeue_moves_selected_dead_letters_back_with_attempts_reset() {
    let sb = sandbox("admin-requeue");
    let q = sb.queue("mail");
    dead_letter(
        &q,
        "m-1",
        5,
        r#"{"class":"Mail","args":[1]}"#,
        "exit status 1",
    );
    dead_letter(
        &q,
        "m-2",
        2,
        r#"{"class":"Bill","args":[2]}"#,
        "killed at its deadline",
    );
    dead_letter(
        &q,
        "m-3",
        1,
        r#"{"class":"Mail","args":[3]}"#,
        "body is not JSON",
    );
    let before = snapshot(&q.path);

    let (out, err) = queue_ok(&sb, &["requeue", "mail", "--dry-run"], None, &[]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(err.contains("would requeue 3 of 3"), "{err}");
    assert_eq!(snapshot(&q.path), before, "a dry run moved something");

    let (out, err) = queue_ok(&sb, &["redrive", "mail", "--reason", "deadline"], None, &[]);
    assert_eq!(out.trim(), "requeued m-2");
    assert!(err.contains("requeued 1 of 1"), "{err}");
    assert_eq!(q.new_files(), ["m-2.0.job"], "attempts reset");
    assert_eq!(q.read("new", "m-2.0.job"), r#"{"class":"Bill","args":[2]}"#);
    assert!(
        !q.dead().iter().any(|n| n.starts_with("m-2")),
        "{:?}",
        q.dead()
    );

    let (out, _) = queue_ok(
        &sb,
        &["requeue", "mail", "--class", "Mail", "--id", "m-3"],
        None,
        &[],
    );
    assert_eq!(out.trim(), "requeued m-3");
    queue_ok(&sb, &["requeue", "mail", "--older-than", "3600"], None, &[]);
    assert_eq!(q.new_files().len(), 2, "nothing is an hour old");
    queue_ok(&sb, &["requeue", "mail"], None, &[]);
    assert_eq!(q.new_files(), ["m-1.0.job", "m-2.0.job", "m-3.0.job"]);
    assert!(q.dead().is_empty(), "{:?}", q.dead());
}

/// Requeue `n` dead letters, interrupted by `signal` once some have moved, then again.
fn requeue_interrupted(signal: Signal, n: usize) {
    let sb = sandbox("admin-requeue-killed");
    let q = sb.queue("mail");
    for i in 0..n {
        dead_letter(
            &q,
            &format!("m-{i:05}"),
            3,
            &format!("{{\"n\":{i}}}"),
            "exit status 1",
        );
    }
    let cf = sb.chorefile_path();
    let child = sb
        .command(&["queue", "-c", cf.to_str().unwrap(), "requeue", "mail"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the first dead letters to move", PATIENCE, || {
        !q.new_files().is_empty()
    });
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let out = child.wait_with_output().unwrap();
    let first = q.new_files().len();
    let err = String::from_utf8_lossy(&out.stderr);
    if signal == Signal::SIGINT && first < n {
        assert!(err.contains("interrupted: requeued"), "{err}");
        // Not a success a script may go on from.
        assert_eq!(out.status.code(), Some(1), "{err}");
    }
    let (_, err) = queue_ok(&sb, &["requeue", "mail"], None, &[]);
    assert!(
        err.contains(&format!("requeued {} of {}", n - first, n - first)),
        "{err}"
    );
    let names = q.new_files();
    let ids: BTreeSet<String> = names.iter().map(|n| id_of(n)).collect();
    assert_eq!(
        names.len(),
        n,
        "messages lost or doubled (first run moved {first})"
    );
    assert_eq!(ids.len(), n);
    assert!(names.iter().all(|n| n.ends_with(".0.job")));
    assert!(
        !q.dead().iter().any(|n| n.ends_with(".job")),
        "{:?}",
        q.dead()
    );
    for (i, name) in names.iter().enumerate() {
        assert_eq!(q.read("new", name), format!("{{\"n\":{i}}}"));
    }
}

#[test]
fn a_requeue_killed_half_way_loses_and_doubles_nothing() {
    requeue_interrupted(Signal::SIGKILL, 3000);
}

#[test]
fn a_requeue_stopped_by_ctrl_c_says_how_far_it_got() {
    requeue_interrupted(Signal::SIGINT, 3000);
}
