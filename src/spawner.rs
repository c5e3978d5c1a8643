//! The spawner, as the master sees it: a small single-threaded process that forks workers
//! on request, so a batch no longer pays an `exec` of the whole binary
//! (docs/decisions/0024-workers-are-forked-by-a-spawner.md).
//!
//! `Spawner::start` runs this binary once, as `chore work` titled
//! `chore-spawner-<version>:Started:<time>` (`crate::title`), in a process group of its
//! own, without AWS credentials, with one end of a `SOCK_SEQPACKET` socket pair as its
//! stdin. Each `Spawner::fork_worker` sends one request, the start time for the worker's title and, as
//! `SCM_RIGHTS`, the worker's stdin, stdout and stderr; the worker itself answers with its
//! pid once it leads its own process group (or the spawner with `-errno`). The worker is
//! forked with `CLONE_PARENT`, so it is the master's child: the master reaps it, and its
//! parent-death signal follows the master, as a re-executed worker's does. The serving side
//! is `worker::spawner`.

use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, recv, sendmsg, setsockopt,
    socketpair, sockopt,
};
use nix::sys::time::TimeVal;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// The bytes of a request: the worker's start time (Unix seconds, little-endian).
pub const REQUEST_LEN: usize = 8;

/// The file descriptors a request carries: the worker's stdin, stdout and stderr.
pub const REQUEST_FDS: usize = 3;

/// How long the master waits for a worker's pid before it gives the spawner up.
const REPLY_TIMEOUT: i64 = 10;

/// Set, with `LD_BIND_NOW=1`, in the spawner's environment when the master's own has no
/// `LD_BIND_NOW`; the spawner then removes both before it forks anything, so neither
/// reaches a worker's handlers.
pub const BIND_NOW_MARK: &str = "CHORE_SPAWNER_BIND_NOW";

/// The master's end of the spawner.
pub struct Spawner {
    sock: OwnedFd,
    child: Child,
}

impl Spawner {
    /// Start the spawner, without the environment variables `strip_env` names.
    pub fn start(strip_env: &[String]) -> io::Result<Spawner> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // A worker that dies before it answers must not wedge the master's loop.
        setsockopt(
            &ours,
            sockopt::ReceiveTimeout,
            &TimeVal::new(REPLY_TIMEOUT, 0),
        )?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(crate::title::spawner(crate::title::now()))
            .arg("work")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .env("CHORE_MASTER_PID", std::process::id().to_string());
        // The dynamic linker binds the libraries' symbols once, in the spawner, instead of
        // lazily in every worker it forks: about 12 fewer page faults a worker here (the
        // symbol lookups, and the copies of the pages their addresses are written to).
        if std::env::var_os("LD_BIND_NOW").is_none() {
            cmd.env("LD_BIND_NOW", "1").env(BIND_NOW_MARK, "1");
        } else {
            cmd.env_remove(BIND_NOW_MARK);
        }
        for k in strip_env {
            cmd.env_remove(k);
        }
        let child = cmd.spawn()?;
        Ok(Spawner { sock: ours, child })
    }

    /// Fork a worker whose stdin, stdout and stderr are the given descriptors: its pid.
    pub fn fork_worker(
        &mut self,
        stdin: &impl AsFd,
        stdout: &impl AsFd,
        stderr: &impl AsFd,
        started_unix: u64,
    ) -> io::Result<u32> {
        let fds = [
            stdin.as_fd().as_raw_fd(),
            stdout.as_fd().as_raw_fd(),
            stderr.as_fd().as_raw_fd(),
        ];
        let request = started_unix.to_le_bytes();
        let iov = [io::IoSlice::new(&request)];
        // A signal the master handles (SIGUSR1 from logrotate, SIGHUP) may land in either
        // call: a socket with a receive timeout is never restarted by the kernel, so an
        // interrupted call is made again here, or the spawner would be given up for it.
        // A sequenced packet is sent whole or not at all, so sending again cannot double it.
        retry_interrupted(|| {
            sendmsg::<()>(
                self.sock.as_raw_fd(),
                &iov,
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
        })?;
        let mut reply = [0u8; 4];
        let n = retry_interrupted(|| recv(self.sock.as_raw_fd(), &mut reply, MsgFlags::empty()))?;
        if n != reply.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the spawner has gone",
            ));
        }
        match i32::from_le_bytes(reply) {
            pid if pid > 0 => Ok(pid as u32),
            errno => Err(io::Error::from_raw_os_error(-errno)),
        }
    }

    /// The spawner's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `call`, made again for as long as a signal interrupts it.
fn retry_interrupted<T>(mut call: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match call() {
            Err(nix::errno::Errno::EINTR) => continue,
            done => return done,
        }
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // The spawner ends when its socket closes; kill it all the same, in case it is
        // stuck, and reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
