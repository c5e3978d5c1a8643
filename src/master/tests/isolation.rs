//! Poison isolation (docs/decisions/0022-a-crashed-batch-is-bisected.md): a batch that
//! ends without results for several messages runs again in halves, so that the message
//! that ends it is found and charged while its neighbours are not.

use super::*;

/// Receive `ids` (attempt 1) as one short receive.
fn receive_ids(r: &mut Rig, ids: &[&str]) {
    let msgs = ids.iter().map(|i| r.msg(i)).collect();
    r.receive(msgs, true);
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_crashed_batch_is_bisected_until_the_poison_message_runs_alone() {
    let mut r = rig(2, 4, false, Some(3));
    receive_ids(&mut r, &["a", "b", "c", "d"]);
    r.master.dispatch(r.at(0));
    r.exit(1, 9); // the whole batch died without a report
    assert!(r.queue.ops().is_empty(), "no attempt charged");
    r.master.dispatch(r.at(1));
    assert_eq!(
        r.batches()[1..],
        [(2, ids(&["a", "b"])), (3, ids(&["c", "d"]))],
        "two halves, in order, each a batch of its own"
    );
    // The half with the poison: its batch handler ended without results for both.
    r.report(2, 0, Verdict::Unfinished);
    r.report(2, 1, Verdict::Unfinished);
    r.exit(2, 1 << 8);
    r.report(3, 0, Verdict::Ok);
    r.report(3, 1, Verdict::Ok);
    r.exit(3, 0);
    r.master.dispatch(r.at(2));
    assert_eq!(r.batches()[3..], [(4, ids(&["a"])), (5, ids(&["b"]))]);
    r.exit(4, 6); // alone, "a" still ends its batch: it is the poison
    r.report(5, 0, Verdict::Ok);
    r.exit(5, 0);
    let ops = r.queue.ops();
    assert_eq!(
        ops,
        vec![
            Op::Complete("c".into()),
            Op::Complete("d".into()),
            Op::Retry("a".into(), Duration::from_secs(10)),
            Op::Complete("b".into()),
        ]
    );
    assert!(r.all_credits_back());
    assert_eq!(r.master.holding.isolating(), 0);
}

#[test]
fn parts_of_a_crashed_batch_go_before_newer_messages_and_never_mix_with_them() {
    let mut r = rig(1, 4, false, None);
    receive_ids(&mut r, &["a", "b", "c"]);
    r.master.dispatch(r.at(0));
    receive_ids(&mut r, &["n1", "n2"]);
    r.exit(1, 9);
    r.master.dispatch(r.at(1));
    assert_eq!(
        r.batches()[1],
        (2, ids(&["a", "b"])),
        "the larger half first"
    );
    r.report(2, 0, Verdict::Ok);
    r.report(2, 1, Verdict::Ok);
    r.exit(2, 0);
    r.master.dispatch(r.at(2));
    assert_eq!(r.batches()[2], (3, ids(&["c"])));
    r.report(3, 0, Verdict::Ok);
    r.exit(3, 0);
    r.master.dispatch(r.at(3));
    assert_eq!(r.batches()[3], (4, ids(&["n1", "n2"])));
}

#[test]
fn a_batch_killed_at_its_deadline_is_bisected_and_each_part_gets_its_own_deadline() {
    let mut r = rig(1, 2, false, None);
    receive_ids(&mut r, &["hang", "fine"]);
    r.master.dispatch(r.at(0));
    r.master.kill_expired(r.at(120)); // two messages × 60 s
    r.exit(1, 9);
    assert!(r.queue.ops().is_empty());
    r.master.dispatch(r.at(121));
    assert_eq!(r.batches()[1], (2, ids(&["hang"])));
    r.master.kill_expired(r.at(180));
    assert!(
        r.launched.lock().unwrap().killed.len() == 1,
        "not before 60 s"
    );
    r.master.kill_expired(r.at(181));
    r.exit(2, 9);
    r.master.dispatch(r.at(182));
    r.report(3, 0, Verdict::Ok);
    r.exit(3, 0);
    let ops = r.queue.ops();
    assert_eq!(
        ops,
        vec![
            Op::Retry("hang".into(), Duration::from_secs(10)),
            Op::Complete("fine".into()),
        ]
    );
    assert!(r.all_credits_back());
}

#[test]
fn at_a_drain_waiting_parts_are_given_back_and_a_crash_fails_what_it_left() {
    let mut r = rig(1, 4, false, None);
    receive_ids(&mut r, &["a", "b", "c", "d"]);
    r.master.dispatch(r.at(0));
    r.exit(1, 9);
    r.master.dispatch(r.at(1)); // "a","b" run; "c","d" wait
    r.master.on_signal(SIGTERM, r.at(2));
    assert_eq!(
        r.queue.ops(),
        vec![Op::GiveBack("c".into()), Op::GiveBack("d".into())]
    );
    // Draining: nothing starts again, so what a crash leaves is failed as before.
    r.report(2, 0, Verdict::Unfinished);
    r.exit(2, 9);
    assert_eq!(
        r.queue.ops()[2..],
        [
            Op::Retry("a".into(), Duration::from_secs(10)),
            Op::Retry("b".into(), Duration::from_secs(10)),
        ]
    );
    assert!(r.master.turn(r.at(3), true), "drained");
    assert!(r.all_credits_back());
}

#[test]
fn fifo_a_part_waits_while_its_group_runs_elsewhere() {
    let mut r = rig(2, 2, true, None);
    let msgs = vec![
        delivery("a1", 1, Some("a"), r.t0),
        delivery("b1", 1, Some("b"), r.t0),
    ];
    r.receive(msgs, true);
    r.master.dispatch(r.at(0));
    r.exit(1, 9);
    // Another "a" message starts in a fresh batch before the parts are dispatched.
    let a2 = delivery("a2", 1, Some("a"), r.t0);
    r.master.holding.start(99, 0, r.credited(vec![a2]));
    r.master.dispatch(r.at(1));
    assert_eq!(
        r.batches()[1],
        (2, ids(&["b1"])),
        "a1's part waits for group a"
    );
}
