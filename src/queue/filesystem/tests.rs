//! The filesystem queue against a real temporary directory.

use super::*;
use crate::queue::Stop;
use std::fs::File;

pub(super) fn queue(timeout: u64, lease: u64) -> (tempdir::Dir, FilesystemQueue) {
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

/// Make directory `dir` look as if it last changed an hour ago.
pub(super) fn age(dir: &Path) {
    let past = std::time::SystemTime::now() - Duration::from_secs(3600);
    File::open(dir).unwrap().set_modified(past).unwrap();
}

pub(super) mod tempdir {
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

pub(super) fn names(dir: &Path) -> Vec<String> {
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
