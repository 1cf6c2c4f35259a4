//! `sluice ctl tls`: the certificates the listener serves, as a table for a terminal, and
//! `sluice ctl tls reload`. Kept apart from the backend commands because it reads other shapes
//! and needs dates: a certificate's end of validity is shown in UTC, as `openssl x509 -enddate`
//! users read it.

use clap::Subcommand;

use super::table;
use crate::admin::schema::{CertView, TlsView};

/// Certificates that expire within this many days are marked, as the dashboard warns about them.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

#[derive(Subcommand, Debug, Clone)]
pub enum TlsCommand {
    /// List the certificates in use (the default when no subcommand is given).
    List,
    /// Read every --tls file again and serve the new certificates if all of them are valid.
    Reload,
}

/// `YYYY-MM-DD HH:MM UTC` for seconds since the Unix epoch.
pub fn utc_text(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let secs = unix_s.rem_euclid(86_400);
    let (y, m, d) = crate::clock::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// What a certificate's row says about its expiry.
fn expiry_note(c: &CertView) -> &'static str {
    if c.days_left < 0 {
        "EXPIRED"
    } else if c.days_left < EXPIRY_WARNING_DAYS {
        "EXPIRES SOON"
    } else {
        ""
    }
}

/// The table of `sluice ctl tls`.
pub fn tls_text(v: &TlsView) -> String {
    if !v.enabled {
        return "the listener does not speak TLS (start sluice with --tls CERT.pem,KEY.pem)\n"
            .into();
    }
    let mut out = format!(
        "{} certificate{}, loaded {}, {} reload{} since start\n\n",
        v.certificates.len(),
        if v.certificates.len() == 1 { "" } else { "s" },
        utc_text(v.loaded_unix_s as i64),
        v.reloads,
        if v.reloads == 1 { "" } else { "s" },
    );
    let rows: Vec<Vec<String>> = v
        .certificates
        .iter()
        .map(|c| {
            vec![
                c.file.clone(),
                if c.names.is_empty() {
                    "-".into()
                } else {
                    c.names.join(",")
                },
                utc_text(c.not_after_unix_s),
                c.days_left.to_string(),
                if c.default { "yes" } else { "" }.into(),
                c.issuer.clone(),
                expiry_note(c).into(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "FILE",
            "NAMES",
            "NOT AFTER",
            "DAYS LEFT",
            "DEFAULT",
            "ISSUER",
            "",
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00 UTC");
        // date -u -d @1709210096: Thu Feb 29 12:34:56 UTC 2024 (a leap day)
        assert_eq!(utc_text(1_709_210_096), "2024-02-29 12:34 UTC");
        assert_eq!(utc_text(-1), "1969-12-31 23:59 UTC");
        assert_eq!(utc_text(4_102_444_800), "2100-01-01 00:00 UTC");
    }

    fn cert(file: &str, days_left: i64, default: bool) -> CertView {
        CertView {
            file: file.into(),
            names: vec!["example.com".into(), "*.example.com".into()],
            issuer: "CN=test CA".into(),
            not_after_unix_s: 1_709_210_096,
            days_left,
            default,
        }
    }

    #[test]
    fn the_table_marks_the_default_and_certificates_that_expire_soon() {
        let v = TlsView {
            enabled: true,
            loaded_unix_s: 0,
            reloads: 2,
            certificates: vec![cert("/a.pem", 90, true), cert("/b.pem", 5, false)],
        };
        let text = tls_text(&v);
        assert!(text.starts_with("2 certificates, loaded 1970-01-01 00:00 UTC, 2 reloads"));
        let a = text.lines().find(|l| l.starts_with("/a.pem")).unwrap();
        assert!(
            a.contains("example.com,*.example.com") && a.contains("yes"),
            "{a}"
        );
        assert!(!a.contains("EXPIRES SOON"), "{a}");
        let b = text.lines().find(|l| l.starts_with("/b.pem")).unwrap();
        assert!(
            b.contains("2024-02-29 12:34 UTC") && b.ends_with("EXPIRES SOON"),
            "{b}"
        );
        let expired = cert("/c.pem", -1, false);
        assert_eq!(expiry_note(&expired), "EXPIRED");
    }

    #[test]
    fn without_tls_the_list_says_how_to_turn_it_on() {
        let v = TlsView {
            enabled: false,
            loaded_unix_s: 0,
            reloads: 0,
            certificates: Vec::new(),
        };
        assert!(tls_text(&v).contains("--tls CERT.pem,KEY.pem"));
    }
}
