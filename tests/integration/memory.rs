//! `memory-limit`: each handler process of the queue runs under a data limit; one that
//! allocates past it fails, and its failure says the limit was likely hit, while handlers
//! that stay within it run as usual.

use crate::harness::*;

/// Allocates `MB` megabytes (from the body) and touches them; notes its id when it is done.
const HOG: &str = r#"import json, os, sys
body = json.load(sys.stdin)
block = bytearray(body["mb"] * 1024 * 1024)
with open("done.txt", "a") as f:
    f.write(os.environ["CHORE_MESSAGE_ID"] + "\n")
"#;

/// The same as a batch handler: one result per line.
const BATCH_HOG: &str = r#"import json, sys
for line in sys.stdin:
    m = json.loads(line)
    block = bytearray(m["body"]["mb"] * 1024 * 1024)
    print(json.dumps({"id": m["id"], "result": "ok"}), flush=True)
"#;

#[test]
fn a_handler_past_its_memory_limit_fails_and_says_so() {
    let sb = Sandbox::new("memory-limit");
    sb.write("hog.py", HOG);
    sb.write("batch_hog.py", BATCH_HOG);
    sb.chorefile(
        "batch-size = 1\n\
         [queues.jobs]\nhandler = [\"python3\", \"hog.py\"]\nmemory-limit = \"64MiB\"\n\
         max-attempts = 1\n\
         [queues.batched]\nhandler = { command = [\"python3\", \"batch_hog.py\"], mode = \"batch\" }\n\
         memory-limit = \"64MiB\"\nmax-attempts = 1\n\
         [queues.free]\nhandler = [\"python3\", \"hog.py\"]\nmax-attempts = 1\n",
    );
    let small = sb.enqueue_id("jobs", "{\"mb\":8}");
    let big = sb.enqueue_id("jobs", "{\"mb\":400}");
    let batch_big = sb.enqueue_id("batched", "{\"mb\":400}");
    let unlimited = sb.enqueue_id("free", "{\"mb\":400}");
    let mut master = sb.start(&[]);
    let (jobs, batched) = (sb.queue("jobs"), sb.queue("batched"));
    master.wait("two dead letters and two jobs done", || {
        jobs.dead_letters() == 1 && batched.dead_letters() == 1 && sb.lines("done.txt").len() == 2
    });
    let mut done = sb.lines("done.txt");
    done.sort();
    let mut want = vec![small, unlimited];
    want.sort();
    assert_eq!(done, want, "within the limit, and without one, jobs run");
    let reason = jobs.read("dead", &format!("{big}.1.job.reason"));
    assert!(reason.contains("memory-limit (64 MiB)"), "{reason}");
    assert!(reason.contains("hit"), "{reason}");
    let reason = batched.read("dead", &format!("{batch_big}.1.job.reason"));
    assert!(reason.contains("without a result"), "{reason}");
    assert!(reason.contains("memory-limit (64 MiB)"), "{reason}");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn the_master_gives_back_the_memory_of_large_messages_once_they_are_done() {
    let sb = Sandbox::new("memory-given-back");
    sb.chorefile(
        "concurrency = 2\nbatch-size = 4\nbatch-timeout = 0.2\n\
         [queues.jobs]\nhandler = [\"sh\", \"-c\", \"cat >/dev/null\"]\n",
    );
    let jobs = sb.queue("jobs");
    let mut master = sb.start(&[]);
    let filler = "a".repeat(16 << 20);
    for i in 0..16 {
        let body = format!(r#"{{"class":"Big","args":["{filler}"]}}"#);
        jobs.put(
            "new",
            &format!("{}-{i}.0.job", 1_700_000_000 + i),
            body.as_bytes(),
        );
    }
    master.wait("every large message done", || jobs.is_idle());
    let peak = crate::support::procs::peak_rss_kb(master.pid);
    assert!(
        peak > 100 << 10,
        "the master held the bodies at once: peak {peak} KiB"
    );
    // Freed buffers of this size go back to the system at once; the margin is for the
    // allocator's own bookkeeping.
    master.wait("the master's memory given back", || {
        crate::support::procs::rss_kb(master.pid) < 64 << 10
    });
    assert_eq!(master.stop().code(), Some(0));
}
