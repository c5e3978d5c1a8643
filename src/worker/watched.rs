//! A batch process's output as the worker reads it: its stdout (results) as a stream that
//! ends when the process is done, its stderr logged on the way, on one thread.
//!
//! The batch process is a handler the worker started, or a child a preloader forked for
//! the batch (not the worker's child: its exit is seen through a pidfd, where the kernel
//! gives one). The stream ends (reads as end of file) once the process has exited and every
//! result is in, or `AFTER_EXIT` after it exited, whoever still holds the pipe open; or
//! when the pipe closes. Its stderr is polled beside its stdout (`capture::Inline`), so a
//! batch costs no reader thread. Before each wait, the reports gathered so far go to the
//! master (`reports::flush`).

use super::reports;
use crate::logging::capture::Inline;
use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Child;
use std::time::{Duration, Instant};

/// How long the output of a batch process that has exited is still read for the results
/// it did not give, should a child it left behind hold its stdout open.
const AFTER_EXIT: Duration = Duration::from_secs(2);

/// How often the process's exit is looked for.
const EXIT_CHECK: Duration = Duration::from_millis(100);

/// How the batch process's exit is seen.
pub enum Exit<'a> {
    /// A child of ours: `waitpid`.
    Child(&'a mut Child),
    /// Someone else's child (a preloader's): its pidfd reads as ready once it has ended.
    Pidfd(OwnedFd),
    /// Already gone when it was looked for (a preloader may reap its child before the
    /// worker has its pid open).
    Gone,
    /// Not at all (a kernel without pidfds): only the pipe closing ends the batch.
    Unseen,
}

impl Exit<'_> {
    /// A pidfd for process `pid`, which is not our child, when the kernel gives one.
    pub fn of_pid(pid: u32) -> Exit<'static> {
        match crate::logging::capture::pidfd(pid) {
            Ok(fd) => Exit::Pidfd(fd),
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => Exit::Gone,
            Err(_) => Exit::Unseen,
        }
    }

    fn has_ended(&mut self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        match self {
            Exit::Child(c) => matches!(c.try_wait(), Ok(Some(_))),
            Exit::Pidfd(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
            }
            Exit::Gone => true,
            Exit::Unseen => false,
        }
    }
}

pub struct Watched<'a> {
    out: File,
    exit: Exit<'a>,
    /// Its stderr, when it has a pipe of its own.
    err: Option<Inline>,
    /// Set by the reader once every message has its result.
    all_in: &'a Cell<bool>,
    exited_at: Option<Instant>,
    /// When the exit was last looked for: also while output keeps coming, so that a
    /// process left behind writing without end cannot hide it.
    last_check: Instant,
}

impl Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        loop {
            if self.exited_at.is_none()
                && (self.all_in.get() || self.last_check.elapsed() >= EXIT_CHECK)
            {
                self.check_exit();
            }
            if let Some(t) = self.exited_at
                && (self.all_in.get() || t.elapsed() >= AFTER_EXIT)
            {
                return Ok(0);
            }
            reports::flush();
            let err_fd = self.err.as_ref().and_then(|e| e.fd());
            let mut fds = vec![PollFd::new(self.out.as_fd(), PollFlags::POLLIN)];
            fds.extend(err_fd.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
            let timeout = PollTimeout::try_from(EXIT_CHECK).expect("a short timeout");
            match poll(&mut fds, timeout) {
                Ok(n) if n > 0 => {
                    let out_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
                    let err_ready = fds
                        .get(1)
                        .and_then(|f| f.revents())
                        .is_some_and(|r| !r.is_empty());
                    drop(fds);
                    if err_ready && let Some(err) = self.err.as_mut() {
                        err.drain();
                    }
                    if out_ready {
                        return self.out.read(buf);
                    }
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => self.check_exit(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl<'a> Watched<'a> {
    pub fn new(
        out: File,
        exit: Exit<'a>,
        err: Option<Inline>,
        all_in: &'a Cell<bool>,
    ) -> Watched<'a> {
        Watched {
            out,
            exit,
            err,
            all_in,
            exited_at: None,
            last_check: Instant::now(),
        }
    }

    fn check_exit(&mut self) {
        self.last_check = Instant::now();
        if self.exited_at.is_none() && self.exit.has_ended() {
            self.exited_at = Some(Instant::now());
        }
    }

    /// The process is done: log the rest of its stderr.
    pub fn finish(self) {
        if let Some(err) = self.err {
            err.finish();
        }
    }
}
