//! The admin API's handlers: each route of [`crate::admin::routes::ROUTES`] against the control
//! state. Every mutation is checked, saved, applied and published before the answer goes out.

use std::net::SocketAddr;

use super::state::{BackendEntry, ChangeError};
use super::Control;
use crate::admin::routes::{dashboard_html, route, Match, Route, OPENAPI_JSON};
use crate::admin::schema::{
    BackendStatusView, BackendView, NewBackend, StatusView, StrategyChange, StrategyView,
    WeightChange,
};
use crate::admin::{token_matches, AdminRequest, AdminResponse};
use crate::backend::{parse_addr, parse_backend_addr, MAX_WEIGHT};
use crate::strategy::StrategyKind;

/// A backend as the API shows it.
fn backend_view(b: &BackendEntry) -> BackendView {
    BackendView {
        address: b.addr.to_string(),
        weight: b.weight,
        enabled: b.enabled,
        healthy: b.health.healthy,
        ejected: b.is_ejected(),
        draining: b.removing_deadline_ms.is_some(),
    }
}

fn change_error(e: ChangeError) -> AdminResponse {
    let status = match e {
        ChangeError::NotFound(_) => 404,
        ChangeError::Duplicate(_) => 409,
        ChangeError::Invalid(_) => 400,
        ChangeError::Storage(_) => 500,
    };
    AdminResponse::error(status, &e.to_string())
}

/// Parses a JSON body, refusing other media types (415) and bad JSON (400).
fn json_body<T: serde::de::DeserializeOwned>(req: &AdminRequest) -> Result<T, AdminResponse> {
    if let Some(ct) = req.header("content-type") {
        let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
        if !ct.trim_start().starts_with("application/json") {
            return Err(AdminResponse::error(
                415,
                "send the body as application/json",
            ));
        }
    }
    if req.body.is_empty() {
        return Err(AdminResponse::error(400, "a JSON body is required"));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| AdminResponse::error(400, &format!("malformed JSON: {e}")))
}

/// Refuses a change a web page in someone's browser asked for (cross-site request forgery against
/// the loopback API): browsers send `Origin` with every cross-site POST, PUT and DELETE, while
/// curl, scripts and `sluice ctl` send none. The dashboard's own requests carry this listener's
/// origin.
fn same_origin(req: &AdminRequest) -> bool {
    let Some(origin) = req.header("origin") else {
        return true;
    };
    let host = req.header("host").unwrap_or_default();
    let origin = origin.strip_prefix(b"http://").unwrap_or(b"");
    !host.is_empty() && origin == host
}

fn address_param(param: Option<String>) -> Result<SocketAddr, AdminResponse> {
    let text = param.unwrap_or_default();
    parse_addr(&text).map_err(|e| AdminResponse::error(400, &e))
}

/// The page from [`dashboard_html`]. Its policy lets it run only its own inline code and talk
/// only to this listener, and keeps it out of other sites' frames (its buttons change state).
fn dashboard_page() -> AdminResponse {
    let mut resp = AdminResponse::with_body(
        200,
        "text/html; charset=utf-8",
        dashboard_html().as_bytes().to_vec(),
    );
    resp.headers.push((
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
            .into(),
    ));
    resp.headers
        .push(("X-Content-Type-Options", "nosniff".into()));
    resp
}

fn strategy_names() -> Vec<String> {
    <StrategyKind as clap::ValueEnum>::value_variants()
        .iter()
        .map(|k| k.name().to_string())
        .collect()
}

impl Control {
    /// Answers one admin request.
    pub fn api(&mut self, req: &AdminRequest) -> AdminResponse {
        let (route, param) = match route(&req.method, &req.target) {
            Match::Found(r, p) => (r, p),
            Match::NotFound => {
                return AdminResponse::error(404, &format!("no route {}", req.target))
            }
            Match::WrongMethod(allowed) => {
                let mut resp = AdminResponse::error(
                    405,
                    &format!(
                        "{} is not allowed here; use {}",
                        req.method,
                        allowed.join(", ")
                    ),
                );
                resp.headers.push(("Allow", allowed.join(", ")));
                return resp;
            }
        };
        if route.mutates() {
            if !same_origin(req) {
                return AdminResponse::error(403, "cross-site requests may not change sluice");
            }
            if let Some(token) = &self.cfg.admin_token {
                if !token_matches(req.header("authorization"), token) {
                    let mut resp = AdminResponse::error(
                        401,
                        "this route needs Authorization: Bearer <admin token>",
                    );
                    resp.headers.push(("WWW-Authenticate", "Bearer".into()));
                    return resp;
                }
            }
        }
        let result = match route {
            Route::ListBackends => Ok(self.list_backends()),
            Route::AddBackend => self.add_backend(req),
            Route::RemoveBackend => self.remove_backend(param),
            Route::SetWeight => self.set_weight(req, param),
            Route::EnableBackend => self.set_enabled(param, true),
            Route::DisableBackend => self.set_enabled(param, false),
            Route::GetStrategy => Ok(AdminResponse::json(200, &self.strategy_view())),
            Route::SetStrategy => self.set_strategy(req),
            Route::Status => Ok(AdminResponse::json(200, &self.status_view())),
            Route::OpenApi => Ok(AdminResponse::with_body(
                200,
                "application/json",
                OPENAPI_JSON.as_bytes().to_vec(),
            )),
            Route::History => Ok(AdminResponse::json(200, &self.hub.history)),
            Route::Dashboard => Ok(dashboard_page()),
            Route::Metrics => Ok(AdminResponse::with_body(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.prometheus().into_bytes(),
            )),
        };
        result.unwrap_or_else(|resp| resp)
    }

    fn list_backends(&self) -> AdminResponse {
        let list: Vec<BackendView> = self.state.backends.iter().map(backend_view).collect();
        AdminResponse::json(200, &list)
    }

    fn view_of(&self, addr: SocketAddr) -> AdminResponse {
        match self.state.find(addr) {
            Some(i) => AdminResponse::json(200, &backend_view(&self.state.backends[i])),
            None => AdminResponse::error(404, &format!("no backend {addr}")),
        }
    }

    fn add_backend(&mut self, req: &AdminRequest) -> Result<AdminResponse, AdminResponse> {
        let body: NewBackend = json_body(req)?;
        let addr = parse_backend_addr(&body.address).map_err(|e| AdminResponse::error(400, &e))?;
        let weight = body.weight;
        if weight > MAX_WEIGHT {
            return Err(AdminResponse::error(
                400,
                &format!("weight must be between 0 and {MAX_WEIGHT}"),
            ));
        }
        self.state
            .add(addr, weight, self.now_ms)
            .map_err(change_error)?;
        log::info!("backend {addr} added (weight {weight})");
        self.mark_changed();
        let mut resp = self.view_of(addr);
        resp.status = 201;
        Ok(resp)
    }

    fn remove_backend(&mut self, param: Option<String>) -> Result<AdminResponse, AdminResponse> {
        let addr = address_param(param)?;
        self.state
            .remove(addr, self.now_ms + self.cfg.drain_timeout_ms)
            .map_err(change_error)?;
        log::info!("backend {addr} removed; draining");
        self.mark_changed();
        Ok(AdminResponse::json(
            200,
            &serde_json::json!({ "address": addr.to_string(), "draining": true }),
        ))
    }

    fn set_weight(
        &mut self,
        req: &AdminRequest,
        param: Option<String>,
    ) -> Result<AdminResponse, AdminResponse> {
        let addr = address_param(param)?;
        if self.state.find(addr).is_none() {
            return Err(AdminResponse::error(404, &format!("no backend {addr}")));
        }
        let body: WeightChange = json_body(req)?;
        self.state
            .set_weight(addr, body.weight)
            .map_err(change_error)?;
        log::info!("backend {addr} weight set to {}", body.weight);
        self.mark_changed();
        Ok(self.view_of(addr))
    }

    fn set_enabled(
        &mut self,
        param: Option<String>,
        enabled: bool,
    ) -> Result<AdminResponse, AdminResponse> {
        let addr = address_param(param)?;
        let drain_deadline = self.now_ms + self.cfg.drain_timeout_ms;
        if self
            .state
            .set_enabled(addr, enabled, self.now_ms, drain_deadline)
            .map_err(change_error)?
        {
            log::info!(
                "backend {addr} {}",
                if enabled {
                    "enabled"
                } else {
                    "disabled; draining"
                }
            );
            self.mark_changed();
        }
        Ok(self.view_of(addr))
    }

    fn set_strategy(&mut self, req: &AdminRequest) -> Result<AdminResponse, AdminResponse> {
        let body: StrategyChange = json_body(req)?;
        let kind: StrategyKind = body
            .strategy
            .parse()
            .map_err(|e: String| AdminResponse::error(400, &e))?;
        self.state.set_strategy(kind).map_err(change_error)?;
        log::info!("strategy set to {kind}");
        self.mark_changed();
        Ok(AdminResponse::json(200, &self.strategy_view()))
    }

    pub fn strategy_view(&self) -> StrategyView {
        let adaptive = self.state.strategy == StrategyKind::Adaptive;
        StrategyView {
            configured: self.state.strategy.name().to_string(),
            active: self.state.active_strategy.name().to_string(),
            reason: if adaptive {
                self.adaptive.last_reason.clone()
            } else {
                None
            },
            switches: self.counters.strategy_switches,
            available: strategy_names(),
        }
    }

    pub fn status_view(&self) -> StatusView {
        let backends = self
            .state
            .backends
            .iter()
            .map(|b| {
                let agg = self.hub.backends.get(&b.id);
                let q = agg.and_then(|a| a.latency_quantiles_us(&[0.5, 0.99]));
                BackendStatusView {
                    backend: backend_view(b),
                    in_flight: b.stats.in_flight(),
                    queued: b.stats.queued(),
                    active_connections: b.stats.conns(),
                    requests_per_s: agg.map_or(0.0, |a| a.requests_per_s()),
                    error_rate: agg.map_or(0.0, |a| a.error_rate()),
                    p50_ms: q.as_ref().map(|q| q[0] as f64 / 1000.0),
                    p99_ms: q.as_ref().map(|q| q[1] as f64 / 1000.0),
                }
            })
            .collect();
        StatusView {
            version: self.state.version(),
            installed_version: self.installed_version(),
            mode: format!("{:?}", self.settings.proxy.mode).to_lowercase(),
            strategy: self.strategy_view(),
            requests_per_s: self.hub.requests_per_s(),
            active_connections: self.hub.active_clients(),
            backends,
        }
    }
}
