//! The admin API's routes: one table that both the router and the OpenAPI check read, so a route
//! cannot exist without being documented (the test `routes_match_the_openapi_document`).

use std::sync::OnceLock;

/// The OpenAPI 3 document for every route below, served at `GET /api/openapi.json`.
pub(crate) const OPENAPI_JSON: &str = include_str!("openapi.json");

// The dashboard's sources stay separate files so they can be edited (and opened from disk) as
// they are; `dashboard_html` inlines them so the browser needs nothing but `GET /` and the API.
const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_CSS: &str = include_str!("dashboard/style.css");
const DASHBOARD_CHARTS_JS: &str = include_str!("dashboard/charts.js");
const DASHBOARD_APP_JS: &str = include_str!("dashboard/app.js");
const DASHBOARD_TLS_JS: &str = include_str!("dashboard/tls.js");

/// The dashboard served at `GET /`: `dashboard/index.html` with its stylesheet link and script
/// tags replaced by the files' contents, so it is one document that works with no network access.
/// Assembled on first use.
pub(crate) fn dashboard_html() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        DASHBOARD_HTML
            .replace(
                r#"<link rel="stylesheet" href="style.css">"#,
                &format!("<style>\n{DASHBOARD_CSS}</style>"),
            )
            .replace(
                r#"<script src="charts.js"></script>"#,
                &format!("<script>\n{DASHBOARD_CHARTS_JS}</script>"),
            )
            .replace(
                r#"<script src="app.js"></script>"#,
                &format!("<script>\n{DASHBOARD_APP_JS}</script>"),
            )
            .replace(
                r#"<script src="tls.js"></script>"#,
                &format!("<script>\n{DASHBOARD_TLS_JS}</script>"),
            )
    })
}

/// What a route does; the control thread implements each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    ListBackends,
    AddBackend,
    RemoveBackend,
    SetWeight,
    EnableBackend,
    DisableBackend,
    GetStrategy,
    SetStrategy,
    Status,
    Cluster,
    /// The certificates the listener serves.
    Tls,
    /// Read every `--tls` file again and serve the new set if all of it is valid.
    TlsReload,
    History,
    OpenApi,
    Metrics,
    Dashboard,
    AccessLog,
    ReopenLog,
    Clients,
}

impl Route {
    /// Routes that change state need the admin token when one is set.
    pub(crate) fn mutates(self) -> bool {
        matches!(
            self,
            Route::AddBackend
                | Route::RemoveBackend
                | Route::SetWeight
                | Route::EnableBackend
                | Route::DisableBackend
                | Route::SetStrategy
                | Route::TlsReload
                | Route::ReopenLog
        )
    }
}

/// Every route: method, path template (`{address}` matches one segment), what it does.
pub(crate) const ROUTES: &[(&str, &str, Route)] = &[
    ("GET", "/", Route::Dashboard),
    ("GET", "/metrics", Route::Metrics),
    ("GET", "/api/openapi.json", Route::OpenApi),
    ("GET", "/api/history", Route::History),
    ("GET", "/api/status", Route::Status),
    ("GET", "/api/cluster", Route::Cluster),
    ("GET", "/api/tls", Route::Tls),
    ("POST", "/api/tls/reload", Route::TlsReload),
    ("GET", "/api/log", Route::AccessLog),
    ("POST", "/api/log/reopen", Route::ReopenLog),
    ("GET", "/api/clients", Route::Clients),
    ("GET", "/api/strategy", Route::GetStrategy),
    ("PUT", "/api/strategy", Route::SetStrategy),
    ("GET", "/api/backends", Route::ListBackends),
    ("POST", "/api/backends", Route::AddBackend),
    ("PUT", "/api/backends/{address}", Route::SetWeight),
    ("DELETE", "/api/backends/{address}", Route::RemoveBackend),
    (
        "POST",
        "/api/backends/{address}/enable",
        Route::EnableBackend,
    ),
    (
        "POST",
        "/api/backends/{address}/disable",
        Route::DisableBackend,
    ),
];

/// The result of matching a request line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Match {
    /// The route and its `{address}` parameter (percent-decoded), if the template has one.
    Found(Route, Option<String>),
    /// The path exists, with other methods (for 405 and its Allow field).
    WrongMethod(Vec<&'static str>),
    NotFound,
}

pub(crate) fn route(method: &str, target: &str) -> Match {
    let path = target.split('?').next().unwrap_or("");
    let mut allowed = Vec::new();
    for &(m, template, r) in ROUTES {
        if let Some(param) = match_template(template, path) {
            if m == method || (method == "HEAD" && m == "GET") {
                return Match::Found(r, param);
            }
            allowed.push(m);
        }
    }
    if allowed.is_empty() {
        Match::NotFound
    } else {
        Match::WrongMethod(allowed)
    }
}

/// `Some(param)` when `path` fits `template`; the parameter is `None` for templates without one.
fn match_template(template: &str, path: &str) -> Option<Option<String>> {
    let mut t = template.split('/');
    let mut p = path.split('/');
    let mut param = None;
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(param),
            (Some("{address}"), Some(seg)) if !seg.is_empty() => param = Some(percent_decode(seg)?),
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
}

/// Decodes `%XX` escapes (IPv6 addresses arrive as `%5B::1%5D:80`).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_templates_and_decode_the_address() {
        assert_eq!(
            route("GET", "/api/backends"),
            Match::Found(Route::ListBackends, None)
        );
        assert_eq!(
            route("POST", "/api/backends/127.0.0.1:81/disable"),
            Match::Found(Route::DisableBackend, Some("127.0.0.1:81".into()))
        );
        assert_eq!(
            route("DELETE", "/api/backends/%5B::1%5D:80"),
            Match::Found(Route::RemoveBackend, Some("[::1]:80".into()))
        );
        assert_eq!(
            route("GET", "/api/status?x=1"),
            Match::Found(Route::Status, None)
        );
    }

    #[test]
    fn wrong_method_lists_the_allowed_ones_and_unknown_paths_are_not_found() {
        assert_eq!(
            route("DELETE", "/api/backends"),
            Match::WrongMethod(vec!["GET", "POST"])
        );
        assert_eq!(
            route("GET", "/api/backends/a:1/enable"),
            Match::WrongMethod(vec!["POST"])
        );
        assert_eq!(route("GET", "/api/nothing"), Match::NotFound);
        assert_eq!(route("GET", "/api/backends//enable"), Match::NotFound);
        assert_eq!(
            route("PUT", "/api/backends/%zz:1"),
            Match::NotFound,
            "bad escape"
        );
    }

    #[test]
    fn the_dashboard_is_one_document_with_its_styles_and_scripts_inlined() {
        assert_eq!(route("GET", "/"), Match::Found(Route::Dashboard, None));
        let page = dashboard_html();
        for source in [
            DASHBOARD_CSS,
            DASHBOARD_CHARTS_JS,
            DASHBOARD_APP_JS,
            DASHBOARD_TLS_JS,
        ] {
            assert!(page.contains(source));
            let lower = source.to_ascii_lowercase();
            assert!(
                !lower.contains("</script") && !lower.contains("</style"),
                "a source would end its inline element early"
            );
        }
        assert!(!page.contains("stylesheet"), "stylesheet left as a link");
        assert!(!page.contains("<script src"), "script left as a link");
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn the_documented_strategies_are_the_real_ones() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let documented: Vec<&str> = doc["components"]["schemas"]["StrategyChange"]["properties"]
            ["strategy"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let real: Vec<&str> = <crate::strategy::StrategyKind as clap::ValueEnum>::value_variants()
            .iter()
            .map(|k| k.name())
            .collect();
        assert_eq!(documented, real);
    }

    #[test]
    fn routes_match_the_openapi_document() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut routed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
    }
}
