//! `chore systemd-unit -c Chorefile`: the systemd unit that runs the master for a Chorefile.
//!
//! The unit is derived, not copied, because three of its lines depend on the
//! configuration: the stop timeout must outlast `shutdown-timeout` (or systemd kills the
//! workers mid-drain), and the read-only file system must leave the queue root and the log
//! file's directory writable. The sandbox is the one a job runner can bear by default
//! (docs/decisions/0032-a-generated-hardened-unit.md); flags loosen it for handlers that
//! need more. `spec` reads the configuration into a `Spec`; `render` (pure) writes it, every
//! line commented. packaging/chore.service is this output for packaging/Chorefile.

use crate::config::cli::{Flags, UnitArgs};
use crate::config::{self, Backend, Config};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Seconds systemd waits past `shutdown-timeout` before it SIGKILLs the unit: the master
/// kills the last workers itself at `shutdown-timeout`, then settles their messages and
/// exits, which takes a moment on a loaded host or a slow SQS endpoint.
const STOP_MARGIN_SECS: u64 = 30;

/// What the unit says, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub binary: PathBuf,
    pub chorefiles: Vec<PathBuf>,
    pub working_directory: PathBuf,
    pub user: String,
    pub group: String,
    /// The queue root (when a filesystem queue is declared), the log file's directory,
    /// and every `--allow-write`, absolute.
    pub writable: Vec<PathBuf>,
    pub stop_timeout_secs: u64,
    pub hardening: bool,
    pub allow_home: bool,
    pub deny_write_execute: bool,
}

/// Print the unit; returns the exit status (2 for a bad configuration or usage).
pub fn run(args: UnitArgs) -> i32 {
    let flags = Flags {
        config_file: args.config_file.clone(),
        ..Flags::default()
    };
    let Some(config) = config::load_or_say(flags) else {
        return 2;
    };
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/chore"));
    match spec(&config, &args, &here, &exe).and_then(|s| render(&s)) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("chore systemd-unit: {e}");
            2
        }
    }
}

/// The unit for `config`, read with `args` in directory `here` by binary `exe`.
pub fn spec(config: &Config, args: &UnitArgs, here: &Path, exe: &Path) -> Result<Spec, String> {
    let chorefiles: Vec<PathBuf> = match (&args.chorefile_at, args.config_file.as_slice()) {
        (Some(at), [_]) => vec![at.clone()],
        (Some(_), _) => return Err("--chorefile-at takes a single -c".into()),
        (None, files) => files.iter().map(|f| here.join(f)).collect(),
    };
    if let Some(f) = chorefiles.iter().find(|f| f.is_relative()) {
        return Err(format!(
            "--chorefile-at {}: give an absolute path",
            f.display()
        ));
    }
    let working_directory = match &args.working_directory {
        Some(d) => here.join(d),
        None => chorefiles[0]
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf(),
    };
    let mut writable = Vec::new();
    if config
        .declared
        .iter()
        .any(|q| q.backend == Backend::Filesystem)
    {
        writable.push(working_directory.join(&config.fs_queue_root));
    }
    if let Some(log) = &config.log_file {
        // The directory, not the file: logrotate renames the file and the master reopens it
        // by name, which creates a new file there.
        let log = working_directory.join(log);
        writable.push(log.parent().unwrap_or(Path::new("/")).to_path_buf());
    }
    if let Some(socket) = &config.control_socket {
        // A socket set in so many words must be made, or the master does not start; the
        // default one is in the runtime directory or the queue root, writable already.
        let socket = working_directory.join(socket);
        writable.push(socket.parent().unwrap_or(Path::new("/")).to_path_buf());
    }
    writable.extend(args.allow_write.iter().map(|p| here.join(p)));
    let mut seen = std::collections::HashSet::new();
    writable.retain(|p| seen.insert(p.clone()));
    Ok(Spec {
        binary: args
            .binary
            .as_ref()
            .map_or_else(|| exe.to_path_buf(), |b| here.join(b)),
        chorefiles,
        working_directory,
        user: args.user.clone(),
        group: args.group.clone(),
        writable,
        stop_timeout_secs: config.shutdown_timeout.as_secs_f64().ceil() as u64 + STOP_MARGIN_SECS,
        hardening: !args.no_hardening,
        allow_home: args.allow_home,
        deny_write_execute: args.deny_write_execute,
    })
}

/// A path as a unit file holds it: `%` is a specifier to systemd, and a unit line cannot
/// hold a control character or non-UTF-8 bytes.
fn escaped(path: &Path) -> Result<String, String> {
    let s = path.to_str().ok_or_else(|| {
        format!(
            "{}: not UTF-8, which a unit file cannot hold",
            path.display()
        )
    })?;
    if s.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{s:?}: a control character, which a unit file cannot hold"
        ));
    }
    Ok(s.replace('%', "%%"))
}

const RELOAD: &str = "\
# `systemctl reload chore`: SIGHUP re-reads the Chorefile and applies what can change
# without a restart (queues, handlers, concurrency, batching, log level). The log file is
# reopened on SIGUSR1: `systemctl kill --kill-whom=main --signal=USR1 chore` (logrotate).
ExecReload=/bin/kill -HUP $MAINPID";

/// A path as one word of a list (ExecStart=, ReadWritePaths=): quoted when a space or a
/// quote would split it; in a command line, `$` is a variable to systemd as well.
fn word(path: &Path, command: bool) -> Result<String, String> {
    let mut s = escaped(path)?;
    if command {
        s = s.replace('$', "$$");
    }
    Ok(if s.contains([' ', '"', '\'', '\\']) {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    })
}

/// A user or group name as systemd takes it (it refuses others at start, unhelpfully).
fn name(what: &str, s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.starts_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("--{what} {s:?}: not a valid user or group name"))
    }
}

/// The unit file's text.
pub fn render(spec: &Spec) -> Result<String, String> {
    let files = spec
        .chorefiles
        .iter()
        .map(|f| word(f, true).map(|w| format!(" -c {w}")))
        .collect::<Result<String, String>>()?;
    let named: Vec<String> = spec
        .chorefiles
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let (user, group) = (name("user", &spec.user)?, name("group", &spec.group)?);
    let mut u = String::new();
    let mut w = |s: &str| {
        u.push_str(s);
        u.push('\n');
    };
    w(&format!(
        "# systemd unit for the chore master of {}, written by `chore systemd-unit`.\n\
         # After changing the Chorefile's fs-queue-root, log-file or shutdown-timeout, write it\n\
         # again (to /etc/systemd/system/chore.service, which overrides a packaged one), then\n\
         # `systemctl daemon-reload`. Loosen it in a drop-in (`systemctl edit chore`) or with\n\
         # the options of `chore systemd-unit --help`.",
        named.join(", ")
    ));
    w(HEADER);
    w(&format!("User={user}\nGroup={group}"));
    w(WORKDIR);
    w(&format!(
        "WorkingDirectory={}",
        escaped(&spec.working_directory)?
    ));
    w(&format!("ExecStart={}{files}", word(&spec.binary, true)?));
    w(RELOAD);
    w(STOPPING);
    w(&format!("TimeoutStopSec={}", spec.stop_timeout_secs));
    w(RESTART);
    if !spec.hardening {
        w("# Sandbox: none (written with --no-hardening).");
    } else {
        w(SANDBOX_FS);
        if spec.writable.is_empty() {
            w("# (None here: no filesystem queue, no log file.)");
        } else {
            let mut rw = String::from("ReadWritePaths=");
            for p in &spec.writable {
                let _ = write!(rw, " {}", word(p, false)?);
            }
            w(&rw.replacen("= ", "=", 1));
        }
        w(if spec.allow_home {
            HOME_READ_ONLY
        } else {
            HOME_HIDDEN
        });
        w(SANDBOX_REST);
        w(if spec.deny_write_execute {
            WX_DENIED
        } else {
            WX_ALLOWED
        });
    }
    w(INSTALL);
    Ok(u)
}

const HEADER: &str = "#
# Useful commands:
#   systemctl stop chore                  drain (SIGTERM), then stop
#   systemctl reload chore                re-read the Chorefile (SIGHUP)
#   systemctl kill -s USR1 --kill-whom=main chore   reopen the log file
#   systemctl kill -s TSTP --kill-whom=main chore   quiet: stop taking new messages
#   systemctl kill -s CONT --kill-whom=main chore   resume
#   systemctl kill -s TTIN --kill-whom=main chore   log a status dump
#   journalctl -u chore -f                the log, when no log-file is set
# (--kill-whom=main matters: signals are for the master only. Without it, systemctl kill
# signals every process of the unit, and TSTP would suspend the workers and handlers.)

[Unit]
# What `systemctl status` shows, and where `systemctl help chore` looks.
Description=chore job processor
Documentation=man:chore(1)
# Start once the network is up: SQS, memcached and HTTP handlers are reached through it.
After=network-online.target
Wants=network-online.target
# Restart=on-failure below gives up after 5 failed starts within 5 minutes: a crash loop
# then shows as failed in `systemctl status` instead of spinning forever.
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
# The master tells systemd when its queues are open (READY=1), so `systemctl start`
# returns once it can work, and fails when it cannot start. Only the master's own
# notifications count, not a handler's.
Type=notify
NotifyAccess=main
# With a watchdog, systemd restarts a master that stops answering; uncomment to use one.
#WatchdogSec=60

# The master's user and group; handlers run as them too.";

const WORKDIR: &str = "
# Relative paths of the Chorefile (fs-queue-root, log-file) resolve against this.";

const STOPPING: &str = "
# Optional variables for the handlers (they inherit the master's environment), read by
# systemd as root before it drops privileges. The leading \"-\": no error if it is missing.
EnvironmentFile=-/etc/default/chore

# The control socket's directory, /run/chore, owned by User= and removed at stop.
RuntimeDirectory=chore
RuntimeDirectoryMode=0750

# Stopping: SIGTERM goes to the master only (KillMode=mixed). The master stops taking
# messages, gives back what it has not started, and lets running workers finish for up to
# its shutdown-timeout before it kills them itself. Only if the master has not exited when
# TimeoutStopSec runs out does systemd send SIGKILL, and then to every process of the unit.
KillMode=mixed
KillSignal=SIGTERM
# The Chorefile's shutdown-timeout plus 30 s to settle and exit.";

const RESTART: &str = "
# Exit 0 means chore was asked to stop. Anything else (a crash, death by a signal) gets a
# restart. Exit status 2 is a configuration mistake, which a restart does not fix.
Restart=on-failure
RestartPreventExitStatus=2
RestartSec=5

# Files the master and handlers create are not readable by other users.
UMask=0027";

const SANDBOX_FS: &str = "
# --- Sandbox: what a job runner can bear by default. Handlers that need more: see
# `chore systemd-unit --help` (--allow-write, --allow-home, --no-hardening) or a drop-in.
# The whole file system is read-only...
ProtectSystem=strict
# ...but for the queue root, the log file's directory and --allow-write paths.";

const HOME_HIDDEN: &str =
    "# /home, /root and /run/user are hidden (--allow-home makes them readable).
ProtectHome=yes";

const HOME_READ_ONLY: &str =
    "# /home, /root and /run/user are read-only (written with --allow-home).
ProtectHome=read-only";

const SANDBOX_REST: &str = "# A /tmp and /var/tmp of the unit's own, emptied at stop.
PrivateTmp=yes
# No physical devices; /dev/null, /dev/zero, /dev/urandom and the like remain.
PrivateDevices=yes
# Handlers cannot gain privileges (setuid programs such as sudo do not elevate).
NoNewPrivileges=yes
# No capabilities at all, neither for the master nor for anything it starts.
CapabilityBoundingSet=
AmbientCapabilities=
# No setuid/setgid files can be created.
RestrictSUIDSGID=yes
# Kernel settings, modules, log, control groups, clock and host name are out of reach.
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# Other users' processes are invisible in /proc.
ProtectProc=invisible
# Sockets: local, IPv4 and IPv6 only (SQS, memcached, HTTP handlers, control socket).
# A handler that lists network interfaces (ip, getifaddrs) needs AF_NETLINK: a drop-in.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
# No new namespaces, real-time scheduling or personality changes.
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
# System V IPC objects of the user are removed at stop.
RemoveIPC=yes
# Only the system calls of ordinary services, for this architecture; others fail EPERM
# rather than killing the handler.
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
SystemCallArchitectures=native";

const WX_ALLOWED: &str =
    "# Writable-and-executable memory stays allowed: JIT runtimes (node, Ruby YJIT, the JVM,
# PyPy) need it. --deny-write-execute forbids it, for handlers that need none.
#MemoryDenyWriteExecute=yes";

const WX_DENIED: &str =
    "# No memory both writable and executable (written with --deny-write-execute): JIT
# runtimes (node, Ruby YJIT, the JVM, PyPy) fail under it.
MemoryDenyWriteExecute=yes";

const INSTALL: &str = "
[Install]
# `systemctl enable chore` starts it at boot.
WantedBy=multi-user.target";

#[cfg(test)]
mod tests;
