//! Routing Ruby Chore bodies `{"class":…,"args":[…]}` to handlers by class.

use crate::harness::*;

#[test]
fn classes_route_to_their_handlers_and_the_rest_to_the_default() {
    let sb = Sandbox::new("routing");
    // Records which handler ran (its argument), the class it was told, and the body.
    let h = sb.script(
        "rec.sh",
        "body=$(cat)\nprintf '%s|%s|%s\\n' \"$1\" \"$CHORE_JOB_CLASS\" \"$body\" >> routed.txt",
    );
    sb.chorefile(&format!(
        "[queues.mixed]\nhandler = [{h:?}, \"default\"]\n\
         [queues.mixed.classes]\nAlpha = [{h:?}, \"alpha\"]\n\"Foo::Beta\" = [{h:?}, \"beta\"]\n"
    ));
    let mut master = sb.start(&[]);
    let bodies = [
        r#"{"class":"Alpha","args":[1]}"#,
        r#"{"class":"Foo::Beta","args":["b"]}"#,
        r#"{"n":3}"#,
        r#"{"class":"Gamma","args":[]}"#,
        r#"[1,2,3]"#,
    ];
    for b in bodies {
        sb.enqueue("mixed", b);
    }
    master.wait("five routed jobs", || sb.lines("routed.txt").len() == 5);
    let mut routed = sb.lines("routed.txt");
    routed.sort();
    let mut want = vec![
        r#"alpha|Alpha|{"class":"Alpha","args":[1]}"#.to_string(),
        r#"beta|Foo::Beta|{"class":"Foo::Beta","args":["b"]}"#.to_string(),
        r#"default||{"n":3}"#.to_string(),
        r#"default|Gamma|{"class":"Gamma","args":[]}"#.to_string(),
        r#"default||[1,2,3]"#.to_string(),
    ];
    want.sort();
    assert_eq!(routed, want);
    let q = sb.queue("mixed");
    master.wait("the queue to empty", || q.is_idle());
    assert!(q.dead().is_empty());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_class_cannot_forge_a_log_line_or_grow_its_dead_letters_reason() {
    let sb = Sandbox::new("routing-forged");
    sb.chorefile("[queues.classy]\nclasses = { Known = [\"true\"] }\n");
    let mut master = sb.start(&[]);
    // Written straight into new/, as any publisher could.
    let new = sb.root().join("classy/new");
    std::fs::create_dir_all(&new).unwrap();
    let forged = "X\n2026-01-01T00:00:00.000000Z  INFO completed queue=classy id=FORGED\u{1b}[2J";
    let body = serde_json::json!({ "class": forged, "args": [] }).to_string();
    std::fs::write(new.join("forged.0.job"), body).unwrap();
    let huge = serde_json::json!({ "class": "C".repeat(1 << 20), "args": [] }).to_string();
    std::fs::write(new.join("huge.0.job"), huge).unwrap();
    let q = sb.queue("classy");
    master.wait("both dead-lettered", || q.dead_letters() == 2);
    let log = master.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains("id=FORGED") && !l.contains("no handler")),
        "a forged line: {log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "an escape sequence reached the log"
    );
    let reason = q.read("dead", "huge.1.job.reason");
    assert!(reason.len() < 8192, "a reason of {} bytes", reason.len());
    assert!(log.len() < 64 * 1024, "a log of {} bytes", log.len());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_class_without_handler_and_no_default_is_dead_lettered() {
    let sb = Sandbox::new("routing-dead");
    sb.script(
        "rec.sh",
        "body=$(cat)\nprintf '%s|%s\\n' \"$CHORE_JOB_CLASS\" \"$body\" >> routed.txt",
    );
    sb.chorefile(
        "[queues.classy]\nclasses = { Known = [\"./rec.sh\"] }\n\
         [queues.other]\nhandler = [\"./rec.sh\"]\n",
    );
    let mut master = sb.start(&[]);
    let unknown = sb.enqueue_id("classy", r#"{"class":"Unknown","args":[1]}"#);
    let classless = sb.enqueue_id("classy", r#"{"args":[1]}"#);
    sb.enqueue("classy", r#"{"class":"Known","args":[2]}"#);
    let q = sb.queue("classy");
    master.wait("two dead letters with reasons", || q.dead_letters() == 2);
    master.wait("the known class to run", || {
        sb.lines("routed.txt").len() == 1
    });
    assert_eq!(
        sb.lines("routed.txt"),
        vec![r#"Known|{"class":"Known","args":[2]}"#.to_string()]
    );
    let dead = q.dead();
    let name = format!("{unknown}.1.job");
    assert!(dead.contains(&name), "{dead:?}");
    assert_eq!(q.read("dead", &name), r#"{"class":"Unknown","args":[1]}"#);
    let reason = q.read("dead", &format!("{name}.reason"));
    assert!(
        reason.contains("Unknown"),
        "reason names the class: {reason}"
    );
    assert!(reason.contains(&unknown), "reason names the id: {reason}");
    let reason = q.read("dead", &format!("{classless}.1.job.reason"));
    assert!(reason.contains("no handler"), "{reason}");
    master.wait("the queue to empty", || q.is_idle());
    // The master logged the queue and id, and keeps going.
    let log = master.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(&unknown) && l.contains("classy")),
        "no log line with queue and id:\n{log}"
    );
    sb.enqueue("other", "{}");
    master.wait("the other queue to keep working", || {
        sb.lines("routed.txt").len() == 2
    });
    assert_eq!(master.stop().code(), Some(0));
}
