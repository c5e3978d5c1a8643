//! Preloaders: the long-lived processes of preloaded handlers (docs/handlers.md,
//! "Preloaded mode"), one per distinct handler, shared by every queue that routes to it.
//!
//! The master keeps each one through its life: start it with a fresh socket path, call it
//! ready once its socket accepts a connection, hand its socket to every batch (the worker
//! asks it to fork), and replace it when it dies, fails to boot (after a backoff), or is
//! due for recycling (batches, age, resident memory, or SIGUSR2 for a deploy). A
//! replacement boots while the old one still serves; the old one gets SIGTERM once the new
//! one is ready, and SIGKILL 10 s later. Each handler's `ready` flag is what its queues'
//! consumers wait on, so nothing is received while no preloader can fork.
//!
//! Everything but starting and signalling processes takes `now`.

use crate::config::{Handler, QueueConfig};
use crate::logging::capture::{Pipe, Source};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A preloader told to stop has this long before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often a booting preloader's socket is tried.
const BOOT_POLL: Duration = Duration::from_millis(50);
/// How often a serving preloader's memory is read.
const MEMORY_POLL: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub struct Preloaders {
    slots: Vec<Slot>,
    /// The private directory (mode 0700) the sockets live in.
    dir: PathBuf,
    log_file: Option<PathBuf>,
    serial: u64,
    /// Draining: no preloader is started or replaced any more.
    draining: bool,
}

/// One preloaded handler and its processes.
struct Slot {
    handler: Handler,
    keep_credentials: bool,
    ready: Arc<AtomicBool>,
    serving: Option<Instance>,
    booting: Option<Instance>,
    retiring: Vec<(Instance, Instant)>,
    /// Failures in a row (boot or death), for the backoff.
    failures: u32,
    /// Preloaders in a row that booted but could not fork a batch: the backoff between
    /// them grows as `failures`' does, though each boot succeeded. Forgotten once one has
    /// served for as long as the longest backoff.
    fork_failures: u32,
    start_at: Option<Instant>,
    /// SIGUSR2 asked for a fresh one.
    recycle: bool,
}

struct Instance {
    child: Child,
    socket: PathBuf,
    started: Instant,
    batches: u64,
    memory_checked: Instant,
    /// Told already that its boot alone passes max-memory.
    too_big_warned: bool,
}

impl Preloaders {
    /// No preloaded handler.
    pub fn none() -> Preloaders {
        Preloaders {
            slots: Vec::new(),
            dir: PathBuf::new(),
            log_file: None,
            serial: 0,
            draining: false,
        }
    }

    /// The preloaded handlers of `queues`, none started yet. Sockets go in a new private
    /// directory under `runtime_dir`.
    pub fn new(
        queues: &[QueueConfig],
        runtime_dir: &Path,
        log_file: Option<PathBuf>,
    ) -> std::io::Result<Preloaders> {
        let mut slots: Vec<Slot> = Vec::new();
        for q in queues {
            for h in q.handler.iter().chain(q.classes.values()) {
                if h.preload.is_none() {
                    continue;
                }
                match slots.iter_mut().find(|s| s.handler == *h) {
                    Some(s) => s.keep_credentials |= q.pass_aws_credentials,
                    None => slots.push(Slot::new(h.clone(), q.pass_aws_credentials)),
                }
            }
        }
        let dir = runtime_dir.join(format!("chore-{}-preload", std::process::id()));
        if !slots.is_empty() {
            use std::os::unix::fs::DirBuilderExt;
            remove_stale_dirs(runtime_dir);
            std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        }
        Ok(Preloaders {
            slots,
            dir,
            log_file,
            serial: 0,
            draining: false,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The flag `h`'s queues' consumers wait on (None: `h` is not preloaded).
    pub fn ready_flag(&self, h: &Handler) -> Option<Arc<AtomicBool>> {
        let slot = self.slots.iter().find(|s| s.handler == *h)?;
        Some(slot.ready.clone())
    }

    /// Point a batch's preloaded handlers at their serving preloader, and count the batch.
    /// A handler is its slot's when it is the same in every key (as the slots were made):
    /// two queues may run one command with different recycling limits, each its own.
    pub fn assign<'a>(&mut self, handlers: impl Iterator<Item = &'a mut Handler>) {
        for h in handlers {
            if h.preload.is_none() {
                continue;
            }
            let slot = self.slots.iter_mut().find(|s| s.handler == *h);
            let socket = slot.and_then(|s| {
                let i = s.serving.as_mut()?;
                i.batches += 1;
                Some(i.socket.clone())
            });
            if let Some(p) = h.preload.as_mut() {
                p.socket = socket;
            }
        }
    }

    /// A batch started at `batch_started` for `h` could not be forked by its preloader
    /// (`why`): unless a newer preloader serves already, the serving one is retired and
    /// its queues receive nothing until a new one, started after the failure backoff, is
    /// ready. Once per failure: later batches find it retired.
    pub fn fork_failed(&mut self, h: &Handler, batch_started: Instant, why: &str, now: Instant) {
        let Some(slot) = self.slots.iter_mut().find(|s| s.handler == *h) else {
            return;
        };
        // Already retired (an earlier batch told), or a newer one serves.
        let Some(old) = slot.serving.take_if(|s| s.started <= batch_started) else {
            return;
        };
        slot.ready.store(false, Ordering::Release);
        signal(&old, Signal::SIGTERM);
        let wait = slot.fork_failed(now);
        tracing::error!(
            pid = old.child.id(),
            error = why,
            retry_in_secs = wait.as_secs_f64(),
            "the preloader could not fork a batch; replacing it (its queues receive nothing until a new one is ready)"
        );
        slot.retiring.push((old, now + STOP_GRACE));
    }

    /// SIGUSR2: replace every preloader (after a deploy), without dropping a batch.
    pub fn recycle_all(&mut self) {
        for s in &mut self.slots {
            s.recycle = true;
        }
    }

    /// Start, watch, replace and stop preloaders as their state asks. Returns when to look
    /// again.
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut wake = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for i in 0..self.slots.len() {
            self.watch_booting(i, now);
            self.watch_serving(i, now);
            let slot = &mut self.slots[i];
            let due = slot.start_at.is_some_and(|t| now >= t);
            if slot.booting.is_none() && due && !self.draining {
                slot.start_at = None;
                self.start(i, now);
            }
            let slot = &mut self.slots[i];
            retire(&mut slot.retiring, now);
            slot.ready.store(slot.serving.is_some(), Ordering::Release);
            if slot.booting.is_some() {
                wake(now + BOOT_POLL);
            }
            if let (Some(t), false) = (slot.start_at, self.draining) {
                wake(t);
            }
            if slot.serving.is_some() || !slot.retiring.is_empty() {
                wake(now + Duration::from_secs(1));
            }
        }
        next
    }

    /// A drain has begun: the running batches need the preloaders no more, so none is
    /// started or replaced from now on (a booting one is left to finish or fail).
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Start every preloader.
    pub fn start_all(&mut self, now: Instant) {
        for s in &mut self.slots {
            s.start_at = Some(now);
        }
        self.tick(now);
    }

    /// At exit: SIGTERM every preloader, SIGKILL what is left after the grace time.
    pub fn stop_all(&mut self) {
        let mut all: Vec<Instance> = Vec::new();
        for s in &mut self.slots {
            all.extend(s.serving.take());
            all.extend(s.booting.take());
            all.extend(s.retiring.drain(..).map(|(i, _)| i));
            s.ready.store(false, Ordering::Release);
        }
        for i in &all {
            signal(i, Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for mut i in all {
            while Instant::now() < deadline && matches!(i.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(i.child.try_wait(), Ok(None)) {
                signal(&i, Signal::SIGKILL);
                let _ = i.child.wait();
            }
            let _ = std::fs::remove_file(&i.socket);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }

    fn start(&mut self, i: usize, now: Instant) {
        self.serial += 1;
        let socket = self.dir.join(format!("p{}-{}.sock", i, self.serial));
        let slot = &mut self.slots[i];
        let h = &slot.handler;
        // What it prints becomes log events (`logging::capture`); without a pipe, raw lines.
        let pipe = Pipe::new().ok();
        let (out, err) = match pipe.as_ref().map(|p| (p.stdio(), p.stdio())) {
            Some((Ok(out), Ok(err))) => (out, err),
            _ => (
                crate::hooks::to_log(self.log_file.as_deref()),
                crate::hooks::to_log(self.log_file.as_deref()),
            ),
        };
        let mut cmd = crate::launch::command(h, "");
        cmd.env_remove("CHORE_QUEUE")
            .env("CHORE_PRELOAD_SOCKET", &socket)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group: a worker's deadline kill never reaches it, and its stop
            // reaches whatever it started at boot.
            .process_group(0);
        if !slot.keep_credentials {
            crate::launch::strip_credentials(&mut cmd);
        } else {
            crate::launch::pass_credentials(&mut cmd);
        }
        die_with_master(&mut cmd);
        let spawned = cmd.spawn();
        // The command's copies of the pipe's write end must close for its reader to end.
        drop(cmd);
        match spawned {
            Ok(child) => {
                tracing::info!(pid = child.id(), command = ?h.command, "preloader starting");
                if let Some(p) = pipe {
                    p.read_as(Source {
                        queue: None,
                        pid: child.id(),
                        ids: None,
                    });
                }
                slot.booting = Some(Instance {
                    child,
                    socket,
                    started: now,
                    batches: 0,
                    memory_checked: now,
                    too_big_warned: false,
                });
            }
            Err(e) => {
                let command = h.command.clone();
                let wait = slot.fail(now);
                tracing::error!(?command, error = %e, retry_in_secs = wait.as_secs_f64(), "cannot start the preloader");
            }
        }
    }

    fn watch_booting(&mut self, i: usize, now: Instant) {
        let slot = &mut self.slots[i];
        let Some(b) = slot.booting.as_mut() else {
            return;
        };
        let timeout = slot
            .handler
            .preload
            .as_ref()
            .map_or(Duration::from_secs(120), |p| p.boot_timeout);
        let pid = b.child.id();
        let failed = if let Ok(Some(status)) = b.child.try_wait() {
            Some(format!(
                "it exited before it was ready ({})",
                crate::launch::describe_exit(&status)
            ))
        } else if UnixStream::connect(&b.socket).is_ok() {
            None
        } else if now.duration_since(b.started) >= timeout {
            signal(b, Signal::SIGKILL);
            let _ = b.child.wait();
            Some(format!(
                "it was not ready within boot-timeout ({}s)",
                timeout.as_secs_f64()
            ))
        } else {
            return;
        };
        let b = slot.booting.take().expect("booting");
        match failed {
            Some(why) => {
                let _ = std::fs::remove_file(&b.socket);
                let wait = slot.fail(now);
                tracing::error!(pid, command = ?slot.handler.command, retry_in_secs = wait.as_secs_f64(), "preloader failed to boot: {why}");
            }
            None => {
                tracing::info!(
                    pid,
                    boot_secs = now.duration_since(b.started).as_secs_f64(),
                    "preloader ready"
                );
                slot.failures = 0;
                if let Some(old) = slot.serving.replace(b) {
                    signal(&old, Signal::SIGTERM);
                    slot.retiring.push((old, now + STOP_GRACE));
                }
            }
        }
    }

    fn watch_serving(&mut self, i: usize, now: Instant) {
        let slot = &mut self.slots[i];
        let Some(s) = slot.serving.as_mut() else {
            return;
        };
        if let Ok(Some(status)) = s.child.try_wait() {
            let s = slot.serving.take().expect("serving");
            let _ = std::fs::remove_file(&s.socket);
            let wait = slot.fail(now);
            tracing::error!(pid = s.child.id(), how = %crate::launch::describe_exit(&status), retry_in_secs = wait.as_secs_f64(), "preloader died; its queues receive nothing until a new one is ready");
            return;
        }
        if slot.fork_failures > 0 && now.duration_since(s.started) >= MAX_BACKOFF {
            slot.fork_failures = 0;
        }
        if slot.booting.is_some() {
            return;
        }
        let why = due_for_recycling(s, slot.handler.preload.as_ref(), slot.recycle, now);
        if let Some(why) = why {
            tracing::info!(
                pid = s.child.id(),
                batches = s.batches,
                "recycling the preloader: {why}"
            );
            slot.recycle = false;
            slot.start_at = Some(now);
        }
    }
}

/// A master that fails to start, or panics, leaves no preloader behind.
impl Drop for Preloaders {
    fn drop(&mut self) {
        if self
            .slots
            .iter()
            .any(|s| s.serving.is_some() || s.booting.is_some() || !s.retiring.is_empty())
        {
            self.stop_all();
        }
    }
}

impl Slot {
    fn new(handler: Handler, keep_credentials: bool) -> Slot {
        Slot {
            handler,
            keep_credentials,
            ready: Arc::new(AtomicBool::new(false)),
            serving: None,
            booting: None,
            retiring: Vec::new(),
            failures: 0,
            fork_failures: 0,
            start_at: None,
            recycle: false,
        }
    }

    /// One more failure: when to try again (1 s, doubling, at most a minute).
    fn fail(&mut self, now: Instant) -> Duration {
        self.failures += 1;
        self.start_after(self.failures, now)
    }

    /// One more preloader that could not fork: when to start the next (as `fail`).
    fn fork_failed(&mut self, now: Instant) -> Duration {
        self.fork_failures += 1;
        self.start_after(self.fork_failures, now)
    }

    fn start_after(&mut self, in_a_row: u32, now: Instant) -> Duration {
        let wait = Duration::from_secs(1 << in_a_row.min(7).saturating_sub(1)).min(MAX_BACKOFF);
        self.start_at = Some(now + wait);
        wait
    }
}

/// Why a serving preloader should be replaced now, if it should.
fn due_for_recycling(
    s: &mut Instance,
    p: Option<&crate::config::Preload>,
    asked: bool,
    now: Instant,
) -> Option<String> {
    if asked {
        return Some("SIGUSR2".into());
    }
    let p = p?;
    if let Some(max) = p.max_batches.filter(|&m| s.batches >= m) {
        return Some(format!("{max} batches (max-batches)"));
    }
    if let Some(max) = p.max_age.filter(|&m| now.duration_since(s.started) >= m) {
        return Some(format!("{}s old (max-age)", max.as_secs_f64()));
    }
    let max = p.max_memory?;
    if now.duration_since(s.memory_checked) < MEMORY_POLL {
        return None;
    }
    s.memory_checked = now;
    let rss = resident_bytes(s.child.id())?;
    if rss < max {
        return None;
    }
    if s.batches == 0 {
        // Its boot alone passes the limit: a new one would too, and be replaced every
        // few seconds for ever. It serves; the operator is told, once.
        if !s.too_big_warned {
            s.too_big_warned = true;
            tracing::warn!(
                pid = s.child.id(),
                rss,
                max_memory = max,
                "the preloader passes max-memory before serving any batch; not recycled for it (raise max-memory)"
            );
        }
        return None;
    }
    Some(format!("{rss} bytes resident, max-memory is {max}"))
}

/// A process's resident memory, from /proc.
fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the system.
    let page = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Reap retired preloaders; SIGKILL those past their grace time.
fn retire(retiring: &mut Vec<(Instance, Instant)>, now: Instant) {
    retiring.retain_mut(|(i, kill_at)| {
        if matches!(i.child.try_wait(), Ok(Some(_))) {
            let _ = std::fs::remove_file(&i.socket);
            return false;
        }
        if now >= *kill_at {
            signal(i, Signal::SIGKILL);
        }
        true
    });
}

/// Signal a preloader's whole group (it leads it).
fn signal(i: &Instance, sig: Signal) {
    let _ = killpg(Pid::from_raw(i.child.id() as i32), sig);
}

/// Remove the socket directories that masters killed outright left in `runtime_dir`
/// (`chore-<pid>-preload`, the pid gone, the directory ours): nothing else cleans them.
fn remove_stale_dirs(runtime_dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { nix::libc::geteuid() };
    for entry in std::fs::read_dir(runtime_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("chore-")?.strip_suffix("-preload"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if !ours || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        for socket in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            if socket.file_name().to_string_lossy().ends_with(".sock") {
                let _ = std::fs::remove_file(socket.path());
            }
        }
        if std::fs::remove_dir(&path).is_ok() {
            tracing::info!(dir = %path.display(), "removed the preloaders' socket directory of a master that is gone");
        }
    }
}

/// Have the preloader killed by the kernel when the master dies (an orphaned preloader
/// would hold the application's memory, and fork nothing, forever). Its batch children
/// are in their workers' groups, which die with the master too. Set up in the child
/// before `exec`, by the master's main thread, which lives as long as the master: the
/// kernel sends the signal when the thread that started the child ends.
fn die_with_master(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let master = std::process::id() as i32;
    // SAFETY: prctl, getppid and _exit are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL);
            // The master died before the signal was armed.
            if nix::libc::getppid() != master {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HandlerMode, Preload};

    fn handler() -> Handler {
        Handler {
            command: vec!["true".into()],
            mode: HandlerMode::Preload,
            env: Default::default(),
            dir: None,
            preload: Some(Preload {
                max_batches: Some(3),
                max_age: Some(Duration::from_secs(60)),
                max_memory: None,
                boot_timeout: Duration::from_secs(5),
                socket: None,
            }),
        }
    }

    #[test]
    fn failures_back_off_from_a_second_to_a_minute() {
        let mut slot = Slot::new(handler(), false);
        let now = Instant::now();
        let waits: Vec<u64> = (0..9).map(|_| slot.fail(now).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(slot.start_at, Some(now + Duration::from_secs(60)));
    }

    /// A preloader instance running `argv`, started at `t0`.
    fn instance(argv: &[&str], socket: &str, t0: Instant) -> Instance {
        let child = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .spawn()
            .unwrap();
        Instance {
            child,
            socket: PathBuf::from(socket),
            started: t0,
            batches: 0,
            memory_checked: t0,
            too_big_warned: false,
        }
    }

    #[test]
    fn a_preloader_is_recycled_by_batches_age_or_request() {
        let t0 = Instant::now();
        let mut i = instance(&["true"], "", t0);
        let p = handler().preload;
        assert_eq!(due_for_recycling(&mut i, p.as_ref(), false, t0), None);
        assert_eq!(
            due_for_recycling(&mut i, p.as_ref(), true, t0).as_deref(),
            Some("SIGUSR2")
        );
        i.batches = 3;
        assert!(
            due_for_recycling(&mut i, p.as_ref(), false, t0)
                .unwrap()
                .contains("max-batches")
        );
        i.batches = 0;
        let later = t0 + Duration::from_secs(60);
        assert!(
            due_for_recycling(&mut i, p.as_ref(), false, later)
                .unwrap()
                .contains("max-age")
        );
        let _ = i.child.wait();
    }

    #[test]
    fn a_preloader_past_max_memory_is_recycled_only_once_it_has_served() {
        let t0 = Instant::now();
        let mut i = instance(&["sleep", "5"], "", t0);
        let mut p = handler().preload.unwrap();
        (p.max_batches, p.max_age, p.max_memory) = (None, None, Some(1));
        // Its boot alone passes the limit: not replaced (a new one would be as big).
        let later = t0 + MEMORY_POLL;
        assert_eq!(due_for_recycling(&mut i, Some(&p), false, later), None);
        assert!(i.too_big_warned);
        i.batches = 1;
        let why = due_for_recycling(&mut i, Some(&p), false, later + MEMORY_POLL).unwrap();
        assert!(why.contains("max-memory is 1"), "{why}");
        let _ = i.child.kill();
        let _ = i.child.wait();
    }

    #[test]
    fn a_batch_gets_the_serving_preloaders_socket_and_is_counted() {
        let mut pre = Preloaders::none();
        let mut slot = Slot::new(handler(), false);
        slot.serving = Some(instance(&["true"], "/run/p.sock", Instant::now()));
        pre.slots.push(slot);
        let (mut a, mut other, mut limits) = (handler(), handler(), handler());
        other.command = vec!["other".into()];
        // The same command with other recycling limits is another slot's, not this one's.
        limits.preload.as_mut().unwrap().max_batches = Some(1000);
        pre.assign([&mut a, &mut other, &mut limits].into_iter());
        assert_eq!(
            a.preload.unwrap().socket,
            Some(PathBuf::from("/run/p.sock"))
        );
        assert_eq!(other.preload.unwrap().socket, None);
        assert_eq!(limits.preload.unwrap().socket, None);
        let s = pre.slots[0].serving.as_mut().unwrap();
        assert_eq!(s.batches, 1);
        let _ = s.child.wait();
    }
}
