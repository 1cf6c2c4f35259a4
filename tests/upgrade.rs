//! Live upgrade: `kill -USR2` under steady load, ten times in a row, with zero failed requests.
//!
//! The client behaves like real HTTP clients: a request that fails on a reused keep-alive connection
//! before any byte of response came back is sent again on a new connection (RFC 9112 section 9.3.1
//! allows it; the server closed an idle connection). Any other error, and any non-200, is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn read_pid(path: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` has exited (reaping it if it is our child or was reparented to us).
fn gone(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid on a pid; WNOHANG never blocks.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == pid {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) != 0 }
}

struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

fn start_load(addr: SocketAddr, connections: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads = (0..connections)
        .map(|_| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            thread::spawn(move || {
                let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
                while !stop.load(Ordering::SeqCst) {
                    let reused = conn.is_some();
                    let (w, r) = conn.get_or_insert_with(|| {
                        let s = connect(addr);
                        (s.try_clone().unwrap(), BufReader::new(s))
                    });
                    let sent = w.write_all(&get("/upgrade"));
                    let result = sent.and_then(|_| read_response(r, false));
                    match result {
                        Ok(resp) if resp.status == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            if resp.header("connection") == Some("close") {
                                conn = None;
                            }
                        }
                        Ok(resp) => failures
                            .lock()
                            .unwrap()
                            .push(format!("status {}", resp.status)),
                        Err(e) if reused => {
                            // Closed while idle: send again on a new connection.
                            let _ = e;
                            conn = None;
                        }
                        Err(e) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("fresh connection failed: {e}"));
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect();
    Load {
        stop,
        ok,
        failures,
        threads,
    }
}

#[test]
fn ten_upgrades_under_load_lose_no_request() {
    // Orphaned successors are reparented to this process, so it can reap them.
    // SAFETY: prctl with a plain integer option.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let backend = HttpBackend::start(|_| Reply::ok(b"up"));
    let dir = std::env::temp_dir().join(format!("sluice-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("sluice.pid");
    let mut first = Command::new(SLUICE)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--workers",
            "2",
            "--health-interval",
            "0",
        ])
        .args([
            "--shutdown-timeout",
            "5s",
            "--backend",
            &backend.addr.to_string(),
            "--pid-file",
        ])
        .arg(&pid_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = proxy_addr_of(&mut first);
    assert_eq!(read_pid(&pid_file), Some(first.id() as i32));

    let load = start_load(addr, 4);
    let mut pids = vec![first.id() as i32];
    for round in 0..10 {
        let old = read_pid(&pid_file).unwrap();
        let served = load.ok.load(Ordering::SeqCst);
        // SAFETY: signalling a process this test started.
        assert_eq!(unsafe { libc::kill(old, libc::SIGUSR2) }, 0);
        assert!(
            wait_until(IO_TIMEOUT, || read_pid(&pid_file).is_some_and(|p| p != old)
                && gone(old)),
            "round {round}: the upgrade did not complete"
        );
        let new = read_pid(&pid_file).unwrap();
        pids.push(new);
        // Traffic keeps flowing through the new process.
        assert!(
            wait_until(IO_TIMEOUT, || load.ok.load(Ordering::SeqCst) > served + 50),
            "round {round}: no traffic"
        );
    }
    load.stop.store(true, Ordering::SeqCst);
    for t in load.threads {
        t.join().unwrap();
    }
    let last = *pids.last().unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(last, libc::SIGTERM) };
    assert!(wait_until(IO_TIMEOUT, || gone(last)));
    let _ = first.wait();
    let failures = load.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 11, "eleven processes in turn: {pids:?}");
    assert!(load.ok.load(Ordering::SeqCst) > 500);
}
