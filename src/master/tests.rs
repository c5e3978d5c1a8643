//! The master's logic without processes: an in-memory queue, a fake launcher, and events
//! fed by hand, each taking `now`. They check what no integration test can see cheaply:
//! every credit comes back, second copies wait, a FIFO group keeps its order, a drain gives
//! back what has not started.

use super::pool::{Launch, Pool, WorkerEvent, WorkerId};
use super::posts::{Deliver, Posts};
use super::{Master, Phase};
use crate::config::HttpTarget;
use crate::config::{Config, LogFormat, QueueConfig};
use crate::consumer::{Batchlet, Gate, Held};
use crate::hooks::Hooks;
use crate::poster::{Outcome, Posted};
use crate::protocol::{Report, Verdict};
use crate::queue::memory::{MemoryQueue, Op, delivery, queue_config};
use crate::queue::{Delivery, Stop};
use crate::settle::Settler;
use signal_hook::consts::SIGTERM;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fake launcher saw.
#[derive(Default)]
struct Launched {
    spawned: Vec<(WorkerId, serde_json::Value)>,
    killed: Vec<u32>,
    /// Groups of reaped workers killed (`kill_group`).
    orphaned: Vec<u32>,
    fail: bool,
}

struct FakeLauncher(Arc<Mutex<Launched>>);

impl Launch for FakeLauncher {
    fn spawn(&mut self, id: WorkerId, spec: Vec<u8>, _keep: bool) -> std::io::Result<u32> {
        let mut l = self.0.lock().unwrap();
        if l.fail {
            return Err(std::io::Error::other("no more processes"));
        }
        l.spawned.push((id, serde_json::from_slice(&spec).unwrap()));
        Ok(1000 + id as u32)
    }
    fn kill(&mut self, pid: u32) {
        self.0.lock().unwrap().killed.push(pid);
    }
    fn kill_group(&mut self, pid: u32) {
        self.0.lock().unwrap().orphaned.push(pid);
    }
}

mod isolation;

const CAPACITY: usize = 12;

struct Rig {
    master: Master,
    queue: Arc<MemoryQueue>,
    gate: Arc<Gate>,
    launched: Arc<Mutex<Launched>>,
    t0: Instant,
}

fn config(concurrency: usize, batch_size: usize, qc: QueueConfig) -> Config {
    Config {
        concurrency,
        batch_size,
        batch_timeout: Duration::from_secs(20),
        strict_batching: false,
        threads_per_queue: 1,
        queue_polling_size: 10,
        consumer_sleep_interval: Duration::from_secs(1),
        queue_prefix: String::new(),
        default_queue_timeout: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(30),
        fs_queue_root: "unused".into(),
        fs_claim_lease: Duration::from_secs(60),
        stall_timeout: Duration::ZERO,
        metrics_listen: None,
        control_socket: None,
        sqs: Default::default(),
        dedupe: crate::config::DedupeSettings {
            servers: Vec::new(),
            dupe_on_cache_failure: false,
            prefix: String::new(),
        },
        log_file: None,
        log_format: LogFormat::Text,
        log_level: tracing::Level::INFO,
        log_settlements: true,
        declared: vec![qc],
        selected: vec![0],
        files: Vec::new(),
        ignored_options: Vec::new(),
        ignored_words: Vec::new(),
    }
}

fn rig(concurrency: usize, batch_size: usize, ordered: bool, max_attempts: Option<u32>) -> Rig {
    let qc = QueueConfig {
        max_attempts,
        ..queue_config()
    };
    let queue = Arc::new(MemoryQueue::new("jobs", Duration::from_secs(60), ordered));
    let gate = Gate::new(CAPACITY);
    let launched = Arc::new(Mutex::new(Launched::default()));
    let settler = Settler {
        queue: queue.clone(),
        on_permanent_failure: Default::default(),
        hooks: Hooks::default(),
        dedupe: None,
    };
    let master = Master::new(
        config(concurrency, batch_size, qc.clone()),
        vec![qc],
        vec![settler],
        gate.clone(),
        Arc::new(Stop::new().unwrap()),
        Pool::new(Box::new(FakeLauncher(launched.clone()))),
    );
    Rig {
        master,
        queue,
        gate,
        launched,
        t0: Instant::now(),
    }
}

impl Rig {
    /// Messages as a consumer sends them, each with a credit from the gate.
    fn receive(&mut self, messages: Vec<Delivery>, short: bool) {
        let messages = self.credited(messages);
        self.master.on_batchlet(Batchlet {
            queue: 0,
            messages,
            short,
        });
    }

    /// Messages with a credit each, as a consumer holds them after receiving.
    fn credited(&self, messages: Vec<Delivery>) -> Vec<Held> {
        let mut credits = self.gate.take(messages.len()).unwrap();
        messages
            .into_iter()
            .map(|d| Held::new(d, credits.split_one().unwrap()))
            .collect()
    }

    fn msg(&self, id: &str) -> Delivery {
        delivery(id, 1, None, self.t0)
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    /// The ids of each batch started so far, by worker.
    fn batches(&self) -> Vec<(WorkerId, Vec<String>)> {
        let l = self.launched.lock().unwrap();
        l.spawned
            .iter()
            .map(|(id, spec)| {
                let ids = spec["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["id"].as_str().unwrap().to_string())
                    .collect();
                (*id, ids)
            })
            .collect()
    }

    fn report(&mut self, worker: WorkerId, i: usize, verdict: Verdict) {
        let report = Report {
            i,
            verdict,
            delay: None,
            error: Some("it broke".into()),
        };
        self.master
            .on_worker_event(WorkerEvent::Report(worker, report), Instant::now());
    }

    fn exit(&mut self, worker: WorkerId, raw_status: i32) {
        self.master.on_worker_event(
            WorkerEvent::Exited(worker, ExitStatus::from_raw(raw_status)),
            Instant::now(),
        );
    }

    fn all_credits_back(&self) -> bool {
        self.gate.free() == CAPACITY
    }
}

#[test]
fn a_batch_runs_and_every_credit_comes_back() {
    let mut r = rig(2, 3, false, None);
    let (a, b) = (r.msg("a"), r.msg("b"));
    r.receive(vec![a, b], true);
    assert_eq!(r.gate.free(), CAPACITY - 2);
    r.master.dispatch(r.at(0));
    assert_eq!(r.batches(), vec![(1, vec!["a".into(), "b".into()])]);
    r.report(1, 0, Verdict::Ok);
    r.report(1, 1, Verdict::Fail);
    r.exit(1, 0);
    assert_eq!(
        r.queue.ops(),
        vec![
            Op::Complete("a".into()),
            Op::Retry("b".into(), Duration::from_secs(10))
        ]
    );
    assert!(r.all_credits_back());
    assert!(r.master.pool.is_empty());
}

#[test]
fn a_full_buffer_waits_for_a_free_worker_and_partial_batches_wait_for_short() {
    let mut r = rig(1, 2, false, None);
    let ids = ["a", "b", "c"];
    let msgs = ids.iter().map(|i| r.msg(i)).collect();
    // Not short: a full batch starts, the third waits for more (or its batch timeout).
    r.receive(msgs, false);
    r.master.dispatch(r.at(0));
    assert_eq!(r.batches().len(), 1);
    r.report(1, 0, Verdict::Ok);
    r.report(1, 1, Verdict::Ok);
    r.exit(1, 0);
    r.master.dispatch(r.at(1));
    assert_eq!(r.batches().len(), 1, "c waits: the queue may have more");
    r.master.dispatch(r.at(20));
    assert_eq!(r.batches()[1].1, vec!["c".to_string()], "batch timeout");
}

#[test]
fn a_worker_killed_from_outside_has_what_its_batch_left_killed_and_one_that_ended_not() {
    let mut r = rig(1, 5, false, Some(2));
    let m = r.msg("a");
    r.receive(vec![m], true);
    r.master.dispatch(r.at(0));
    r.exit(1, 9); // SIGKILL, from outside: its handlers are still in its group
    assert_eq!(r.launched.lock().unwrap().orphaned, vec![1001]);
    let m = r.msg("b");
    r.receive(vec![m], true);
    r.master.dispatch(r.at(1));
    assert_eq!(r.batches()[1], (2, vec!["b".to_string()]));
    r.report(2, 0, Verdict::Ok);
    r.exit(2, 0); // it ended by itself, having killed its leftovers
    assert_eq!(r.launched.lock().unwrap().orphaned, vec![1001]);
}

#[test]
fn unreported_messages_of_a_dead_worker_fail_alone_and_max_attempts_dead_letters() {
    let mut r = rig(1, 5, false, Some(2));
    let first = r.msg("first");
    let last = delivery("last", 2, None, r.t0);
    r.receive(vec![first, last], true);
    r.master.dispatch(r.at(0));
    r.exit(1, 9); // SIGKILL, from outside
    assert!(
        r.queue.ops().is_empty(),
        "two unreported: neither charged yet"
    );
    // Each runs again alone; alone, a death is that message's failure.
    r.master.dispatch(r.at(1));
    r.exit(2, 9);
    r.master.dispatch(r.at(2));
    r.exit(3, 9);
    assert_eq!(
        r.batches()[1..],
        [(2, vec!["first".into()]), (3, vec!["last".into()])]
    );
    let ops = r.queue.ops();
    assert_eq!(ops[0], Op::Retry("first".into(), Duration::from_secs(10)));
    assert!(
        matches!(&ops[1], Op::DeadLetter(id, why) if id == "last" && why.contains("2 of 2") && why.contains("SIGKILL")),
        "{ops:?}"
    );
    assert!(r.all_credits_back());
}

#[test]
fn a_worker_past_its_deadline_is_killed_and_its_messages_fail() {
    let mut r = rig(1, 5, false, None);
    let a = r.msg("a");
    r.receive(vec![a], true);
    r.master.dispatch(r.at(0));
    r.master.kill_expired(r.at(59));
    assert!(r.launched.lock().unwrap().killed.is_empty());
    r.master.kill_expired(r.at(60));
    r.master.kill_expired(r.at(61));
    assert_eq!(r.launched.lock().unwrap().killed, vec![1001], "killed once");
    r.exit(1, 9);
    assert_eq!(
        r.queue.ops(),
        vec![Op::Retry("a".into(), Duration::from_secs(10))]
    );
    assert!(r.all_credits_back());
}

#[test]
fn a_second_copy_waits_and_shares_the_first_copys_fate() {
    let mut r = rig(2, 5, false, None);
    let a = r.msg("a");
    r.receive(vec![a.clone()], true);
    r.master.dispatch(r.at(0));
    // The same message again, while the first runs.
    r.receive(vec![a], true);
    r.master.dispatch(r.at(0));
    assert_eq!(r.batches().len(), 1, "the copy never runs beside the first");
    assert_eq!(r.master.holding.deferred(), 1);
    r.report(1, 0, Verdict::Ok);
    assert_eq!(
        r.queue.ops(),
        vec![Op::Complete("a".into()), Op::Complete("a".into())]
    );
    assert!(r.all_credits_back());
}

#[test]
fn a_second_copy_runs_when_the_first_is_given_back_unrun() {
    let mut r = rig(1, 5, true, None);
    let (a, b) = (
        delivery("a", 1, Some("g"), r.t0),
        delivery("b", 1, Some("g"), r.t0),
    );
    r.receive(vec![a.clone(), b.clone()], true);
    r.master.dispatch(r.at(0));
    // A copy of b arrives while b runs; b is then skipped by the worker (its group failed).
    r.receive(vec![b], true);
    r.report(1, 0, Verdict::Fail);
    r.report(1, 1, Verdict::Skip);
    r.exit(1, 0);
    r.master.dispatch(r.at(1));
    assert_eq!(r.batches()[1].1, vec!["b".to_string()], "the copy runs");
    r.report(2, 0, Verdict::Ok);
    r.exit(2, 0);
    assert!(r.all_credits_back());
}

#[test]
fn fifo_a_group_never_runs_in_two_workers_and_a_retry_holds_back_the_rest() {
    let mut r = rig(2, 1, true, None);
    let g1a = delivery("g1a", 1, Some("g1"), r.t0);
    let g1b = delivery("g1b", 1, Some("g1"), r.t0);
    let g2 = delivery("g2", 1, Some("g2"), r.t0);
    r.receive(vec![g1a, g1b, g2], true);
    r.master.dispatch(r.at(0));
    let started: Vec<_> = r.batches().into_iter().map(|(_, ids)| ids).collect();
    assert_eq!(
        started,
        vec![vec!["g1a".to_string()], vec!["g2".to_string()]]
    );
    // g1a fails: g1b, waiting behind it, goes back to the queue behind it.
    r.report(1, 0, Verdict::Fail);
    assert_eq!(
        r.queue.ops(),
        vec![
            Op::Retry("g1a".into(), Duration::from_secs(10)),
            Op::GiveBack("g1b".into())
        ]
    );
    r.exit(1, 0);
    r.report(2, 0, Verdict::Ok);
    r.exit(2, 0);
    assert!(r.all_credits_back());
}

#[test]
fn a_drain_gives_back_what_waits_and_finishes_what_runs() {
    let mut r = rig(1, 1, false, None);
    let msgs = ["a", "b", "c"].iter().map(|i| r.msg(i)).collect();
    r.receive(msgs, true);
    r.master.dispatch(r.at(0));
    let a = r.msg("a");
    r.receive(vec![a], true); // a second copy of the running one
    // A receive under way when the signal comes.
    let late = r.credited(vec![r.msg("d")]);
    r.master.on_signal(SIGTERM, r.at(1));
    assert!(matches!(r.master.phase, Phase::Draining { .. }));
    assert_eq!(
        r.queue.ops(),
        vec![
            Op::GiveBack("b".into()),
            Op::GiveBack("c".into()),
            Op::GiveBack("a".into())
        ]
    );
    // Arriving during the drain: given back at once.
    r.master.on_batchlet(Batchlet {
        queue: 0,
        messages: late,
        short: true,
    });
    assert!(!r.master.turn(r.at(2), true), "a worker still runs");
    assert_eq!(r.batches().len(), 1, "nothing new starts");
    r.report(1, 0, Verdict::Ok);
    r.exit(1, 0);
    assert!(r.master.turn(r.at(3), true), "drained");
    assert_eq!(
        r.queue.ops()[3..],
        [Op::GiveBack("d".into()), Op::Complete("a".into())]
    );
    assert!(r.all_credits_back());
}

#[test]
fn a_drain_past_shutdown_timeout_kills_the_workers() {
    let mut r = rig(1, 1, false, None);
    let a = r.msg("a");
    r.receive(vec![a], true);
    r.master.dispatch(r.at(0));
    r.master.on_signal(SIGTERM, r.at(0));
    assert!(!r.master.turn(r.at(29), true));
    assert!(r.launched.lock().unwrap().killed.is_empty());
    assert!(!r.master.turn(r.at(30), true));
    assert_eq!(r.launched.lock().unwrap().killed, vec![1001]);
    r.exit(1, 9);
    assert!(r.master.turn(r.at(31), true));
    assert!(r.all_credits_back());
}

#[test]
fn a_failed_spawn_gives_the_batch_back_and_pauses_spawning() {
    let mut r = rig(1, 5, false, None);
    r.launched.lock().unwrap().fail = true;
    let a = r.msg("a");
    r.receive(vec![a], true);
    r.master.dispatch(r.at(0));
    assert_eq!(r.queue.ops(), vec![Op::GiveBack("a".into())]);
    assert!(r.all_credits_back());
    assert_eq!(r.master.spawn_paused_until, Some(r.at(1)));
}

#[test]
fn claims_are_renewed_when_due_wherever_the_message_is() {
    let mut r = rig(1, 1, false, None);
    let msgs = ["a", "b"].iter().map(|i| r.msg(i)).collect();
    r.receive(msgs, true);
    r.master.dispatch(r.at(0));
    r.master.renew_claims(r.at(19));
    assert!(r.queue.ops().is_empty());
    assert_eq!(r.master.holding.next_renewal(), Some(r.at(20)));
    r.master.renew_claims(r.at(20));
    let mut renewed = r.queue.ops();
    renewed.sort_by_key(|op| format!("{op:?}"));
    assert_eq!(renewed, vec![Op::Renew("a".into()), Op::Renew("b".into())]);
}

// HTTP handlers: posts are runners of one message, with their own limit and deadline.

/// What the fake poster saw.
#[derive(Default)]
struct Sent {
    posted: Vec<(WorkerId, String)>,
    aborted: Vec<WorkerId>,
}

struct FakePoster(Arc<Mutex<Sent>>);

impl Deliver for FakePoster {
    fn post(&self, id: WorkerId, _t: &Arc<HttpTarget>, _queue: &str, d: &Delivery) {
        self.0.lock().unwrap().posted.push((id, d.id.clone()));
    }
    fn abort(&self, id: WorkerId) {
        self.0.lock().unwrap().aborted.push(id);
    }
}

fn http_rig(connections: usize) -> (Rig, Arc<HttpTarget>, Arc<Mutex<Sent>>) {
    let mut r = rig(1, 1, false, Some(2));
    let target: toml::Value = toml::Value::String("http://127.0.0.1:9/".into());
    let mut target = crate::config::http_target(&target).unwrap();
    target.connections = connections;
    let target = Arc::new(target);
    let sent = Arc::new(Mutex::new(Sent::default()));
    r.master.posts = Posts::new(Box::new(FakePoster(sent.clone())));
    (r, target, sent)
}

impl Rig {
    fn posted_msg(&self, id: &str, target: &Arc<HttpTarget>) -> Delivery {
        Delivery {
            post_to: Some(target.clone()),
            ..self.msg(id)
        }
    }

    fn answer(&mut self, id: WorkerId, outcome: Outcome) {
        let p = Posted {
            id,
            outcome,
            elapsed: Duration::from_millis(5),
        };
        self.master.on_posted(p);
    }
}

fn status(code: u16) -> Outcome {
    Outcome::Answered {
        status: code,
        retry_after: None,
        excerpt: String::new(),
    }
}

#[test]
fn posts_start_up_to_the_targets_connections_and_only_a_200_completes() {
    let (mut r, t, sent) = http_rig(2);
    let msgs = ["a", "b", "c"]
        .iter()
        .map(|i| r.posted_msg(i, &t))
        .collect();
    r.receive(msgs, false);
    r.master.dispatch(r.at(0));
    let posted = |s: &Arc<Mutex<Sent>>| s.lock().unwrap().posted.clone();
    assert_eq!(posted(&sent), [(1, "a".into()), (2, "b".into())]);
    assert!(r.batches().is_empty(), "no worker for posted messages");
    r.answer(1, status(200));
    r.answer(2, status(204));
    r.master.dispatch(r.at(0));
    assert_eq!(posted(&sent)[2], (3, "c".into()));
    r.answer(3, status(500));
    assert_eq!(
        r.queue.ops(),
        [
            Op::Complete("a".into()),
            Op::Retry("b".into(), Duration::from_secs(2)),
            Op::Retry("c".into(), Duration::from_secs(2)),
        ]
    );
    assert!(r.all_credits_back());
}

#[test]
fn a_post_past_its_deadline_is_aborted_and_retried() {
    let (mut r, t, sent) = http_rig(5);
    let a = r.posted_msg("a", &t);
    r.receive(vec![a], true);
    r.master.dispatch(r.at(0));
    r.master.kill_expired(r.at(59));
    assert!(sent.lock().unwrap().aborted.is_empty());
    r.master.kill_expired(r.at(60));
    assert_eq!(sent.lock().unwrap().aborted, [1]);
    r.answer(1, Outcome::Aborted);
    assert_eq!(
        r.queue.ops(),
        [Op::Retry("a".into(), Duration::from_secs(2))]
    );
    assert!(r.all_credits_back());
}

#[test]
fn a_drain_gives_back_unposted_messages_and_waits_for_posts_in_flight() {
    let (mut r, t, sent) = http_rig(1);
    let msgs = ["a", "b"].iter().map(|i| r.posted_msg(i, &t)).collect();
    r.receive(msgs, true);
    r.master.dispatch(r.at(0));
    r.master.on_signal(SIGTERM, r.at(1));
    assert_eq!(r.queue.ops(), [Op::GiveBack("b".into())]);
    assert!(!r.master.turn(r.at(2), true), "a post is in flight");
    assert!(
        !r.master.turn(r.at(31), true),
        "aborted at shutdown-timeout"
    );
    assert_eq!(sent.lock().unwrap().aborted, [1]);
    r.answer(1, Outcome::Aborted);
    assert!(r.master.turn(r.at(32), true), "drained");
    let last = r.queue.ops().pop();
    assert_eq!(last, Some(Op::Retry("a".into(), Duration::from_secs(2))));
    assert!(r.all_credits_back());
}

#[test]
fn the_status_snapshot_and_the_liveness_verdict_follow_the_master() {
    let mut r = rig(1, 1, false, None);
    let stall = Duration::from_secs(10);
    r.master.obs = super::observing::Observing::new(&["jobs"], stall, r.t0);
    let (a, b) = (r.msg("a"), r.msg("b"));
    r.receive(vec![a, b], false);
    r.master.dispatch(r.at(0));
    r.master.observe_tick(r.at(0));
    let s = r.master.snapshot(r.at(2));
    assert_eq!((s.phase.as_str(), s.healthy), ("running", true));
    assert_eq!(s.workers.len(), 1);
    let w = &s.workers[0];
    assert_eq!(
        (w.pid, w.queue.as_str(), w.ids.clone()),
        (1001, "jobs", vec!["a".to_string()])
    );
    assert_eq!(w.elapsed_secs, 2.0);
    let q = &s.queues[0];
    assert_eq!((q.buffered, q.held, q.received, q.settled), (1, 2, 2, 0));

    // `b` waits behind the one worker for the stall timeout: unhealthy.
    r.master.observe_tick(r.at(10));
    let s = r.master.snapshot(r.at(10));
    assert!(!s.healthy);
    assert!(
        s.unhealthy
            .unwrap()
            .contains("queue jobs has had messages waiting")
    );

    // `a` ends, `b` starts, nothing waits: healthy again.
    r.report(1, 0, Verdict::Ok);
    r.exit(1, 0);
    r.master.dispatch(r.at(11));
    r.master.observe_tick(r.at(12));
    let s = r.master.snapshot(r.at(12));
    assert!(s.healthy, "{:?}", s.unhealthy);
    assert_eq!(
        (s.queues[0].settled, s.workers[0].ids.clone()),
        (1, vec!["b".to_string()])
    );
}

#[test]
fn credits_cover_the_running_batches_one_batch_ahead_and_each_http_connection() {
    use super::startup::{Credits, credits};
    let commands = QueueConfig {
        handler: Some(crate::config::Handler {
            command: vec!["true".into()],
            mode: crate::config::HandlerMode::Batch,
            env: Default::default(),
            dir: None,
            preload: None,
        }),
        ..queue_config()
    };
    let c = config(2, 50, commands.clone());
    let want = |capacity, http, polling_size| Credits {
        capacity,
        http,
        polling_size,
    };
    // Two running batches of 50 and one ahead; a receive asks for the configured 10.
    assert_eq!(
        credits(&c, std::slice::from_ref(&commands), &[]),
        want(150, 0, 10)
    );
    // A small pool: one batch of one running, one ahead, so a receive asks for one.
    let small = config(1, 1, commands.clone());
    assert_eq!(
        credits(&small, std::slice::from_ref(&commands), &[]),
        want(2, 0, 1)
    );
    // An HTTP handler of 50 connections adds them and a receive of 10 ahead; a queue with
    // only HTTP handlers holds no batches.
    let (_, target, _) = http_rig(50);
    let web = QueueConfig {
        http: Some(target.clone()),
        ..queue_config()
    };
    assert_eq!(
        credits(
            &c,
            std::slice::from_ref(&web),
            std::slice::from_ref(&target)
        ),
        want(60, 60, 10)
    );
    assert_eq!(credits(&c, &[commands, web], &[target]), want(210, 60, 10));
}
