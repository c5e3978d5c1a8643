//! Who sends a tick: every master tries every tick of its queues, and a claim that only one
//! of them can win decides (docs/decisions/0017-periodic-tasks-without-a-leader.md).
//!
//! * FIFO SQS: nothing to claim here; every master sends, and SQS keeps one message per
//!   deduplication id (task and tick) within five minutes.
//! * Standard SQS: memcached `add` of `<dedupe-prefix>chore-cron:<queue>:<task>:<tick>`
//!   on the dedupe servers, kept an hour. When memcached cannot be asked the tick is sent
//!   anyway (at least once), with a warning.
//! * Filesystem: exclusive creation of `<queue dir>/cron/<task>.<tick>`; markers older
//!   than a day are pruned. Ruby Chore looks only in `new/` and `inprogress/`, so the
//!   directory is invisible to it.

use crate::dedupe::Dedupe;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How long a memcached claim is kept: far beyond any catch-up, short enough to clean up.
pub const MEMCACHED_TTL: u32 = 3600;
/// Filesystem markers older than this are removed.
pub const MARKER_AGE: i64 = 86_400;
/// The longest marker name kept readable; longer task names are digested.
const MAX_MARKER: usize = 200;

/// The outcome of claiming a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This master sends it.
    Won,
    /// Another master has sent it (or is sending it).
    Lost,
    /// Nobody could say: send it anyway, at least once. The reason, for the warning.
    Unknown(String),
}

/// How one queue's ticks are claimed.
pub enum Claim {
    /// FIFO SQS: the message's deduplication id does it.
    Fifo,
    /// Standard SQS: memcached `add`.
    Memcached {
        dedupe: Arc<Dedupe>,
        queue: String,
        /// An outage is warned about once, until a claim gets through again.
        warned: AtomicBool,
    },
    /// Filesystem: exclusive creation of a marker file in `dir`.
    Marker { dir: PathBuf },
}

impl Claim {
    pub fn memcached(dedupe: Arc<Dedupe>, queue: &str) -> Claim {
        Claim::Memcached {
            dedupe,
            queue: queue.to_string(),
            warned: AtomicBool::new(false),
        }
    }

    /// A marker directory, created now (a failure is a start-up error).
    pub fn marker(dir: PathBuf) -> io::Result<Claim> {
        crate::queue::filesystem::files::create_dirs(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        Ok(Claim::Marker { dir })
    }

    /// Claim `task`'s `tick`.
    pub fn take(&self, task: &str, tick: i64) -> Claimed {
        match self {
            Claim::Fifo => Claimed::Won,
            Claim::Memcached {
                dedupe,
                queue,
                warned,
            } => {
                let key = dedupe.key(&memcached_key(queue, task, tick));
                match dedupe.claim(&key, MEMCACHED_TTL) {
                    Some(true) => {
                        warned.store(false, Ordering::Relaxed);
                        Claimed::Won
                    }
                    Some(false) => Claimed::Lost,
                    None if warned.swap(true, Ordering::Relaxed) => Claimed::Unknown(String::new()),
                    None => Claimed::Unknown(
                        "memcached (dedupe-servers) cannot be reached, so no claim could be made"
                            .into(),
                    ),
                }
            }
            Claim::Marker { dir } => {
                let path = dir.join(marker_name(task, tick));
                // Exclusive, never through a link, with an explicit mode.
                match crate::queue::filesystem::files::create_new(&path) {
                    Ok(_) => Claimed::Won,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Claimed::Lost,
                    Err(e) => Claimed::Unknown(format!("cannot create {}: {e}", path.display())),
                }
            }
        }
    }

    /// Give a claim up (its send failed), so a master starting within the catch-up window
    /// may still send the tick.
    pub fn release(&self, task: &str, tick: i64) {
        match self {
            Claim::Fifo => {}
            Claim::Memcached { dedupe, queue, .. } => {
                dedupe.forget(dedupe.key(&memcached_key(queue, task, tick)))
            }
            Claim::Marker { dir } => {
                let _ = fs::remove_file(dir.join(marker_name(task, tick)));
            }
        }
    }

    /// Remove filesystem markers older than a day (the others keep nothing to prune).
    /// Returns how many went.
    pub fn prune(&self, now: i64) -> usize {
        let Claim::Marker { dir } = self else {
            return 0;
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let stale = name
                .to_str()
                .and_then(marker_tick)
                .is_some_and(|tick| tick < now - MARKER_AGE);
            if stale && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// The memcached key of a tick, before the dedupe prefix (`Dedupe::key` adds it, and
/// digests a key memcached could not hold).
pub fn memcached_key(queue: &str, task: &str, tick: i64) -> String {
    format!("chore-cron:{queue}:{task}:{tick}")
}

/// The marker file of a tick: `<task>.<tick>`, the task name made safe for a file name
/// (`%` and `/` percent-encoded, control characters too) or, when long, digested.
pub fn marker_name(task: &str, tick: i64) -> String {
    let mut safe = String::with_capacity(task.len());
    for c in task.chars() {
        if c == '%' || c == '/' || c.is_control() {
            for b in c.to_string().bytes() {
                safe.push_str(&format!("%{b:02X}"));
            }
        } else {
            safe.push(c);
        }
    }
    if safe.is_empty() || safe.len() > MAX_MARKER || safe == "." || safe == ".." {
        safe = format!("sha1-{}", sha1_smol::Sha1::from(task).digest());
    }
    format!("{safe}.{tick}")
}

/// The tick a marker name ends with.
fn marker_tick(name: &str) -> Option<i64> {
    name.rsplit_once('.').and_then(|(_, t)| t.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: i64 = 1_795_971_600;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("chore-claim-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_memcached_key_names_queue_task_and_tick_after_the_prefix() {
        assert_eq!(
            memcached_key("work", "PeriodicTaskJob", TICK),
            "chore-cron:work:PeriodicTaskJob:1795971600"
        );
        let d = Dedupe::new(&crate::config::DedupeSettings {
            servers: vec!["127.0.0.1:1".into()],
            dupe_on_cache_failure: false,
            prefix: "app-".into(),
        });
        assert_eq!(
            d.key(&memcached_key("work", "Job", TICK)),
            "app-chore-cron:work:Job:1795971600"
        );
        // A name memcached cannot hold in a key is digested, the same on every master.
        let spaced = d.key(&memcached_key("work", "nightly report", TICK));
        assert!(spaced.starts_with("app-sha1:"), "{spaced}");
    }

    #[test]
    fn an_unreachable_memcached_sends_anyway_and_warns_once() {
        let d = Dedupe::new(&crate::config::DedupeSettings {
            servers: vec!["127.0.0.1:1".into()],
            dupe_on_cache_failure: true,
            prefix: String::new(),
        });
        let c = Claim::memcached(d, "work");
        assert!(matches!(c.take("t", TICK), Claimed::Unknown(why) if why.contains("memcached")));
        assert_eq!(c.take("t", TICK + 60), Claimed::Unknown(String::new()));
    }

    /// Two masters' claims through a real memcached: one wins a tick. Runs when
    /// `CHORE_TEST_MEMCACHED` names the program (as scripts/test.sh sets it).
    #[test]
    fn one_of_two_masters_wins_a_tick_in_memcached() {
        let Some(program) = std::env::var_os("CHORE_TEST_MEMCACHED") else {
            eprintln!("skipped: CHORE_TEST_MEMCACHED is not set");
            return;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let mut server = std::process::Command::new(program)
            .args(["-u", "root", "-l", "127.0.0.1", "-U", "0", "-m", "8"])
            .args(["-p", &port.to_string()])
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(t0.elapsed().as_secs() < 10, "memcached did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let master = || {
            let d = Dedupe::new(&crate::config::DedupeSettings {
                servers: vec![addr.clone()],
                dupe_on_cache_failure: false,
                prefix: "p-".into(),
            });
            Claim::memcached(d, "work")
        };
        let (a, b) = (master(), master());
        assert_eq!(a.take("job", TICK), Claimed::Won);
        assert_eq!(b.take("job", TICK), Claimed::Lost);
        assert_eq!(b.take("job", TICK + 60), Claimed::Won);
        let _ = server.kill();
        let _ = server.wait();
    }

    #[test]
    fn fifo_claims_are_always_won() {
        assert_eq!(Claim::Fifo.take("t", TICK), Claimed::Won);
    }

    #[test]
    fn marker_names_are_safe_file_names_that_keep_their_tick() {
        assert_eq!(
            marker_name("PeriodicTaskJob", TICK),
            "PeriodicTaskJob.1795971600"
        );
        assert_eq!(marker_name("a/b%c", 5), "a%2Fb%25c.5");
        assert_eq!(marker_name("Cleanup::Job v1.2", 5), "Cleanup::Job v1.2.5");
        assert_eq!(marker_tick(&marker_name("Cleanup::Job v1.2", 5)), Some(5));
        let long = marker_name(&"x".repeat(300), 5);
        assert!(long.starts_with("sha1-") && long.ends_with(".5"), "{long}");
        assert!(marker_name("..", 5).starts_with("sha1-"));
        assert_ne!(marker_name("a/b", 5), marker_name("a%2Fb", 5));
    }

    #[test]
    fn a_filesystem_marker_is_won_by_exactly_one_claimer() {
        let d = dir("exclusive");
        let (a, b) = (
            Claim::marker(d.join("cron")).unwrap(),
            Claim::marker(d.join("cron")).unwrap(),
        );
        let racers: Vec<Claimed> = std::thread::scope(|s| {
            let ha = s.spawn(|| a.take("job", TICK));
            let hb = s.spawn(|| b.take("job", TICK));
            vec![ha.join().unwrap(), hb.join().unwrap()]
        });
        assert_eq!(racers.iter().filter(|c| **c == Claimed::Won).count(), 1);
        assert_eq!(racers.iter().filter(|c| **c == Claimed::Lost).count(), 1);
        // Another tick, another claim; a released claim can be won again.
        assert_eq!(a.take("job", TICK + 60), Claimed::Won);
        a.release("job", TICK);
        assert_eq!(b.take("job", TICK), Claimed::Won);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn markers_older_than_a_day_are_pruned_and_others_kept() {
        let d = dir("prune");
        let c = Claim::marker(d.join("cron")).unwrap();
        let now = TICK + 2 * MARKER_AGE;
        assert_eq!(c.take("old", TICK), Claimed::Won);
        assert_eq!(c.take("recent", now - 60), Claimed::Won);
        fs::write(d.join("cron").join("notes.txt"), "not a marker").unwrap();
        assert_eq!(c.prune(now), 1);
        let mut left: Vec<String> = fs::read_dir(d.join("cron"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["notes.txt".to_string(), marker_name("recent", now - 60)]
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_marker_that_cannot_be_made_sends_anyway() {
        let c = Claim::Marker {
            dir: PathBuf::from("/nonexistent/chore/cron"),
        };
        assert!(matches!(c.take("t", TICK), Claimed::Unknown(_)));
    }
}
