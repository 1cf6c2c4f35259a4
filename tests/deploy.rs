//! Running sluice as a service: the systemd unit in deploy/ passes `systemd-analyze verify`, and
//! sluice tells systemd when it is ready (`Type=notify`), naming itself the main process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

#[test]
fn the_systemd_unit_verifies_clean() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/sluice.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/sluice "));
    // reload is the live upgrade (USR2); HUP stays the certificate reload, as its comment says.
    assert!(unit.contains("ExecReload=/bin/kill -USR2 $MAINPID"));
    assert!(unit.contains("kill -s HUP sluice"));
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let dir = std::env::temp_dir().join(format!("sluice-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sluice.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/sluice", SLUICE)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze not found: scripts/test.sh installs it (Debian package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings: there must be none.
    assert!(stderr.trim().is_empty(), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sluice_tells_systemd_it_is_ready_and_its_pid() {
    let dir = std::env::temp_dir().join(format!("sluice-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket_path = dir.join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = Command::new(SLUICE)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--workers",
            "1",
        ])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf);
    let _ = child.kill();
    let _ = child.wait();
    let message = String::from_utf8_lossy(&buf[..n.unwrap()]).into_owned();
    assert!(message.contains("READY=1\n"), "{message}");
    assert!(
        message.contains(&format!("MAINPID={}\n", child.id())),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
