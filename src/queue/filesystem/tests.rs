//! The filesystem queue against a real temporary directory.

use super::*;
use crate::queue::Stop;
use consume::FilesystemConsumer;
use std::fs::File;

fn queue(timeout: u64, lease: u64) -> (tempdir::Dir, FilesystemQueue) {
    let dir = tempdir::Dir::new();
    let q = FilesystemQueue::open(
        dir.path(),
        "jobs",
        None,
        Duration::from_secs(timeout),
        Duration::from_secs(lease),
        Duration::from_millis(10),
    )
    .unwrap();
    (dir, q)
}

mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "chore-fs-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn parses_names_like_ruby_chore() {
    assert_eq!(
        JobName::parse("q-Foo::Bar-1-20240510-120000-123456.0.job"),
        JobName {
            base: "q-Foo::Bar-1-20240510-120000-123456",
            previous_attempts: 0,
            claimed_at: None
        }
    );
    assert_eq!(
        JobName::parse("foo.2.1700000000.job").claimed_at,
        Some(1_700_000_000)
    );
    assert_eq!(JobName::parse("foo.2.1700000000.job").previous_attempts, 2);
}

#[test]
fn publish_writes_ruby_chore_names() {
    let (_d, q) = queue(60, 60);
    let name = q
        .publish(Some("Foo::BarJob"), r#"{"class":"Foo::BarJob","args":[1]}"#)
        .unwrap();
    let pid = std::process::id().to_string();
    assert!(
        name.starts_with(&format!("jobs-Foo::BarJob-{pid}-")),
        "{name}"
    );
    assert!(name.ends_with(".0.job"));
    let stamp = name
        .trim_end_matches(".0.job")
        .rsplit('-')
        .take(3)
        .collect::<Vec<_>>();
    assert_eq!(stamp[0].len(), 6, "{name}"); // micro6
    assert_eq!(stamp[1].len(), 6, "{name}"); // HHMMSS
    assert_eq!(stamp[2].len(), 8, "{name}"); // YYYYmmdd
    assert_eq!(
        fs::read_to_string(q.new_dir.join(&name)).unwrap(),
        r#"{"class":"Foo::BarJob","args":[1]}"#
    );
}

#[test]
fn claim_complete_and_recovery() {
    let (_d, q) = queue(60, 60);
    q.publish(None, "{}").unwrap();
    let stop = Stop::new().unwrap();
    let mut c = q.consumer().unwrap();
    let got = c.receive(10, &stop).unwrap();
    assert_eq!(got.deliveries.len(), 1);
    assert!(got.short);
    let d = &got.deliveries[0];
    assert_eq!(d.attempt, 1);
    assert_eq!(names(&q.new_dir).len(), 0);
    let claimed = names(&q.inprogress_dir);
    assert_eq!(claimed, vec![d.receipt.clone()]);
    // The claim epoch is "now" when the lease equals the timeout, as in Ruby Chore.
    let epoch = JobName::parse(&claimed[0]).claimed_at.unwrap();
    assert!((epoch - epoch_now()).abs() <= 1);
    q.complete(d).unwrap();
    assert!(names(&q.inprogress_dir).is_empty());
}

#[test]
fn empty_files_are_not_claimed() {
    let (_d, q) = queue(60, 60);
    File::create(q.new_dir.join("jobs-X-1-20240101-000000-000000.0.job")).unwrap();
    let stop = Stop::new().unwrap();
    let got = q.consumer().unwrap().receive(10, &stop).unwrap();
    assert!(got.deliveries.is_empty());
    assert_eq!(names(&q.new_dir).len(), 1);
}

#[test]
fn locked_files_are_skipped() {
    let (_d, q) = queue(60, 60);
    let path = q.new_dir.join("jobs-X-1-20240101-000000-000000.0.job");
    fs::write(&path, "{}").unwrap();
    let held = File::open(&path).unwrap();
    assert!(try_lock(&held));
    let stop = Stop::new().unwrap();
    assert!(
        q.consumer()
            .unwrap()
            .receive(10, &stop)
            .unwrap()
            .deliveries
            .is_empty()
    );
    drop(held);
    assert_eq!(
        q.consumer()
            .unwrap()
            .receive(10, &stop)
            .unwrap()
            .deliveries
            .len(),
        1
    );
}

#[test]
fn expired_claims_come_back_with_one_more_attempt() {
    let (_d, q) = queue(60, 60);
    let old = epoch_now() - 61;
    fs::write(q.inprogress_dir.join(format!("foo.1.{old}.job")), "{}").unwrap();
    fs::write(q.inprogress_dir.join("bar.0.job"), "{}").unwrap(); // no epoch: always expired
    fs::write(
        q.inprogress_dir.join(format!("baz.0.{}.job", epoch_now())),
        "{}",
    )
    .unwrap();
    super::recover::Recovery::sweep(&q);
    assert_eq!(names(&q.new_dir), vec!["bar.1.job", "foo.2.job"]);
    assert_eq!(names(&q.inprogress_dir).len(), 1);
}

#[test]
fn retry_sets_the_claim_to_expire_after_the_delay() {
    let (_d, q) = queue(3600, 60);
    q.publish(None, "{}").unwrap();
    let stop = Stop::new().unwrap();
    let d = q
        .consumer()
        .unwrap()
        .receive(1, &stop)
        .unwrap()
        .deliveries
        .remove(0);
    // A lease shorter than the timeout: the claim epoch lies in the past.
    let epoch = JobName::parse(&d.receipt).claimed_at.unwrap();
    assert!((epoch - (epoch_now() - 3600 + 60)).abs() <= 1);
    q.retry(&d, Duration::from_secs(30)).unwrap();
    let name = names(&q.inprogress_dir).remove(0);
    let epoch = JobName::parse(&name).claimed_at.unwrap();
    assert!((epoch - (epoch_now() - 3600 + 30)).abs() <= 1, "{name}");
    // A zero delay goes straight back with one more attempt.
    let d = Delivery { receipt: name, ..d };
    q.retry(&d, Duration::ZERO).unwrap();
    assert!(names(&q.new_dir)[0].ends_with(".1.job"));
}

#[test]
fn dead_letter_and_give_back() {
    let (_d, q) = queue(60, 60);
    q.publish(None, "{}").unwrap();
    q.publish(None, "[]").unwrap();
    let stop = Stop::new().unwrap();
    let mut got = q.consumer().unwrap().receive(10, &stop).unwrap().deliveries;
    assert_eq!(got.len(), 2);
    let b = got.pop().unwrap();
    let a = got.pop().unwrap();
    q.dead_letter(&a, "handler said no").unwrap();
    let dead = names(&q.dead_dir);
    assert_eq!(dead.len(), 2);
    assert!(
        fs::read_to_string(q.dead_dir.join(&dead[1]))
            .unwrap()
            .contains("handler said no")
    );
    q.give_back(&b).unwrap();
    assert!(names(&q.new_dir)[0].ends_with(".0.job"));
}

#[test]
fn renew_moves_the_claim_forward() {
    let (_d, q) = queue(3600, 10);
    q.publish(None, "{}").unwrap();
    let stop = Stop::new().unwrap();
    let mut d = q
        .consumer()
        .unwrap()
        .receive(1, &stop)
        .unwrap()
        .deliveries
        .remove(0);
    let old = d.receipt.clone();
    let renamed = old.replace(
        &format!(".{}.", JobName::parse(&old).claimed_at.unwrap()),
        ".5.",
    );
    fs::rename(q.inprogress_dir.join(&old), q.inprogress_dir.join(&renamed)).unwrap();
    d.receipt = renamed;
    q.renew(&mut d, Instant::now()).unwrap();
    assert_eq!(names(&q.inprogress_dir), vec![d.receipt.clone()]);
    assert!(JobName::parse(&d.receipt).claimed_at.unwrap() > 5);
}

#[test]
fn config_timeout_file_is_honoured() {
    let dir = tempdir::Dir::new();
    fs::create_dir_all(dir.path().join("jobs/config")).unwrap();
    fs::write(dir.path().join("jobs/config/timeout"), " 30\n").unwrap();
    let q = FilesystemQueue::open(
        dir.path(),
        "jobs",
        None,
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .unwrap();
    assert_eq!(q.timeout(), Duration::from_secs(30));
    let q = FilesystemQueue::open(
        dir.path(),
        "jobs",
        Some(Duration::from_secs(5)),
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .unwrap();
    assert_eq!(q.timeout(), Duration::from_secs(5));
}

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
        fn names_chore_writes_read_back(base in "[^.]{1,40}", attempts in any::<u32>(), epoch in any::<i64>()) {
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
