//! The control thread's side of TLS: which certificates the listener serves, reloading them live
//! (`POST /api/tls/reload`, `sluice ctl tls reload`, SIGHUP), and what the API, `/metrics` and the
//! dashboard show about them.
//!
//! A reload reads every `--tls` file again and builds a complete new certificate set; only if every
//! file is valid (readable, parsable, the key matching its certificate, not expired) does a new
//! server configuration go to the workers, as one immutable value over their channel, like a
//! backend table. Otherwise the error names the file and the set in use stays: a half-replaced set
//! cannot happen. Workers give the new configuration to new handshakes; connections already open
//! keep the one they started with.

use std::fmt::Write;
use std::sync::Arc;

use log::{info, warn};
use rustls::ServerConfig;

use super::prometheus::label;
use super::Control;
use crate::admin::schema::{CertView, TlsView};
use crate::admin::AdminResponse;
use crate::tls::certs::now_unix_s;
use crate::tls::{CertInfo, CertPaths, CertSet, TlsError, TlsServer};

const DAY_S: i64 = 86_400;

/// Whole days from `now_unix_s` until `not_after_unix_s`, rounded down (so a certificate with 23
/// hours left has 0 days, and one past its end has a negative count).
pub(crate) fn days_left(not_after_unix_s: i64, now_unix_s: i64) -> i64 {
    (not_after_unix_s - now_unix_s).div_euclid(DAY_S)
}

/// Reload outcomes since start, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReloadCounts {
    pub succeeded: u64,
    pub refused: u64,
}

/// Writes the TLS metric families: one expiry series per certificate file and DNS name, and the
/// reload outcomes.
///
/// `sluice_tls_certificate_expiry_seconds` is the time left until the certificate's not-after, in
/// seconds, negative once it has passed (computed at scrape time). Alert on it directly:
/// `sluice_tls_certificate_expiry_seconds < 14 * 86400`. (The blackbox exporter's
/// `probe_ssl_earliest_cert_expiry` is the not-after as a Unix time instead; the same rule there
/// is `probe_ssl_earliest_cert_expiry - time() < 14 * 86400`. The Unix time is in
/// `GET /api/tls` as `not_after_unix_s`.)
pub(crate) fn write_metrics(
    out: &mut String,
    view: &TlsView,
    now_unix_s: i64,
    counts: ReloadCounts,
) {
    if !view.enabled {
        return;
    }
    let name = "sluice_tls_certificate_expiry_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Seconds until the certificate's not-after (negative once expired), per --tls file and DNS name."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    for c in &view.certificates {
        let left_s = c.not_after_unix_s - now_unix_s;
        let file = label(&c.file);
        if c.names.is_empty() {
            let _ = writeln!(out, "{name}{{file=\"{file}\",name=\"\"}} {left_s}");
        }
        for dns in &c.names {
            let dns = label(dns);
            let _ = writeln!(out, "{name}{{file=\"{file}\",name=\"{dns}\"}} {left_s}");
        }
    }
    let reloads = "sluice_tls_reloads_total";
    let _ = writeln!(
        out,
        "# HELP {reloads} Certificate reloads since start, by result (a refused reload changed nothing)."
    );
    let _ = writeln!(out, "# TYPE {reloads} counter");
    let _ = writeln!(out, "{reloads}{{result=\"success\"}} {}", counts.succeeded);
    let _ = writeln!(out, "{reloads}{{result=\"refused\"}} {}", counts.refused);
}

/// The certificates in use and how to build the next set: the control thread's TLS state, present
/// when the listener speaks TLS.
pub(crate) struct TlsControl {
    /// Ticket keys and session cache, shared by every configuration built here so that sessions
    /// resume across a reload.
    server: TlsServer,
    paths: Vec<CertPaths>,
    strict_sni: bool,
    certs: Arc<CertSet>,
    loaded_unix_s: u64,
    counts: ReloadCounts,
}

impl TlsControl {
    /// The state after start-up read `certs` from `paths` (in `--tls` order) and built the
    /// workers' first configuration with `server`, whose ticket keys and session cache every
    /// later configuration shares.
    pub(crate) fn new(
        server: TlsServer,
        certs: Arc<CertSet>,
        paths: Vec<CertPaths>,
        strict_sni: bool,
    ) -> TlsControl {
        TlsControl {
            server,
            paths,
            strict_sni,
            certs,
            loaded_unix_s: now_unix_s().max(0) as u64,
            counts: ReloadCounts::default(),
        }
    }

    /// Reads every file again. On success the new set is in use here and its configuration is
    /// returned for the workers; on failure nothing changed.
    pub(crate) fn reload(&mut self) -> Result<Arc<ServerConfig>, TlsError> {
        let built = CertSet::load(&self.paths).and_then(|set| {
            let set = Arc::new(set);
            let config = self.server.config(set.clone(), self.strict_sni)?;
            Ok((set, config))
        });
        match built {
            Ok((set, config)) => {
                self.certs = set;
                self.loaded_unix_s = now_unix_s().max(0) as u64;
                self.counts.succeeded += 1;
                Ok(config)
            }
            Err(e) => {
                self.counts.refused += 1;
                Err(e)
            }
        }
    }

    pub(crate) fn view(&self, now_unix_s: i64) -> TlsView {
        TlsView {
            enabled: true,
            loaded_unix_s: self.loaded_unix_s,
            reloads: self.counts.succeeded,
            certificates: self
                .certs
                .infos()
                .enumerate()
                .map(|(i, info)| cert_view(info, i == 0, now_unix_s))
                .collect(),
        }
    }
}

/// The API's view of one certificate; the first of the set is the default.
fn cert_view(info: &CertInfo, default: bool, now_unix_s: i64) -> CertView {
    CertView {
        file: info.file.display().to_string(),
        names: info.names.clone(),
        issuer: info.issuer.clone(),
        not_after_unix_s: info.not_after_unix_s,
        days_left: days_left(info.not_after_unix_s, now_unix_s),
        default,
    }
}

const NO_TLS: &str = "the listener does not speak TLS (start sluice with --tls CERT.pem,KEY.pem)";

impl Control {
    /// `GET /api/tls`.
    pub(crate) fn tls_view(&self) -> TlsView {
        match &self.tls {
            Some(tls) => tls.view(now_unix_s()),
            None => TlsView {
                enabled: false,
                loaded_unix_s: 0,
                reloads: 0,
                certificates: Vec::new(),
            },
        }
    }

    /// Reloads the certificates and sends the new configuration to every worker; the error (a
    /// file named) when the set in use stays.
    fn reload_tls(&mut self) -> Result<(), String> {
        let tls = self.tls.as_mut().ok_or(NO_TLS)?;
        match tls.reload() {
            Ok(config) => {
                if let Some(workers) = &self.workers {
                    workers.publish_tls(&config);
                }
                let names: Vec<String> = tls
                    .certs
                    .infos()
                    .map(|c| c.file.display().to_string())
                    .collect();
                info!("TLS certificates reloaded: {}", names.join(", "));
                Ok(())
            }
            Err(e) => {
                warn!("TLS reload refused, the certificates in use stay: {e}");
                Err(format!("reload refused, the certificates in use stay: {e}"))
            }
        }
    }

    /// `POST /api/tls/reload`: 200 with the new set, 409 without TLS, 422 naming a bad file.
    pub(crate) fn reload_tls_api(&mut self) -> AdminResponse {
        if self.tls.is_none() {
            return AdminResponse::error(409, NO_TLS);
        }
        match self.reload_tls() {
            Ok(()) => AdminResponse::json(200, &self.tls_view()),
            Err(e) => AdminResponse::error(422, &e),
        }
    }

    /// SIGHUP: reloads; the outcome is in the log.
    pub(crate) fn reload_tls_signal(&mut self) {
        if self.tls.is_none() {
            warn!("SIGHUP: no --tls given, so there are no certificates to reload");
            return;
        }
        let _ = self.reload_tls();
    }

    /// The TLS families of `/metrics`.
    pub(crate) fn tls_metrics(&self, out: &mut String) {
        let counts = self
            .tls
            .as_ref()
            .map_or(ReloadCounts::default(), |t| t.counts);
        write_metrics(out, &self.tls_view(), now_unix_s(), counts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn days_left_round_down_and_go_negative_after_the_end() {
        assert_eq!(days_left(NOW + 5 * DAY_S + 10, NOW), 5);
        assert_eq!(days_left(NOW + DAY_S - 1, NOW), 0);
        assert_eq!(days_left(NOW, NOW), 0);
        assert_eq!(days_left(NOW - 1, NOW), -1);
    }

    fn info(file: &str, names: &[&str], not_after_unix_s: i64) -> CertInfo {
        CertInfo {
            file: file.into(),
            names: names.iter().map(|n| n.to_string()).collect(),
            issuer: "CN=ca".into(),
            not_after_unix_s,
            not_after: String::new(),
        }
    }

    fn view() -> TlsView {
        TlsView {
            enabled: true,
            loaded_unix_s: NOW as u64,
            reloads: 1,
            certificates: vec![
                cert_view(
                    &info(
                        "/etc/a \"x\".pem",
                        &["a.example", "*.a.example"],
                        NOW + 5 * DAY_S,
                    ),
                    true,
                    NOW,
                ),
                cert_view(&info("/b.pem", &[], NOW - 10), false, NOW),
            ],
        }
    }

    #[test]
    fn the_view_counts_whole_days_left_and_marks_the_default() {
        let v = view();
        assert_eq!(v.certificates[0].days_left, 5);
        assert!(v.certificates[0].default && !v.certificates[1].default);
        assert_eq!(v.certificates[1].days_left, -1);
        assert_eq!(v.certificates[0].file, "/etc/a \"x\".pem");
    }

    #[test]
    fn each_file_and_name_has_an_expiry_series() {
        let mut out = String::new();
        let counts = ReloadCounts {
            succeeded: 2,
            refused: 1,
        };
        write_metrics(&mut out, &view(), NOW, counts);
        let left = 5 * DAY_S;
        assert!(out.contains(&format!(
            "sluice_tls_certificate_expiry_seconds{{file=\"/etc/a \\\"x\\\".pem\",name=\"*.a.example\"}} {left}\n"
        )), "{out}");
        assert!(
            out.contains("sluice_tls_certificate_expiry_seconds{file=\"/b.pem\",name=\"\"} -10\n")
        );
        assert!(out.contains("sluice_tls_reloads_total{result=\"success\"} 2\n"));
        assert!(out.contains("sluice_tls_reloads_total{result=\"refused\"} 1\n"));
        assert_eq!(out.matches("# TYPE").count(), 2);
    }

    #[test]
    fn without_tls_there_are_no_tls_series() {
        let mut out = String::new();
        let off = TlsView {
            enabled: false,
            loaded_unix_s: 0,
            reloads: 0,
            certificates: vec![],
        };
        write_metrics(&mut out, &off, NOW, ReloadCounts::default());
        assert!(out.is_empty());
    }

    /// Writes a self-signed certificate for `name` valid for `days` and its key as `stem.crt`
    /// and `stem.key` in `dir`.
    fn write_cert(dir: &std::path::Path, stem: &str, name: &str, days: u64) -> CertPaths {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let now = std::time::Duration::from_secs(now_unix_s() as u64);
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + now - std::time::Duration::from_secs(3600);
        params.not_after = epoch + now + std::time::Duration::from_secs(days * 86_400 + 60);
        let cert = params.self_signed(&key).unwrap();
        let paths = CertPaths {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&paths.cert, cert.pem()).unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        paths
    }

    #[test]
    fn a_refused_reload_keeps_the_set_in_use_and_a_good_one_replaces_it() {
        let dir = std::env::temp_dir().join(format!("sluice-tls-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = vec![write_cert(&dir, "site", "a.example", 30)];
        let certs = Arc::new(CertSet::load(&paths).unwrap());
        let mut tls = TlsControl::new(TlsServer::new().unwrap(), certs, paths.clone(), false);
        let before = tls.view(now_unix_s());
        assert_eq!(before.certificates[0].days_left, 30);

        std::fs::write(&paths[0].cert, "not a certificate").unwrap();
        let err = tls.reload().unwrap_err().to_string();
        assert!(err.contains(&paths[0].cert.display().to_string()), "{err}");
        assert_eq!(tls.view(now_unix_s()), before);
        assert_eq!(
            tls.counts,
            ReloadCounts {
                succeeded: 0,
                refused: 1
            }
        );

        write_cert(&dir, "site", "b.example", 60);
        let config = tls.reload().unwrap();
        assert!(config.ticketer.enabled());
        let after = tls.view(now_unix_s());
        assert_eq!(after.certificates[0].names, ["b.example"]);
        assert_eq!(after.certificates[0].days_left, 60);
        assert!(after.certificates[0].default);
        assert_eq!(after.reloads, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
