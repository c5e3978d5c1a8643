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
    assert!(
        master
            .log_text()
            .contains("running them again in two smaller batches"),
        "the log says why the batch runs again"
    );
    assert_eq!(master.stop().code(), Some(0));
}
