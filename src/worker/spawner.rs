//! The spawner's serving side: a single-threaded process that forks one worker per request
//! (docs/decisions/0024-workers-are-forked-by-a-spawner.md; the master's side and the wire
//! format are `crate::spawner`).
//!
//! It is this binary, exec'd once by the master with the socket as its stdin and no AWS
//! credentials in its environment. It never starts a thread, so a `fork` of it is as sound
//! as an `exec`: the child may allocate, lock and log. Each child is made with
//! `CLONE_PARENT` (the master's child, not the spawner's), leads a new process group, sends
//! its pid back, takes the request's descriptors as its stdin, stdout and stderr, writes
//! its worker title over the spawner's argument area (so `/proc/<pid>/cmdline` reads
//! `chore-worker-<version>:Started:<time>`, `work`), and runs the batch as a
//! re-executed worker would.

use crate::spawner::{BIND_NOW_MARK, REQUEST_FDS, REQUEST_LEN};
use nix::libc;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use std::io::{self, IoSliceMut};
use std::os::fd::RawFd;

/// The spawner's socket: its stdin.
const SOCK: RawFd = 0;

/// Serve fork requests until the master closes its end. Returns the exit status.
pub fn serve() -> i32 {
    // Die with the master (its socket closing would end us too, but a stuck master might
    // not close it).
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let master = std::env::var("CHORE_MASTER_PID")
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    if master != Some(nix::unistd::getppid().as_raw()) {
        return 1;
    }
    if std::env::var_os(BIND_NOW_MARK).is_some() {
        // SAFETY: this process has one thread, so nothing reads the environment meanwhile.
        // The linker has done its binding; the handlers get the master's environment.
        unsafe {
            std::env::remove_var("LD_BIND_NOW");
            std::env::remove_var(BIND_NOW_MARK);
        }
    }
    let _ = nix::sys::prctl::set_name(c"chore-spawner");
    // Read the time zone now, once: workers inherit it for their titles' local time.
    let _ = crate::title::ruby_time(crate::title::now());
    let area = argument_area();
    loop {
        let mut request = [0u8; REQUEST_LEN];
        let mut space = nix::cmsg_space!([RawFd; REQUEST_FDS]);
        let mut iov = [IoSliceMut::new(&mut request)];
        let (bytes, fds) =
            match recvmsg::<()>(SOCK, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(msg) => {
                    let fds: Vec<RawFd> = msg
                        .cmsgs()
                        .into_iter()
                        .flatten()
                        .flat_map(|c| match c {
                            ControlMessageOwned::ScmRights(fds) => fds,
                            _ => Vec::new(),
                        })
                        .collect();
                    (msg.bytes, fds)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 1,
            };
        if bytes == 0 {
            // The master has gone.
            return 0;
        }
        if bytes != REQUEST_LEN || fds.len() != REQUEST_FDS {
            close_all(&fds);
            reply(-libc::EINVAL);
            continue;
        }
        let started = u64::from_le_bytes(request);
        // SAFETY: a raw clone without CLONE_VM is a fork; this process has one thread and
        // holds no lock here, so the child inherits a consistent copy. CLONE_PARENT makes
        // the master the child's parent (it reaps it; the parent-death signal follows it).
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        match pid {
            0 => {
                let code = child(&fds, started, area);
                let _ = std::io::Write::flush(&mut std::io::stdout());
                // SAFETY: _exit ends this process at once. It skips the exit handlers the
                // spawner's libraries registered at its start (aws-lc frees its random
                // generator: about a twentieth of a worker's time): a worker has nothing for
                // them to do, and its reports are flushed just above.
                unsafe { libc::_exit(code) }
            }
            -1 => {
                close_all(&fds);
                reply(
                    -io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EAGAIN),
                );
            }
            // The child answers for itself, once it leads its process group.
            _ => close_all(&fds),
        }
    }
}

/// The forked worker: set up as `master::process` would start one, then run the batch.
fn child(fds: &[RawFd], started: u64, area: Option<(usize, usize)>) -> i32 {
    super::born_in_group(nix::unistd::getpgrp().as_raw());
    // Its own group before the master learns its pid, so a deadline's killpg reaches it.
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    reply(std::process::id() as i32);
    // SAFETY: dup2 onto the standard descriptors of descriptors we were sent and own; the
    // socket (fd 0) closes as stdin replaces it.
    unsafe {
        for (i, &fd) in fds.iter().enumerate() {
            libc::dup2(fd, i as RawFd);
        }
    }
    close_all(fds);
    if let Some(area) = area {
        retitle(area, &crate::title::worker(started));
    }
    super::run()
}

fn reply(value: i32) {
    // SAFETY: a send on our own socket from a buffer we own.
    unsafe {
        libc::send(
            SOCK,
            value.to_le_bytes().as_ptr().cast(),
            4,
            libc::MSG_NOSIGNAL,
        );
    }
}

fn close_all(fds: &[RawFd]) {
    for &fd in fds {
        if fd > 2 {
            // SAFETY: descriptors received for this request, closed once.
            unsafe {
                libc::close(fd);
            }
        }
    }
}

/// Where the kernel reads `/proc/<pid>/cmdline` from: [arg_start, arg_end) of this process
/// (fields 48 and 49 of `/proc/self/stat`).
fn argument_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(48 - 3);
    let start = fields.next()?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    (start < end).then_some((start, end))
}

/// Write `title`, then `work`, over the argument area, NUL-padded.
fn retitle((start, end): (usize, usize), title: &str) {
    let len = end - start;
    let mut text = Vec::with_capacity(len);
    text.extend_from_slice(title.as_bytes());
    text.push(0);
    text.extend_from_slice(b"work\0");
    // The last byte stays NUL: the kernel then reads the area as plain arguments.
    text.resize(len, 0);
    text[len - 1] = 0;
    // SAFETY: [start, end) is this process's own argument area (the kernel says so), which
    // is writable stack memory; nothing in this process reads its arguments any more.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), start as *mut u8, len);
    }
}
