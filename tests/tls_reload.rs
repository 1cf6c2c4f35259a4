//! Live certificate reload, as an operator uses it on the `sluice` binary: `POST /api/tls/reload`,
//! `sluice ctl tls reload` and SIGHUP serve the new certificate to new connections while open ones
//! go on; a bad file (garbage, a key that is not the certificate's, an expired certificate) is
//! refused with its name and the certificate in use keeps serving; a reload under steady load
//! fails no request. Also `GET /api/tls`, `sluice ctl tls` and the expiry metric.
//!
//! Certificates are made by the test (a test CA and leaves with chosen serials and expiry, see
//! `common/tls_files.rs`); clients are rustls (which reports the certificate it was shown) and
//! `openssl s_client`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use common::edge::TempDir;
use common::proc::SluiceProc;
use common::tls_files::*;
use common::*;

const NAME: &str = "site.test";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One test's CA, files and backend.
struct Setup {
    ca: TestCa,
    cfg: Arc<rustls::ClientConfig>,
    dir: TempDir,
    backend: HttpBackend,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let ca = TestCa::new("sluice test CA");
        let cfg = client_config(&ca);
        Setup {
            ca,
            cfg,
            dir: TempDir::new(tag),
            backend: HttpBackend::start(|_| Reply::ok(b"hello")),
        }
    }

    /// Starts sluice serving each leaf from `STEM.crt` and `STEM.key` (the first is the
    /// default), with `extra` flags; returns it and the files.
    fn start_serving(
        &self,
        leaves: &[(&Leaf, &str)],
        extra: &[&str],
    ) -> (SluiceProc, Vec<(PathBuf, PathBuf)>) {
        let mut args = vec!["--backend".to_string(), self.backend.addr.to_string()];
        let files: Vec<_> = leaves
            .iter()
            .map(|(leaf, stem)| leaf.write(&self.dir.0, stem))
            .collect();
        for f in &files {
            args.push("--tls".into());
            args.push(tls_flag(f));
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        (SluiceProc::start(&args), files)
    }

    /// Starts sluice serving `leaf` from `site.crt`/`site.key`.
    fn start(&self, leaf: &Leaf) -> SluiceProc {
        self.start_serving(&[(leaf, "site")], &[]).0
    }

    fn connect(&self, p: &SluiceProc) -> TlsClient {
        TlsClient::connect(p.proxy, &self.cfg, NAME).unwrap()
    }

    /// The certificate a new connection is shown.
    fn served(&self, p: &SluiceProc) -> Vec<u8> {
        self.connect(p).peer_leaf()
    }
}

/// The serial `openssl s_client` is shown by a new connection, as `openssl x509 -serial` prints
/// it (`serial=0A`).
fn openssl_serial(addr: SocketAddr) -> String {
    let shown = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            NAME,
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("openssl not found: scripts/test.sh installs it");
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(x509.stdin.as_mut().unwrap(), &shown.stdout).unwrap();
    text(&x509.wait_with_output().unwrap().stdout)
        .trim()
        .to_string()
}

#[test]
fn a_reload_reaches_new_handshakes_while_open_connections_and_sessions_go_on() {
    let s = Setup::new("tls-reload");
    let old = s.ca.leaf_for_days(&[NAME], 10, 90);
    let p = s.start(&old);
    let mut open = s.connect(&p);
    assert_eq!(open.peer_leaf(), old.der);
    assert_eq!(open.get("/").unwrap().status, 200);
    assert_eq!(openssl_serial(p.proxy), "serial=0A");
    // A client that keeps its session ticket (it arrives with the first response).
    let resuming = resuming_client_config(&s.ca);
    let mut before = TlsClient::connect(p.proxy, &resuming, NAME).unwrap();
    assert_eq!(before.get("/").unwrap().status, 200);
    assert!(!before.resumed());

    let new = s.ca.leaf_for_days(&[NAME], 11, 60);
    new.write(&s.dir.0, "site");
    let (status, view) = p.api("POST", "/api/tls/reload", None);
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["reloads"], 1, "{view}");
    assert_eq!(view["certificates"][0]["days_left"], 60, "{view}");

    // Each worker installs the new configuration when it next drains its channel, a moment
    // after the API answered.
    assert!(wait_until(IO_TIMEOUT, || s.served(&p) == new.der));
    assert_eq!(openssl_serial(p.proxy), "serial=0B");
    // The ticket keys outlive the reload: the session resumes.
    let mut after = TlsClient::connect(p.proxy, &resuming, NAME).unwrap();
    assert!(after.resumed());
    assert_eq!(after.get("/").unwrap().status, 200);
    // The connection opened before the reload keeps its session and goes on serving requests.
    assert_eq!(open.get("/again").unwrap().status, 200);
    assert_eq!(open.peer_leaf(), old.der);
    assert!(p.logged(&["TLS certificates reloaded", "site.crt"]));
}

/// How a test breaks the files, and the file the refusal must name.
type BadFile<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a std::path::Path);

#[test]
fn a_bad_file_on_reload_is_refused_with_its_name_and_the_old_certificate_keeps_serving() {
    let s = Setup::new("tls-refuse");
    let good = s.ca.leaf_for_days(&[NAME], 20, 90);
    let p = s.start(&good);
    let (cert, key) = (s.dir.join("site.crt"), s.dir.join("site.key"));
    let other = s.ca.leaf_for_days(&[NAME], 21, 90);
    let expired = s.ca.leaf(&[NAME], 22, unix_now_s() - DAY_S);
    let cases: [BadFile; 4] = [
        (
            "garbage certificate",
            Box::new(|| replace_file(&cert, b"this is not PEM\n")),
            &cert,
        ),
        (
            "garbage key",
            Box::new(|| {
                good.write(&s.dir.0, "site");
                replace_file(
                    &key,
                    b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                )
            }),
            &key,
        ),
        (
            "another certificate's key",
            Box::new(|| {
                good.write(&s.dir.0, "site");
                replace_file(&key, other.key_pem.as_bytes())
            }),
            &key,
        ),
        (
            "an expired certificate",
            Box::new(|| {
                expired.write(&s.dir.0, "site");
            }),
            &cert,
        ),
    ];
    for (what, break_it, named) in &cases {
        break_it();
        let named = named.display().to_string();
        let (status, body) = p.api("POST", "/api/tls/reload", None);
        assert_eq!(status, 422, "{what}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(&named), "{what}: {error}");
        // ctl says the same and exits 1.
        let out = p.ctl(&["tls", "reload"]);
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert!(
            text(&out.stderr).contains(&named),
            "{what}: {}",
            text(&out.stderr)
        );
        // The certificate in use is untouched.
        assert_eq!(s.served(&p), good.der, "{what}");
        let (_, view) = p.api("GET", "/api/tls", None);
        assert_eq!(view["reloads"], 0, "{what}: {view}");
        assert_eq!(view["certificates"][0]["days_left"], 90, "{what}: {view}");
    }
    assert!(p.logged(&["TLS reload refused", &cert.display().to_string()]));
    let metrics = scrape_at(p.admin);
    assert_eq!(
        value(&metrics, "sluice_tls_reloads_total{result=\"refused\"}"),
        Some(8.0),
        "{metrics}"
    );

    // Fixed, the next reload goes through.
    other.write(&s.dir.0, "site");
    let out = p.ctl(&["tls", "reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("reloaded"));
    // Workers install it when they next drain their channel.
    assert!(wait_until(IO_TIMEOUT, || s.served(&p) == other.der));
}

#[test]
fn sighup_reloads_and_a_refused_sighup_leaves_a_log_line() {
    let s = Setup::new("tls-hup");
    let first = s.ca.leaf_for_days(&[NAME], 30, 90);
    let p = s.start(&first);
    let second = s.ca.leaf_for_days(&[NAME], 31, 90);
    second.write(&s.dir.0, "site");
    p.signal(libc::SIGHUP);
    assert!(
        wait_until(IO_TIMEOUT, || p.api("GET", "/api/tls", None).1["reloads"]
            == 1),
        "{}",
        p.log_text()
    );
    // Workers install it when they next drain their channel.
    assert!(wait_until(IO_TIMEOUT, || s.served(&p) == second.der));
    assert!(p.logged(&["SIGHUP: reloading the TLS certificates"]));

    let cert = s.dir.join("site.crt");
    replace_file(&cert, b"garbage");
    p.signal(libc::SIGHUP);
    assert!(
        p.logged(&["TLS reload refused", &cert.display().to_string()]),
        "{}",
        p.log_text()
    );
    // Still running, still serving the last good certificate.
    assert_eq!(s.served(&p), second.der);
    assert_eq!(p.api("GET", "/api/tls", None).1["reloads"], 1);
}

#[test]
fn ctl_tls_lists_the_certificates_and_reloads_them() {
    let s = Setup::new("tls-ctl");
    let main = s.ca.leaf_for_days(&[NAME, "www.site.test"], 40, 90);
    let soon = s.ca.leaf_for_days(&["*.other.test"], 41, 5);
    let (p, files) = s.start_serving(&[(&main, "site"), (&soon, "other")], &[]);
    let (main_files, soon_files) = (&files[0], &files[1]);
    let out = p.ctl(&["tls"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    assert!(list.starts_with("2 certificates, loaded "), "{list}");
    let row = |file: &std::path::Path| {
        list.lines()
            .find(|l| l.starts_with(&file.display().to_string()))
            .unwrap_or_else(|| panic!("{list}"))
            .to_string()
    };
    let first = row(&main_files.0);
    assert!(
        first.contains("site.test,www.site.test")
            && first.contains(" 90 ")
            && first.contains("yes"),
        "{first}"
    );
    assert!(first.contains("CN=sluice test CA"), "{first}");
    let second = row(&soon_files.0);
    assert!(
        second.contains("*.other.test")
            && second.contains(" 5 ")
            && second.ends_with("EXPIRES SOON"),
        "{second}"
    );
    assert_eq!(text(&p.ctl(&["tls", "list"]).stdout), list);

    let out = p.ctl(&["tls", "reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 reload since start"));
}

#[test]
fn api_tls_describes_each_certificate_and_the_expiry_metric_is_promtool_clean() {
    let s = Setup::new("tls-api");
    let main = s.ca.leaf_for_days(&[NAME], 50, 90);
    let soon = s.ca.leaf_for_days(&["*.other.test", "other.test"], 51, 5);
    let (p, files) = s.start_serving(
        &[(&main, "site"), (&soon, "other")],
        &["--admin-token", "s3cret"],
    );
    let (main_files, soon_files) = (&files[0], &files[1]);
    // Reading needs no token; a reload changes what is served and needs it.
    let (status, body) = p.api("POST", "/api/tls/reload", None);
    assert_eq!(status, 401, "{body}");
    let (status, _) = api_call(p.admin, "POST", "/api/tls/reload", None, Some("s3cret"));
    assert_eq!(status, 200);
    let (status, view) = p.api("GET", "/api/tls", None);
    assert_eq!(status, 200);
    assert_eq!(view["reloads"], 1, "{view}");
    assert_eq!(view["enabled"], true);
    let certs = view["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "{view}");
    let now = unix_now_s();
    for (c, files, names, days, default) in [
        (&certs[0], main_files, vec![NAME], 90, true),
        (
            &certs[1],
            soon_files,
            vec!["*.other.test", "other.test"],
            5,
            false,
        ),
    ] {
        assert_eq!(c["file"], files.0.display().to_string(), "{c}");
        assert_eq!(c["names"], serde_json::json!(names), "{c}");
        assert!(
            c["issuer"].as_str().unwrap().contains("CN=sluice test CA"),
            "{c}"
        );
        assert_eq!(c["days_left"], days, "{c}");
        assert_eq!(c["default"], default, "{c}");
        let left = c["not_after_unix_s"].as_i64().unwrap() - now;
        assert!((days * DAY_S..(days + 1) * DAY_S).contains(&left), "{c}");
    }

    let metrics = scrape_at(p.admin);
    let series = format!(
        "sluice_tls_certificate_expiry_seconds{{file=\"{}\",name=\"other.test\"}}",
        soon_files.0.display()
    );
    let left = value(&metrics, &series).unwrap_or_else(|| panic!("{metrics}"));
    assert!(
        (5.0 * DAY_S as f64..6.0 * DAY_S as f64).contains(&left),
        "{left}"
    );
    let main_series = format!(
        "sluice_tls_certificate_expiry_seconds{{file=\"{}\",name=\"{NAME}\"}}",
        main_files.0.display()
    );
    assert!(value(&metrics, &main_series).unwrap() > 90.0 * DAY_S as f64);
    assert_eq!(
        value(&metrics, "sluice_tls_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    promtool_check(&metrics);
}

#[test]
fn without_tls_the_list_is_empty_and_a_reload_is_a_conflict() {
    let backend = HttpBackend::start(|_| Reply::ok(b"plain"));
    let p = SluiceProc::start(&["--backend".into(), backend.addr.to_string()]);
    let (status, view) = p.api("GET", "/api/tls", None);
    assert_eq!(status, 200);
    assert_eq!(view["enabled"], false);
    assert_eq!(view["certificates"], serde_json::json!([]));
    let (status, body) = p.api("POST", "/api/tls/reload", None);
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("--tls"), "{body}");
    let out = p.ctl(&["tls", "reload"]);
    assert_eq!(out.status.code(), Some(1));
    p.signal(libc::SIGHUP);
    assert!(p.logged(&["no --tls given"]), "{}", p.log_text());
    // SIGHUP did not stop it.
    assert_eq!(roundtrip(p.proxy, &get("/")).status, 200);
    let metrics = scrape_at(p.admin);
    assert!(
        !metrics.contains("sluice_tls_certificate_expiry_seconds")
            && !metrics.contains("sluice_tls_reloads_total"),
        "{metrics}"
    );
}

/// Clients that run until told to stop, counting answered requests and failures: keep-alive
/// connections that stay open across every reload, and clients that open a new connection for
/// each request (a full handshake, or a resumed one), remembering which certificates they were
/// shown.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    threads: Vec<thread::JoinHandle<Vec<String>>>,
}

impl Load {
    /// One client thread per entry: its configuration, and whether it opens a new connection
    /// for each request.
    fn start(p: &SluiceProc, clients: &[(&Arc<rustls::ClientConfig>, bool)]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for &(cfg, new_each_time) in clients {
            let (stop, answered, seen, cfg, addr) = (
                stop.clone(),
                answered.clone(),
                seen.clone(),
                cfg.clone(),
                p.proxy,
            );
            threads.push(thread::spawn(move || {
                let mut failures = Vec::new();
                let mut client: Option<TlsClient> = None;
                while !stop.load(Ordering::SeqCst) {
                    if client.is_none() {
                        match TlsClient::connect(addr, &cfg, NAME) {
                            Ok(c) => {
                                let leaf = c.peer_leaf();
                                let mut seen = seen.lock().unwrap();
                                if !seen.contains(&leaf) {
                                    seen.push(leaf);
                                }
                                client = Some(c);
                            }
                            Err(e) => {
                                failures.push(e);
                                continue;
                            }
                        }
                    }
                    let Some(c) = client.as_mut() else { continue };
                    match c.get("/load") {
                        Ok(r) if r.status == 200 => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures.push(format!("status {}", r.status)),
                        Err(e) => {
                            failures.push(e);
                            client = None;
                        }
                    }
                    if new_each_time {
                        client = None;
                    }
                }
                failures
            }));
        }
        Load {
            stop,
            answered,
            seen,
            threads,
        }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    fn finish(self) -> (u64, Vec<Vec<u8>>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let answered = self.answered();
        let failures = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let seen = self.seen.lock().unwrap().clone();
        (answered, seen, failures)
    }
}

#[test]
fn reloads_under_steady_load_fail_no_request() {
    let s = Setup::new("tls-load");
    let leaves: Vec<Leaf> = (0..2)
        .map(|i| s.ca.leaf_for_days(&[NAME], 60 + i, 90 - i as i64))
        .collect();
    let p = s.start(&leaves[0]);
    let resuming = resuming_client_config(&s.ca);
    let load = Load::start(
        &p,
        &[
            (&s.cfg, false),
            (&s.cfg, false),
            (&s.cfg, true),
            (&s.cfg, true),
            (&resuming, true),
        ],
    );
    let mut last = 0;
    const RELOADS: usize = 6;
    for round in 1..=RELOADS {
        // Some requests between reloads, so each reload lands among requests in flight.
        assert!(
            wait_until(IO_TIMEOUT, || load.answered() >= last + 50),
            "the load stalled"
        );
        last = load.answered();
        let leaf = &leaves[round % 2];
        leaf.write(&s.dir.0, "site");
        let (status, body) = p.api("POST", "/api/tls/reload", None);
        assert_eq!(status, 200, "{body}");
        assert!(
            wait_until(IO_TIMEOUT, || s.served(&p) == leaf.der),
            "round {round}"
        );
    }
    assert!(wait_until(IO_TIMEOUT, || load.answered() >= last + 50));
    let (answered, seen, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed of {answered}: {failures:?}",
        failures.len()
    );
    assert!(seen.contains(&leaves[0].der) && seen.contains(&leaves[1].der));
    assert_eq!(p.api("GET", "/api/tls", None).1["reloads"], RELOADS);
}
