//! The filesystem queue's guarantees against a real temporary directory: no file replaces
//! another, files of one base held at once are distinct messages (a copy only once our
//! claim is gone), nothing is written through a link, modes ignore the umask, publishing
//! is atomic, a master's own claims survive a clock step, recovery works in bounded steps;
//! and property tests of the file-name codec.

use super::consume::FilesystemConsumer;
use super::names::{self, JobName, epoch_now};
use super::tests::{names, queue};
use super::*;
use crate::queue::Stop;

/// Receive everything `q` offers now.
fn drain(q: &FilesystemQueue) -> Vec<Delivery> {
    let stop = Stop::new().unwrap();
    let mut c = q.consumer().unwrap();
    let mut all = Vec::new();
    for _ in 0..5 {
        all.extend(c.receive(100, &stop).unwrap().deliveries);
    }
    all
}

#[test]
fn files_whose_names_share_a_base_are_each_their_own_message() {
    let (_d, q) = queue(60, 60);
    fs::write(q.new_dir.join("x"), r#"{"v":"A"}"#).unwrap();
    fs::write(q.new_dir.join("x.job"), r#"{"v":"B"}"#).unwrap();
    fs::write(q.new_dir.join("x.0.job"), r#"{"v":"C"}"#).unwrap();
    let got = drain(&q);
    let mut bodies: Vec<&str> = got.iter().map(|d| d.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, [r#"{"v":"A"}"#, r#"{"v":"B"}"#, r#"{"v":"C"}"#]);
    let mut ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    // The canonical name keeps its base; the others carry their inode.
    assert!(ids.contains(&"x"));
    assert!(ids.iter().all(|id| *id == "x" || id.starts_with("x-")));
    assert_eq!(names(&q.inprogress_dir).len(), 3);
}

/// Two canonical files of one base with different attempt counts are two messages: the
/// second, claimed while we hold the first, gets a base of its own.
#[test]
fn canonical_files_of_one_base_held_at_once_are_two_messages() {
    let (_d, q) = queue(60, 60);
    fs::write(q.new_dir.join("x.0.job"), r#"{"v":"A"}"#).unwrap();
    fs::write(q.new_dir.join("x.1.job"), r#"{"v":"B"}"#).unwrap();
    let got = drain(&q);
    let mut bodies: Vec<&str> = got.iter().map(|d| d.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, [r#"{"v":"A"}"#, r#"{"v":"B"}"#]);
    let mut ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids[0], "x", "{ids:?}");
    assert!(ids[1].starts_with("x-"), "{ids:?}");
    // Each keeps its attempts.
    let mut attempts: Vec<u32> = got.iter().map(|d| d.attempt).collect();
    attempts.sort();
    assert_eq!(attempts, [1, 2]);
    assert_eq!(names(&q.inprogress_dir).len(), 2);
}

/// Once another consumer has recovered our claim (moved it back to `new/` with one more
/// attempt), the file it left is a copy of our message and keeps its id, for the master
/// to hold it as a copy; after we let go of the claim, the base is free again.
#[test]
fn a_copy_recovered_from_our_claim_keeps_the_id() {
    let (_d, q) = queue(60, 60);
    fs::write(q.new_dir.join("x.0.job"), r#"{"v":"A"}"#).unwrap();
    let first = drain(&q).remove(0);
    assert_eq!(first.id, "x");
    // What another master's recovery does: our claim's file goes back to new/.
    fs::rename(q.inprogress(&first), q.new_dir.join("x.1.job")).unwrap();
    let copy = drain(&q).remove(0);
    assert_eq!(copy.id, "x");
    assert_eq!(copy.body, first.body);
    q.complete(&copy).unwrap();
    // Released and completed: a later `x.0.job` is simply `x` again.
    fs::write(q.new_dir.join("x.0.job"), r#"{"v":"C"}"#).unwrap();
    assert_eq!(drain(&q).remove(0).id, "x");
}

/// A claim renewed (renamed to a later epoch) is still ours under its new name.
#[test]
fn a_renewed_claim_still_sets_a_newcomer_apart() {
    let (_d, q) = queue(60, 60);
    fs::write(q.new_dir.join("x.0.job"), r#"{"v":"A"}"#).unwrap();
    let mut first = drain(&q).remove(0);
    let before = first.receipt.clone();
    // Renewing at the same second keeps the name; move the claim back a minute first.
    let job = JobName::parse(&before);
    let older = format!("x.0.{}.job", job.claimed_at.unwrap() - 60);
    fs::rename(q.inprogress(&first), q.inprogress_dir.join(&older)).unwrap();
    q.hold(&older);
    q.release(&before);
    first.receipt = older.clone();
    q.renew(&mut first, Instant::now()).unwrap();
    assert_ne!(first.receipt, older, "renewal renamed the claim");
    fs::write(q.new_dir.join("x.1.job"), r#"{"v":"B"}"#).unwrap();
    let second = drain(&q).remove(0);
    assert!(second.id.starts_with("x-"), "{}", second.id);
}

#[test]
fn settling_into_a_taken_name_keeps_both_files() {
    let (_d, q) = queue(60, 60);
    q.publish(None, r#"{"n":1}"#).unwrap();
    let d = drain(&q).remove(0);
    // Someone put a file under the name a zero-delay retry would take.
    let taken = format!("{}.1.job", d.id);
    fs::write(q.new_dir.join(&taken), r#"{"n":2}"#).unwrap();
    q.retry(&d, Duration::ZERO).unwrap();
    let waiting = names(&q.new_dir);
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    assert_eq!(
        fs::read_to_string(q.new_dir.join(&taken)).unwrap(),
        r#"{"n":2}"#
    );
    // A dead letter whose name is taken in dead/ keeps the older one too.
    let again = drain(&q);
    assert_eq!(again.len(), 2);
    for d in &again {
        fs::write(
            q.dead_dir.join(format!("{}.{}.job", d.id, d.attempt)),
            "old",
        )
        .unwrap();
        q.dead_letter(d, "no").unwrap();
    }
    let dead = names(&q.dead_dir);
    assert_eq!(
        dead.iter().filter(|n| n.ends_with(".job")).count(),
        4,
        "{dead:?}"
    );
    assert_eq!(
        dead.iter().filter(|n| n.ends_with(".reason")).count(),
        2,
        "{dead:?}"
    );
}

#[test]
fn a_reason_is_never_written_through_a_planted_link() {
    let (d, q) = queue(60, 60);
    let victim = d.path().join("victim");
    fs::write(&victim, "untouched").unwrap();
    fs::write(q.new_dir.join("evil.0.job"), "not json").unwrap();
    let m = drain(&q).remove(0);
    std::os::unix::fs::symlink(&victim, q.dead_dir.join("evil.1.job.reason")).unwrap();
    q.dead_letter(&m, "body is not JSON").unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
    let reason = q.dead_dir.join("evil.1.job.reason");
    assert!(!fs::symlink_metadata(&reason).unwrap().is_symlink());
    assert!(
        fs::read_to_string(&reason)
            .unwrap()
            .contains("body is not JSON")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&reason).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

#[test]
fn publishing_leaves_nothing_in_tmp_and_files_are_not_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, q) = queue(60, 60);
    let name = q.publish(Some("A"), "{}").unwrap();
    assert!(names(&q.tmp_dir).is_empty());
    let mode = fs::metadata(q.new_dir.join(&name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    // What a killed publisher left: removed once older than the queue timeout.
    fs::write(q.tmp_dir.join("half.0.job"), "{").unwrap();
    q.prune_tmp(std::time::SystemTime::now());
    assert_eq!(names(&q.tmp_dir).len(), 1);
    q.prune_tmp(std::time::SystemTime::now() + Duration::from_secs(61));
    assert!(names(&q.tmp_dir).is_empty());
}

#[test]
fn claims_this_process_holds_survive_a_clock_step_and_foreign_ones_do_not() {
    let (_d, q) = queue(60, 60);
    q.publish(None, "{}").unwrap();
    let d = drain(&q).remove(0);
    let epoch = JobName::parse(&d.receipt).claimed_at.unwrap();
    let foreign = format!("other.0.{epoch}.job");
    fs::write(q.inprogress_dir.join(&foreign), "{}").unwrap();
    // The wall clock stepped 90 s forward: both claims look expired by Ruby Chore's rule.
    let stepped = epoch_now() + 90;
    assert!(names::expired(Some(epoch), stepped, 60));
    q.recover(&d.receipt, stepped);
    q.recover(&foreign, stepped);
    assert_eq!(names(&q.inprogress_dir), vec![d.receipt.clone()]);
    assert_eq!(names(&q.new_dir), vec!["other.1.job"]);
    // Once settled, it is no longer ours to keep.
    let mut d = d;
    q.renew(&mut d, Instant::now()).unwrap();
    q.retry(&d, Duration::from_secs(1)).unwrap();
    let left = names(&q.inprogress_dir).remove(0);
    q.recover(&left, epoch_now() + 90);
    assert_eq!(names(&q.new_dir).len(), 2);
}

#[test]
fn the_expiry_rule_and_the_renewal_margin() {
    // Ruby Chore's rule: expired once the epoch is at most now − timeout.
    assert!(!names::expired(Some(1000), 1059, 60));
    assert!(names::expired(Some(1000), 1060, 60));
    assert!(names::expired(None, 0, 60));
    // A claim is renewed every third of a lease: a foreign consumer sees at least two
    // thirds of a lease left, so a forward step shorter than that never lets it recover
    // a held claim; a longer one may (documented).
    let (timeout, lease) = (3600_i64, 60_i64);
    let renewed_at = 10_000;
    let epoch = renewed_at - timeout + lease;
    let next_renewal = renewed_at + lease / 3;
    let margin = 2 * lease / 3;
    assert!(!names::expired(
        Some(epoch),
        next_renewal + margin - 1,
        timeout
    ));
    assert!(names::expired(Some(epoch), next_renewal + margin, timeout));
}

#[test]
fn a_huge_backlog_of_lapsed_claims_is_recovered_in_steps_while_new_is_served() {
    let (_d, q) = queue(60, 60);
    let old = epoch_now() - 120;
    for i in 0..1200 {
        fs::write(q.inprogress_dir.join(format!("old{i}.0.{old}.job")), "{}").unwrap();
    }
    q.publish(None, r#"{"fresh":1}"#).unwrap();
    let stop = Stop::new().unwrap();
    let mut c = FilesystemConsumer::new(&q).unwrap();
    let first = c.receive(1, &stop).unwrap();
    assert_eq!(first.deliveries.len(), 1);
    assert!(
        c.recovery_sweeping(),
        "one receive does a bounded part of the sweep"
    );
    assert!(names(&q.inprogress_dir).len() > 600);
    for _ in 0..10 {
        c.receive(0, &stop).unwrap();
    }
    assert_eq!(names(&q.inprogress_dir).len(), 1);
    assert_eq!(names(&q.new_dir).len(), 1200);
}

mod properties {
    use super::names::{self, JobName};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_name_parses_without_panic_into_a_base_without_dots(name in any::<String>()) {
            let job = JobName::parse(&name);
            prop_assert!(!job.base.contains('.'));
            prop_assert!(name.starts_with(job.base));
            if JobName::is_canonical(&name) {
                prop_assert!(!job.base.is_empty());
                prop_assert_eq!(job.claimed_at, None);
            }
        }

        #[test]
        fn names_chore_writes_read_back(base in "[^.\\p{Cc}]{1,40}", attempts in any::<u32>(), epoch in any::<i64>()) {
            let new = format!("{base}.{attempts}.job");
            prop_assert!(JobName::is_canonical(&new));
            let job = JobName::parse(&new);
            prop_assert_eq!((job.base, job.previous_attempts), (base.as_str(), attempts));
            let claimed = format!("{base}.{attempts}.{epoch}.job");
            prop_assert_eq!(JobName::parse(&claimed).claimed_at, Some(epoch));
            prop_assert!(!JobName::is_canonical(&claimed));
        }

        #[test]
        fn a_unique_base_is_a_base(base in "[^.]{0,40}", inode in any::<u64>(), n in 0usize..5) {
            let fresh = names::unique_base(&base, inode, n);
            let new = format!("{fresh}.0.job");
            prop_assert!(JobName::is_canonical(&new));
            prop_assert_eq!(JobName::parse(&new).base, fresh.as_str());
            prop_assert!(fresh != base);
            prop_assert!(!fresh.chars().any(char::is_control));
        }

        #[test]
        fn the_expiry_rule_never_panics_and_is_monotonic(t in any::<i64>(), now in any::<i64>(), timeout in 0i64..(1 << 40)) {
            let e = names::expired(Some(t), now, timeout);
            if e {
                prop_assert!(names::expired(Some(t), now.saturating_add(1), timeout));
            }
        }
    }
}

#[test]
fn a_retry_whose_claim_keeps_its_name_is_not_a_clash() {
    let (_d, q) = queue(2, 2);
    q.publish(None, "{}").unwrap();
    let d = drain(&q).remove(0);
    // The claim expires in 2 s; a retry in 2 s writes the same epoch, the same name.
    let same = JobName::parse(&d.receipt).claimed_at;
    q.retry(&d, Duration::from_secs(2)).unwrap();
    let left = names(&q.inprogress_dir);
    assert_eq!(left.len(), 1);
    if JobName::parse(&left[0]).claimed_at == same {
        assert_eq!(left[0], d.receipt, "kept its name and id");
    }
    assert!(left[0].starts_with(&d.id) && !left[0][d.id.len()..].starts_with('-'));
}
