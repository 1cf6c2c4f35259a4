//! sluice as a user runs it: the binary started with flags, on ephemeral ports, ready once it has
//! printed the line that names them; what it logs is collected by a thread as it goes (so nothing
//! it writes can block it, and a test can wait for a line); killed by its PID when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::{api_call, wait_until, IO_TIMEOUT};

pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
/// No flags beyond the ones a start adds.
pub const NO_ARGS: &[&str] = &[];

/// Two workers and no health checks: what most tests want.
const DEFAULTS: [&str; 4] = ["--workers", "2", "--health-interval", "0"];
/// A listener and an admin API on ports the kernel picks.
const EPHEMERAL: [&str; 4] = ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"];

pub struct SluiceProc {
    child: Child,
    pub proxy: SocketAddr,
    /// Port 0 when the admin API is off.
    pub admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl SluiceProc {
    /// Two workers, no health checks, ephemeral listener and admin API, then `args`.
    pub fn start<S: AsRef<str>>(args: &[S]) -> SluiceProc {
        SluiceProc::start_exactly(&with(&[&DEFAULTS, &EPHEMERAL], args))
    }

    /// Only the ephemeral listener and admin API, then `args`.
    pub fn start_bare<S: AsRef<str>>(args: &[S]) -> SluiceProc {
        SluiceProc::start_exactly(&with(&[&EPHEMERAL], args))
    }

    /// Two workers and no health checks, then `args`, which say where to listen.
    pub fn start_listening_as<S: AsRef<str>>(args: &[S]) -> SluiceProc {
        SluiceProc::start_exactly(&with(&[&DEFAULTS], args))
    }

    /// `args` and nothing else.
    pub fn start_exactly<S: AsRef<str>>(args: &[S]) -> SluiceProc {
        let mut child = Command::new(SLUICE)
            .args(args.iter().map(AsRef::as_ref))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        // Owned from here on: a failed start-up below still kills the process (Drop).
        let mut p = SluiceProc {
            child,
            proxy: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            reader: Some(reader),
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let field = |name: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse().ok())
        };
        match field("proxy=") {
            Some(proxy) => p.proxy = proxy,
            None => {
                // It failed to start: show why, once its message has reached the log.
                let _ = wait_until(IO_TIMEOUT, || !p.log.lock().unwrap().is_empty());
                panic!("no proxy= in {line:?}; log: {}", p.log_text())
            }
        }
        // `admin=off` leaves the port at 0 (nothing listens there).
        if let Some(admin) = field("admin=") {
            p.admin = admin;
        }
        p
    }

    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        api_call(self.admin, method, path, body, None)
    }

    /// `sluice ctl --admin ADMIN args`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.admin.to_string(), args)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits for a log line holding every one of `parts`.
    pub fn logged(&self, parts: &[&str]) -> bool {
        wait_until(IO_TIMEOUT, || {
            self.log
                .lock()
                .unwrap()
                .iter()
                .any(|l| parts.iter().all(|p| l.contains(p)))
        })
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill with the PID of our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits for the process to exit; its status and everything it logged.
    pub fn wait_and_log(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.log_text())
    }

    /// Kills the process; everything it logged.
    pub fn kill_and_log(mut self) -> String {
        let _ = self.child.kill();
        self.wait_and_log().1
    }
}

impl Drop for SluiceProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sluice ctl --admin ADMIN args`.
pub fn ctl(admin: &str, args: &[&str]) -> Output {
    Command::new(SLUICE)
        .arg("ctl")
        .args(["--admin", admin])
        .args(args)
        .output()
        .unwrap()
}

fn with<S: AsRef<str>>(first: &[&[&str]], args: &[S]) -> Vec<String> {
    first
        .iter()
        .flat_map(|list| list.iter().map(|a| a.to_string()))
        .chain(args.iter().map(|a| a.as_ref().to_string()))
        .collect()
}
