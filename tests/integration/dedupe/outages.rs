//! memcached going away and coming back: jobs run meanwhile (or, with
//! `dupe-on-cache-failure`, wait), one error line per outage, dedupe resumes.

use super::{dedupe_status, error_lines, log_lines, runs_of};
use crate::harness::*;
use crate::support::memcached::Memcached;
use std::time::{Duration, Instant};

#[test]
fn dedupe_memcached_down_jobs_still_run_and_dedupe_resumes_when_it_is_back() {
    // dupe-on-cache-failure is left at its default, false: run what memcached cannot vouch
    // for.
    let mut mc = Memcached::start();
    let sb = Sandbox::new("dedupe-outage");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "dedupe-servers = {:?}\n[queues.jobs]\nhandler = [{h:?}]\ntimeout = 30\n\
         dedupe-key = \"k\"\n",
        mc.addr()
    ));
    let q = sb.queue("jobs");
    let mut master = sb.start(&[]);
    sb.enqueue("jobs", r#"{"k":"before","n":0}"#);
    master.wait("the first job", || runs_of(&sb, 0).len() == 1);
    assert_eq!(mc.get("before").as_deref(), Some("1"));

    // Down: jobs keep running (dupe-on-cache-failure = false), spread over a few seconds
    // so that several reconnection probes (one a second at most) fail; the outage is
    // logged once. The spacing is the scenario, not a wait for anything.
    mc.stop();
    let down_at = Instant::now();
    for n in 1..=8u64 {
        sb.enqueue("jobs", &format!(r#"{{"k":"down-{n}","n":{n}}}"#));
        std::thread::sleep(Duration::from_millis(300));
    }
    // memcached cannot vouch for it, so a job whose key was stored before runs too.
    sb.enqueue("jobs", r#"{"k":"before","n":9}"#);
    master.wait("the jobs sent during the outage", || {
        (1..=9).all(|n| runs_of(&sb, n).len() == 1)
    });
    let down_for = down_at.elapsed();
    assert!(master.running(), "the master lives through the outage");
    assert!(q.dead().is_empty());
    // Checked at the end, once the rest has been seen to work.
    let errors_in_outage = error_lines(&master);

    // Back on the same port (empty): the client reconnects within its 1 s probe. Jobs with
    // fresh keys show when it has: their key appears in memcached.
    mc.restart();
    let mut n = 100;
    let back = Instant::now();
    master.wait_for(
        "chore to reconnect to memcached (a probe job's key stored)",
        Duration::from_secs(15),
        || {
            n += 1;
            let key = format!("probe-{n}");
            sb.enqueue("jobs", &format!(r#"{{"k":"{key}","n":{n}}}"#));
            master.wait("a probe job", || runs_of(&sb, n).len() == 1);
            mc.get(&key).is_some()
        },
    );
    eprintln!(
        "dedupe outage: reconnected {:.2}s after memcached came back",
        back.elapsed().as_secs_f64()
    );
    master.wait_log("memcached is back");

    // Dedupe works again: a key taken by another consumer holds its job back.
    assert!(mc.ruby_add("taken", 30));
    let blocked = sb.enqueue_id("jobs", r#"{"k":"taken","n":200}"#);
    sb.enqueue("jobs", r#"{"k":"after","n":201}"#);
    master.wait("a job after the recovery", || runs_of(&sb, 201).len() == 1);
    master.wait("the blocked job to be held", || {
        !log_lines(&master, &["duplicate delivery; not run", &blocked]).is_empty()
    });
    master.assert_for(
        Duration::from_millis(500),
        "the duplicate not run after the recovery",
        || runs_of(&sb, 200).is_empty(),
    );
    assert!(q.holds(&blocked));
    let errors_after_recovery = error_lines(&master);

    // A second outage is a second error line.
    mc.stop();
    for n in 300..303u64 {
        sb.enqueue("jobs", &format!(r#"{{"k":"again-{n}","n":{n}}}"#));
    }
    master.wait("the jobs of the second outage", || {
        (300..303).all(|n| runs_of(&sb, n).len() == 1)
    });
    let status = dedupe_status(&master);
    assert!(status["cache_failures"] >= 12, "{status:?}");
    assert!(master.running());
    assert_eq!(master.stop().code(), Some(0));

    // The log: one error line per outage, however many messages and probes it saw.
    assert_eq!(
        errors_in_outage.len(),
        1,
        "one error line for the first outage ({down_for:?} down, 9 jobs, probed once a \
         second): {errors_in_outage:#?}"
    );
    assert!(
        errors_in_outage[0].contains("memcached unavailable"),
        "{errors_in_outage:?}"
    );
    assert_eq!(
        errors_after_recovery, errors_in_outage,
        "no error line once memcached is back"
    );
    let errors = error_lines(&master);
    assert_eq!(errors.len(), 2, "one error line per outage: {errors:#?}");
}

#[test]
fn dedupe_memcached_down_with_dupe_on_cache_failure_holds_jobs_until_it_is_back() {
    // Queue timeout 12 s: keys (and holds) of 12 - 10 = 2 s, so a held job comes back
    // about every 3 s and is checked again.
    let mut mc = Memcached::start();
    let sb = Sandbox::new("dedupe-outage-hold");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "dedupe-servers = {:?}\ndupe-on-cache-failure = true\n[queues.jobs]\nhandler = [{h:?}]\n\
         timeout = 12\ndedupe = true\n",
        mc.addr()
    ));
    let q = sb.queue("jobs");
    let mut master = sb.start(&[]);
    sb.enqueue("jobs", r#"{"n":0}"#);
    master.wait("the first job", || runs_of(&sb, 0).len() == 1);

    mc.stop();
    let ids: Vec<String> = (1..=4u64)
        .map(|n| sb.enqueue_id("jobs", &format!(r#"{{"n":{n}}}"#)))
        .collect();
    master.wait("the jobs to be held", || {
        ids.iter().all(|id| {
            !log_lines(
                &master,
                &[
                    "memcached unavailable and dupe-on-cache-failure is set; not run",
                    id,
                ],
            )
            .is_empty()
        })
    });
    // Held through at least one return to the queue (hold 3 s, recovery each second).
    master.assert_for(
        Duration::from_secs(5),
        "no job run while memcached is down",
        || (1..=4).all(|n| runs_of(&sb, n).is_empty()),
    );
    for id in &ids {
        assert!(q.holds(id), "held, not lost: {id}");
    }
    assert!(q.dead().is_empty(), "dead letters: {:?}", q.dead());
    assert!(master.running(), "the master lives through the outage");

    mc.restart();
    let back = Instant::now();
    master.wait_for(
        "the held jobs to run once memcached is back",
        Duration::from_secs(30),
        || (1..=4).all(|n| !runs_of(&sb, n).is_empty()),
    );
    eprintln!(
        "dedupe hold: held jobs ran {:.2}s after memcached came back",
        back.elapsed().as_secs_f64()
    );
    master.wait("the queue to empty", || q.is_idle());
    master.assert_for(
        Duration::from_millis(500),
        "every job run once, none again",
        || (0..=4).all(|n| runs_of(&sb, n).len() == 1),
    );
    for n in 0..=4 {
        assert_eq!(runs_of(&sb, n).len(), 1, "job {n}: {:?}", runs_of(&sb, n));
    }
    assert!(q.dead().is_empty());
    let status = dedupe_status(&master);
    assert!(status["cache_failures"] >= 4, "{status:?}");
    assert!(status["checks"] >= 5, "{status:?}");
    assert_eq!(master.stop().code(), Some(0));
    let errors = error_lines(&master);
    assert_eq!(errors.len(), 1, "one error line per outage: {errors:#?}");
    assert!(errors[0].contains("memcached unavailable"), "{errors:?}");
}
