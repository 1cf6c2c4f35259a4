//! The admin API's handlers: each route of [`crate::admin::routes::ROUTES`] against the control
//! state. Every mutation is checked, saved, applied and published before the answer goes out.

use super::state::{BackendEntry, ChangeError, ControlState, LookupState};
use super::store::{Change, Record};
use super::Control;
use crate::admin::routes::{dashboard_html, route, Match, Route, OPENAPI_JSON};
use crate::admin::schema::{
    BackendStatusView, BackendView, LearnedView, NewBackend, StatusView, StrategyChange,
    StrategyView, WeightChange,
};
use crate::admin::{token_matches, AdminRequest, AdminResponse, Reply};
use crate::backend::learn::{Belief, Pacing};
use crate::backend::{parse_backend_addr, BackendAddr, MAX_WEIGHT};
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
        revision: b.revision,
        name: b.name.as_ref().map(BackendAddr::to_string),
        ..BackendView::default()
    }
}

/// A backend given by name as the API shows it: healthy while one of its members is.
fn name_view(state: &ControlState, i: usize) -> BackendView {
    let n = &state.names[i];
    let members: Vec<BackendView> = state.members(i).map(backend_view).collect();
    let (lookup, error, failures) = match &n.lookup {
        LookupState::Pending => ("pending", None, None),
        LookupState::Resolved => ("resolved", None, None),
        LookupState::Failing { error, failures } => {
            ("failing", Some(error.clone()), Some(*failures))
        }
    };
    BackendView {
        address: n.addr.to_string(),
        weight: n.weight,
        enabled: n.enabled,
        healthy: members.iter().any(|m| m.healthy && !m.draining),
        ejected: false,
        draining: false,
        revision: n.revision,
        name: None,
        addresses: Some(n.answer.iter().map(|a| a.to_string()).collect()),
        lookup: Some(lookup.into()),
        lookup_error: error,
        lookup_failures: failures,
        members: Some(members),
    }
}

pub(crate) fn change_error(e: ChangeError) -> AdminResponse {
    if e == ChangeError::Unconfirmed {
        return AdminResponse::json(
            503,
            &serde_json::json!({
                "error": e.to_string(),
                "detail": "the store lost its quorum before it confirmed the change: it may \
                           still be applied when the store recovers (see GET /api/backends)",
            }),
        );
    }
    let status = match e {
        ChangeError::NotFound(_) => 404,
        ChangeError::Duplicate(_) | ChangeError::Conflict(_) => 409,
        ChangeError::Invalid(_) => 400,
        ChangeError::Storage(_) => 500,
        ChangeError::Unavailable | ChangeError::Unconfirmed => 503,
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

fn address_param(param: Option<String>) -> Result<BackendAddr, AdminResponse> {
    let text = param.unwrap_or_default();
    parse_backend_addr(&text).map_err(|e| AdminResponse::error(400, &e))
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

/// The addition a `POST /api/backends` asks for, and whether a name may not resolve.
fn add_backend(req: &AdminRequest) -> Result<(Change, bool), AdminResponse> {
    let body: NewBackend = json_body(req)?;
    let addr = parse_backend_addr(&body.address).map_err(|e| AdminResponse::error(400, &e))?;
    if body.weight > MAX_WEIGHT {
        return Err(AdminResponse::error(
            400,
            &format!("weight must be between 0 and {MAX_WEIGHT}"),
        ));
    }
    let change = Change::Add {
        addr,
        weight: body.weight,
    };
    Ok((change, body.allow_unresolved))
}

fn set_strategy(req: &AdminRequest) -> Result<Change, AdminResponse> {
    let body: StrategyChange = json_body(req)?;
    let strategy: StrategyKind = body
        .strategy
        .parse()
        .map_err(|e: String| AdminResponse::error(400, &e))?;
    Ok(Change::SetStrategy {
        strategy,
        expect: body.revision,
    })
}

impl Control {
    /// Answers one admin request, or (a change in a cluster) takes a ticket for the answer that
    /// comes once the store committed it and this instance installed it.
    pub(crate) fn api(&mut self, req: &AdminRequest) -> Reply {
        let (route, param) = match route(&req.method, &req.target) {
            Match::Found(r, p) => (r, p),
            Match::NotFound => {
                return Reply::Now(AdminResponse::error(
                    404,
                    &format!("no route {}", req.target),
                ))
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
                return Reply::Now(resp);
            }
        };
        if route.mutates() {
            if !same_origin(req) {
                return Reply::Now(AdminResponse::error(
                    403,
                    "cross-site requests may not change sluice",
                ));
            }
            if let Some(token) = &self.cfg.admin_token {
                if !token_matches(req.header("authorization"), token) {
                    let mut resp = AdminResponse::error(
                        401,
                        "this route needs Authorization: Bearer <admin token>",
                    );
                    resp.headers.push(("WWW-Authenticate", "Bearer".into()));
                    return Reply::Now(resp);
                }
            }
        }
        let change = match route {
            Route::AddBackend => match add_backend(req) {
                // A name is looked up first (on the resolver thread); the answer waits for it.
                Ok((change, allow)) if matches!(&change, Change::Add { addr, .. } if addr.is_name()) => {
                    return self.add_name(change, allow)
                }
                other => other.map(|(change, _)| change),
            },
            Route::RemoveBackend => address_param(param).map(|addr| Change::Remove { addr }),
            Route::SetWeight => self.set_weight(req, param),
            Route::EnableBackend | Route::DisableBackend => {
                address_param(param).map(|addr| Change::SetEnabled {
                    addr,
                    enabled: route == Route::EnableBackend,
                })
            }
            Route::SetStrategy => set_strategy(req),
            Route::TlsReload => return Reply::Now(self.reload_tls_api()),
            Route::ReopenLog => return Reply::Now(self.reopen_log()),
            _ => return Reply::Now(self.read_only(route)),
        };
        match change {
            Err(resp) => Reply::Now(resp),
            Ok(change) if self.cluster.is_some() => self.cluster_change(change),
            Ok(change) => Reply::Now(match self.apply_local(&change) {
                Ok((revision, record)) => self.committed_response(&change, revision, record),
                Err(e) => change_error(e),
            }),
        }
    }

    fn read_only(&self, route: Route) -> AdminResponse {
        match route {
            Route::ListBackends => self.list_backends(),
            Route::GetStrategy => AdminResponse::json(200, &self.strategy_view()),
            Route::Status => AdminResponse::json(200, &self.status_view()),
            Route::Cluster => match self.cluster_view() {
                Some(view) => AdminResponse::json(200, &view),
                None => AdminResponse::error(
                    404,
                    "not running as a cluster (start sluice with --cluster-store)",
                ),
            },
            Route::OpenApi => {
                AdminResponse::with_body(200, "application/json", OPENAPI_JSON.as_bytes().to_vec())
            }
            Route::History => AdminResponse::json(200, &self.hub.history),
            Route::Tls => AdminResponse::json(200, &self.tls_view()),
            Route::AccessLog => self.log_view(),
            Route::Clients => self.clients_view(),
            Route::Dashboard => dashboard_page(),
            Route::Metrics => AdminResponse::with_body(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.prometheus().into_bytes(),
            ),
            _ => AdminResponse::error(500, "route has no handler"),
        }
    }

    /// Every backend as configured: addresses (and removed ones still draining), then names
    /// with their members (the members of a removed name, while they drain, stand alone).
    fn list_backends(&self) -> AdminResponse {
        let s = &self.state;
        let own = |b: &&BackendEntry| b.name.as_ref().is_none_or(|n| s.find_name(n).is_none());
        let list: Vec<BackendView> = s
            .backends
            .iter()
            .filter(own)
            .map(backend_view)
            .chain((0..s.names.len()).map(|i| name_view(s, i)))
            .collect();
        AdminResponse::json(200, &list)
    }

    fn set_weight(
        &self,
        req: &AdminRequest,
        param: Option<String>,
    ) -> Result<Change, AdminResponse> {
        let addr = address_param(param)?;
        // Alone, this instance knows every backend; in a cluster the store decides.
        let known = self.state.find(&addr).is_some() || self.state.find_name(&addr).is_some();
        if self.cluster.is_none() && !known {
            return Err(AdminResponse::error(404, &format!("no backend {addr}")));
        }
        let body: WeightChange = json_body(req)?;
        Ok(Change::SetWeight {
            addr,
            weight: body.weight,
            expect: body.revision,
        })
    }

    /// Applies a change to this instance's own configuration (no cluster): saved to the state
    /// file first, then in force. Returns the revision it made and the record it left.
    pub(crate) fn apply_local(&mut self, change: &Change) -> Result<(u64, Record), ChangeError> {
        let now = self.now_ms;
        let deadline = now + self.cfg.drain_timeout_ms;
        fn entry<'c>(c: &'c Control, addr: &BackendAddr) -> Option<&'c BackendEntry> {
            c.state.find(addr).map(|i| &c.state.backends[i])
        }
        let stale = |what: String, expect: u64, now: u64| {
            ChangeError::Conflict(format!(
                "{what} changed at revision {now} after revision {expect} that you read; \
                 read it again and retry"
            ))
        };
        match change {
            &Change::Add { ref addr, weight } => {
                self.state.add(addr, weight, now)?;
                log::info!("backend {addr} added (weight {weight})");
            }
            Change::Remove { addr } => {
                self.state.remove(addr, deadline)?;
                log::info!("backend {addr} removed; draining");
                self.mark_changed();
                return Ok((self.state.revision(), Record::Removed(addr.clone())));
            }
            &Change::SetWeight {
                ref addr,
                weight,
                expect,
            } => {
                let named = self
                    .state
                    .find_name(addr)
                    .map(|i| self.state.names[i].revision);
                let at = named.or(entry(self, addr).map(|e| e.revision)).unwrap_or(0);
                if let Some(e) = expect.filter(|&e| e != at) {
                    return Err(stale(format!("backend {addr}"), e, at));
                }
                self.state.set_weight(addr, weight)?;
                log::info!("backend {addr} weight set to {weight}");
            }
            &Change::SetEnabled { ref addr, enabled } => {
                if self.state.set_enabled(addr, enabled, now, deadline)? {
                    let what = if enabled {
                        "enabled"
                    } else {
                        "disabled; draining"
                    };
                    log::info!("backend {addr} {what}");
                    self.mark_changed();
                }
            }
            &Change::SetStrategy { strategy, expect } => {
                let at = self.state.strategy_revision;
                if let Some(e) = expect.filter(|&e| e != at) {
                    return Err(stale("the strategy".into(), e, at));
                }
                self.state.set_strategy(strategy)?;
                log::info!("strategy set to {strategy}");
                self.mark_changed();
                let record = super::store::StrategyRecord::new(strategy, self.state.params);
                return Ok((self.state.strategy_revision, Record::Strategy(record)));
            }
        }
        if !matches!(change, Change::SetEnabled { .. }) {
            self.mark_changed();
        }
        let (Change::Add { addr, .. }
        | Change::SetWeight { addr, .. }
        | Change::SetEnabled { addr, .. }) = change
        else {
            return Err(ChangeError::Invalid("unexpected change".into()));
        };
        if let Some(n) = self.state.find_name(addr).map(|i| &self.state.names[i]) {
            return Ok((n.revision, Record::Backend(n.saved())));
        }
        match entry(self, addr) {
            Some(e) => Ok((
                e.revision,
                Record::Backend(super::state::SavedBackend {
                    address: e.addr.clone(),
                    weight: e.weight,
                    enabled: e.enabled,
                }),
            )),
            None => Err(ChangeError::NotFound(format!("no backend {addr}"))),
        }
    }

    /// The answer to a change that is in force: what it left, with this instance's own
    /// knowledge (health, ejection) of a backend.
    pub(crate) fn committed_response(
        &self,
        change: &Change,
        revision: u64,
        record: Record,
    ) -> AdminResponse {
        match record {
            Record::Backend(b) => {
                let local = self.state.find(&b.address).map(|i| &self.state.backends[i]);
                let mut view = match self.state.find_name(&b.address) {
                    Some(i) => name_view(&self.state, i),
                    None => BackendView {
                        healthy: local.is_none_or(|e| e.health.healthy),
                        ejected: local.is_some_and(BackendEntry::is_ejected),
                        ..BackendView::default()
                    },
                };
                view.address = b.address.to_string();
                view.weight = b.weight;
                view.enabled = b.enabled;
                view.draining = false;
                view.revision = revision;
                let status = if matches!(change, Change::Add { .. }) {
                    201
                } else {
                    200
                };
                AdminResponse::json(status, &view)
            }
            Record::Removed(addr) => AdminResponse::json(
                200,
                &serde_json::json!({
                    "address": addr.to_string(),
                    "draining": true,
                    "revision": revision,
                }),
            ),
            Record::Strategy(s) => {
                let mut view = self.strategy_view();
                view.configured = s.strategy.name().to_string();
                view.revision = revision;
                AdminResponse::json(200, &view)
            }
        }
    }

    pub(crate) fn strategy_view(&self) -> StrategyView {
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
            revision: self.state.strategy_revision,
        }
    }

    pub(crate) fn status_view(&self) -> StatusView {
        let bandit = self.state.active_strategy == StrategyKind::Bandit;
        let now_ms = crate::clock::now_ms();
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
                    connections_per_s: agg.map_or(0.0, |a| a.tunnels_per_s()),
                    error_rate: agg.map_or(0.0, |a| a.error_rate()),
                    p50_ms: q.as_ref().map(|q| q[0] as f64 / 1000.0),
                    p99_ms: q.as_ref().map(|q| q[1] as f64 / 1000.0),
                    learned: bandit.then(|| learned_view(b.stats.learned.belief(now_ms))),
                }
            })
            .collect();
        StatusView {
            version: self.state.version(),
            installed_version: self.installed_version(),
            revision: self.state.revision(),
            cluster: self.cluster.as_ref().map(|c| c.cfg.name.clone()),
            mode: format!("{:?}", self.settings.proxy.mode).to_lowercase(),
            strategy: self.strategy_view(),
            requests_per_s: self.hub.requests_per_s(),
            connections_per_s: self.hub.connections_per_s(),
            active_connections: self.hub.active_clients(),
            rate_window_s: crate::metrics::RATE_WINDOW_S as u64,
            backends,
        }
    }
}

/// The API's view of what `bandit` believes of a backend.
fn learned_view(b: Belief) -> LearnedView {
    LearnedView {
        success_estimate: b.success_estimate,
        evidence: b.evidence,
        limit: b.limit_per_window,
        window_ms: b.window_ms,
        pacing: match b.pacing {
            Pacing::Unlimited => "unlimited",
            Pacing::Room => "room",
            Pacing::Full => "full",
            Pacing::Probing => "probing",
            Pacing::BackingOff => "backing-off",
        }
        .to_string(),
        backoff_ms: b.backoff_ms,
        refused_in_a_row: b.refused_in_a_row,
    }
}
