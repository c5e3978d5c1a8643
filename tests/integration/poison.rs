//! Poison isolation through the real binary: a batch handler that crashes whenever its
//! batch holds one bad message. The batch is run again in halves until the bad message
//! runs alone; its neighbours complete without losing an attempt, and it alone is
//! dead-lettered once its attempts are spent.

use crate::harness::*;
use std::collections::BTreeMap;

/// A Python batch handler: notes each batch it gets, dies (exit 3, no result) when one of
/// its messages is poison, else answers ok for each, noting `id attempt` in done.txt.
const CRASHER: &str = r#"import json, sys
batch = [json.loads(l) for l in sys.stdin]
with open("batches.txt", "a") as f:
    f.write(" ".join(m["id"] for m in batch) + "\n")
if any(m["body"].get("poison") for m in batch):
    sys.exit(3)
for m in batch:
    with open("done.txt", "a") as f:
        f.write("%s %d\n" % (m["id"], m["attempt"]))
    print(json.dumps({"id": m["id"], "result": "ok"}), flush=True)
"#;

#[test]
fn one_poison_message_in_a_batch_of_ten_is_isolated_and_dead_lettered_alone() {
    let sb = Sandbox::new("poison");
    sb.write("crasher.py", CRASHER);
    sb.chorefile(
        "concurrency = 2\nbatch-size = 10\n\
         [queues.jobs]\nhandler = { command = [\"python3\", \"crasher.py\"], mode = \"batch\" }\n\
         max-attempts = 2\nbackoff = [1]\n",
    );
    let mut good = Vec::new();
    let mut poison = String::new();
    for i in 0..10 {
        if i == 6 {
            poison = sb.enqueue_id("jobs", "{\"poison\":true}");
        } else {
            good.push(sb.enqueue_id("jobs", &format!("{{\"n\":{i}}}")));
        }
    }
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    master.wait("nine done and one dead letter", || {
        sb.lines("done.txt").len() >= 9 && q.dead_letters() == 1 && q.is_idle()
    });
    let batches = sb.lines("batches.txt");
    assert_eq!(
        batches[0].split(' ').count(),
        10,
        "the first batch held all ten: {batches:?}"
    );
    let mut done: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in sb.lines("done.txt") {
        let (id, attempt) = line.split_once(' ').unwrap();
        done.entry(id.into()).or_default().push(attempt.into());
    }
    good.sort();
    assert_eq!(
        done.keys().cloned().collect::<Vec<_>>(),
        good,
        "every neighbour completed"
    );
    for (id, attempts) in &done {
        assert_eq!(attempts, &["1"], "{id} ran once, on its first attempt");
    }
    let dead = q.dead();
    assert_eq!(
        dead,
        vec![format!("{poison}.2.job"), format!("{poison}.2.job.reason")]
    );
    let reason = q.read("dead", &format!("{poison}.2.job.reason"));
    assert!(reason.contains("failed 2 of 2 attempts"), "{reason}");
    assert!(reason.contains("exit status 3"), "{reason}");
    let alone = batches.iter().filter(|b| b.as_str() == poison).count();
    assert_eq!(
        alone, 2,
        "the poison ran alone once per attempt: {batches:?}"
    );
    let log = master.log_text();
    let rerun = log
        .lines()
        .find(|l| l.contains("running them again in two smaller batches"))
        .expect("the log says the batch runs again");
    // Why: the handler's end, not the worker's (which ended well, having said so).
    assert!(rerun.contains("exit status 3"), "{rerun}");
    assert!(!rerun.contains("worker exited"), "{rerun}");
    assert_eq!(master.stop().code(), Some(0));
}

/// A Python batch handler that hangs whenever its batch holds a message that says so,
/// else answers ok for each, noting `id attempt` in done.txt.
const HANGER: &str = r#"import json, sys, time
batch = [json.loads(l) for l in sys.stdin]
if any(m["body"].get("hang") for m in batch):
    time.sleep(1000)
for m in batch:
    with open("done.txt", "a") as f:
        f.write("%s %d\n" % (m["id"], m["attempt"]))
    print(json.dumps({"id": m["id"], "result": "ok"}), flush=True)
"#;

#[test]
fn a_message_that_hangs_its_batch_is_isolated_through_deadline_kills() {
    let sb = Sandbox::new("poison-hang");
    sb.write("hanger.py", HANGER);
    // One message's timeout is 1 s: the batch of four is killed after 4 s, its halves
    // after 2 s, the last pair's hanging half after 1 s: alone, it is charged.
    sb.chorefile(
        "concurrency = 2\nbatch-size = 4\n\
         [queues.jobs]\nhandler = { command = [\"python3\", \"hanger.py\"], mode = \"batch\" }\n\
         timeout = 1\nmax-attempts = 1\n",
    );
    let mut good: Vec<String> = (0..3)
        .map(|i| sb.enqueue_id("jobs", &format!("{{\"n\":{i}}}")))
        .collect();
    let hang = sb.enqueue_id("jobs", "{\"hang\":true}");
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    master.wait("three done and the hanging one dead-lettered", || {
        sb.lines("done.txt").len() >= 3 && q.dead_letters() == 1 && q.is_idle()
    });
    let mut done: Vec<String> = sb.lines("done.txt");
    done.sort();
    good.sort();
    let want: Vec<String> = good.iter().map(|id| format!("{id} 1")).collect();
    assert_eq!(done, want, "each neighbour ran once, on its first attempt");
    let reason = q.read("dead", &format!("{hang}.1.job.reason"));
    assert!(reason.contains("passed its deadline"), "{reason}");
    let kills = master
        .log_text()
        .matches("passed its deadline; killed")
        .count();
    assert_eq!(kills, 3, "batches of 4, 2 and 1 were killed");
    assert_eq!(master.stop().code(), Some(0));
}
