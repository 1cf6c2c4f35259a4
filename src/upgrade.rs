//! Live upgrade: `kill -USR2 <pid>` starts a new sluice process (the same binary, the same
//! arguments) and hands it the listening sockets, so no connection attempt is refused and none waits
//! in a backlog that nobody accepts from. The old process waits until the new one says it is ready,
//! then stops accepting, finishes what is in flight and exits; the pid file then names the new one.
//!
//! The sockets travel as inherited descriptors: the old process keeps duplicates of its listeners,
//! clears close-on-exec on them in the forked child, and names them in `SLUICE_UPGRADE_FDS`
//! (`proxy=3,4;admin=5`). The new process reports readiness by writing to a pipe named in
//! `SLUICE_READY_FD`. Both ends share the same listening sockets, so connections queued during the
//! overlap are accepted by whichever process takes them.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use crate::listeners::{set_cloexec, Listeners, ENV_FDS};

pub const ENV_READY_FD: &str = "SLUICE_READY_FD";
/// How long the old process waits for the new one to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the successor with `handover`'s sockets and waits until it reports ready. On error the
/// successor (if any) is killed and this process goes on serving.
pub fn spawn_successor(handover: &Listeners) -> Result<Child, String> {
    let mut pipe: [RawFd; 2] = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!(
            "cannot create the readiness pipe: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: pipe2 just created both descriptors; we own them.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the sluice binary: {e}"))?;
    let mut inherit = handover.fds();
    inherit.push(write_end.as_raw_fd());
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(ENV_FDS, handover.describe())
        .env(ENV_READY_FD, write_end.as_raw_fd().to_string());
    // SAFETY: the closure only calls fcntl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &inherit {
                set_cloexec(fd, false);
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the new process: {e}"))?;
    drop(write_end);
    match wait_ready(read_end, READY_TIMEOUT) {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

fn wait_ready(read_end: OwnedFd, timeout: Duration) -> Result<(), String> {
    let mut pfd = libc::pollfd {
        fd: read_end.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    if n <= 0 {
        return Err(format!(
            "the new process was not ready within {} s",
            timeout.as_secs()
        ));
    }
    let mut file = std::fs::File::from(read_end);
    let mut word = [0u8; 5];
    match file.read(&mut word) {
        Ok(5) if &word == b"ready" => Ok(()),
        _ => Err("the new process exited before it was ready (see its log)".into()),
    }
}

/// Tells the predecessor (if this process is a successor) and systemd (if it supervises this
/// process) that it serves now.
pub fn notify_ready() {
    notify_systemd();
    let Some(fd) = std::env::var(ENV_READY_FD)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return;
    };
    std::env::remove_var(ENV_READY_FD);
    if fd < 3 {
        return;
    }
    // SAFETY: the predecessor passed us the write end of its readiness pipe to own.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let _ = file.write_all(b"ready");
}

/// `READY=1` and `MAINPID=` to systemd's notification socket (`sd_notify(3)`'s protocol: one
/// datagram to the path in `NOTIFY_SOCKET`, `@` for the abstract namespace). A live upgrade's
/// successor inherits the variable, so it names itself the service's main process before its
/// predecessor exits (the unit needs `NotifyAccess=all`). Without systemd this does nothing.
fn notify_systemd() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("READY=1\nMAINPID={}\n", std::process::id());
    let sent = (|| -> io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(message.as_bytes(), &addr)?;
            }
            None => {
                sock.send_to(message.as_bytes(), Path::new(&path))?;
            }
        }
        Ok(())
    })();
    if let Err(e) = sent {
        log::warn!("cannot tell systemd that sluice is ready: {e}");
    }
}

/// Writes `pid` to `path` atomically (a reader never sees a half-written file).
pub fn write_pid_file(path: &Path, pid: u32) -> io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path)
}
