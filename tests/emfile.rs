//! Running out of file descriptors: a worker whose `accept` fails with EMFILE pauses accepting
//! for a moment (logging each pause) instead of spinning on the failing call or crashing, keeps
//! the connections it has, and accepts again once descriptors are free. The sluice binary runs
//! with a tiny RLIMIT_NOFILE so the limit is reached with a few dozen clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::{proxy_addr_of, wait_until, HttpBackend, Reply, IO_TIMEOUT};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
/// Descriptors the sluice process may open: its own (epoll, wakers, listeners, std streams)
/// take about 20; the rest go to clients.
const NOFILE: libc::rlim_t = 48;

fn get(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn accept_pauses_on_emfile_and_resumes_when_descriptors_free_up() {
    let backend = HttpBackend::start(|_| Reply::ok(b"fine"));
    let mut cmd = Command::new(SLUICE);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "off",
        "--workers",
        "1",
    ])
    .args(["--health-interval", "0", "--max-conns", "1000"])
    .args(["--backend", &backend.addr.to_string()])
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and only touches the child's own limits.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: NOFILE,
                rlim_max: NOFILE,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let addr = proxy_addr_of(&mut child);
    let pauses = Arc::new(AtomicUsize::new(0));
    let counter = pauses.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("accept paused") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    // More clients than descriptors: the kernel completes their handshakes (the backlog), sluice
    // accepts until EMFILE and leaves the rest queued.
    let started = Instant::now();
    let crowd: Vec<TcpStream> = (0..2 * NOFILE)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    assert!(
        wait_until(IO_TIMEOUT, || pauses.load(Ordering::SeqCst) >= 2),
        "sluice never reported running out of descriptors"
    );
    // Still alive, and pausing rather than spinning: one attempt per 100 ms pause at most.
    assert!(child.try_wait().unwrap().is_none(), "sluice exited");
    let elapsed_ms = started.elapsed().as_millis() as usize;
    let seen = pauses.load(Ordering::SeqCst);
    assert!(
        seen <= elapsed_ms / 100 + 2,
        "{seen} pauses in {elapsed_ms} ms: accept is spinning"
    );

    // Descriptors free up: the queued and new clients are served.
    drop(crowd);
    let mut answer = String::new();
    assert!(
        wait_until(IO_TIMEOUT, || {
            answer = get(addr);
            answer.starts_with("HTTP/1.1 200")
        }),
        "no answer after the crowd left: {answer:?}"
    );
    assert!(answer.ends_with("fine"), "{answer:?}");
    assert!(child.try_wait().unwrap().is_none(), "sluice exited");
    child.kill().unwrap();
    child.wait().unwrap();
}
