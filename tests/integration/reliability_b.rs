//! Reliability (issue 11): poison messages, leftover processes, held stdin, slow stops.

use crate::harness::*;

#[test]
fn a_message_whose_handler_can_never_start_is_dead_lettered_at_once() {
    let sb = Sandbox::new("poison-class");
    let h = sb.recorder("job.sh", "runs.txt", "exit 0");
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [{h:?}]\nbackoff = [0.1]\nmax-attempts = 1000\n"
    ));
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    // `chore enqueue` refuses such a class; another producer may not.
    q.put("new", "poison.0.job", br#"{"class":"A\u0000B"}"#);
    let poison = "poison";
    let fine = sb.enqueue_id("jobs", r#"{"class":"AB"}"#);
    master.wait("the poison message dead-lettered", || {
        q.dead_letters() == 1 && q.is_idle()
    });
    let name = format!("{poison}.1.job");
    let reason = q.read("dead", &format!("{name}.reason"));
    assert!(reason.contains("cannot start handler"), "{reason}");
    assert!(reason.to_lowercase().contains("nul"), "{reason}");
    let runs = sb.runs("runs.txt");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].id, fine);
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_missing_program_is_retried() {
    let sb = Sandbox::new("missing-program");
    sb.chorefile(
        "[queues.jobs]\nhandler = [\"./not-installed-yet\"]\nbackoff = [0.2]\nmax-attempts = 3\n",
    );
    let mut master = sb.start(&[]);
    let id = sb.enqueue_id("jobs", "{}");
    let q = sb.queue("jobs");
    master.wait("dead-lettered after its attempts", || q.dead_letters() == 1);
    let reason = q.read("dead", &format!("{id}.3.job.reason"));
    assert!(reason.contains("failed 3 of 3 attempts"), "{reason}");
    assert_eq!(master.stop().code(), Some(0));
}
