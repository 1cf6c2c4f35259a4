//! The simulator's control API: JSON over HTTP/1.1 on the control port, so tests, benchmarks
//! and the challenge client can read the ledger and server state and inject faults.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /score` | [`Score`](crate::sim::Score): ledger totals, score, oracle bound (`?ids_per_s=R`: the oracle at the rate the client sent, which the ledger undercounts when a balancer answers ids itself) |
//! | `GET /servers` | a list of [`ServerReport`](crate::sim::ServerReport) |
//! | `GET /servers/{index-or-port}` | one `ServerReport` |
//! | `POST /servers/{index-or-port}` | apply a [`ServerPatch`](crate::sim::ServerPatch) body, answer the new `ServerReport` |
//! | `POST /reset` | clear the ledger and every server's counters |
//! | `POST /ledger/lookup` | `{"ids":[...]}` → `{"entries":{"<id>":{"attempts":n,"accepted":b}}}` |
//! | `GET /health` | `{"ok":true}` |
//!
//! `{index-or-port}` is an index when it is below the number of servers, a port otherwise.
//! Errors are 4xx with `{"error":"..."}`.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::h1::{Method, Request};
use crate::id::{id_str, parse_id};
use crate::sim::ledger::Entry;
use crate::sim::{ServerPatch, Shared, SimError};

/// Body of `POST /ledger/lookup`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LookupRequest {
    pub ids: Vec<String>,
}

/// Answer of `POST /ledger/lookup`; ids never seen have zero attempts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LookupResponse {
    pub entries: BTreeMap<String, Entry>,
}

pub(crate) fn route(shared: &Shared, req: &Request) -> (u16, Vec<u8>) {
    let path = req.path.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let now = Instant::now();
    match (req.method, segments.as_slice()) {
        (Method::Get, ["score"]) => match offered_rate(&req.path) {
            Ok(rate) => json(200, &shared.score(now, rate)),
            Err(e) => error(400, &e),
        },
        (Method::Get, ["servers"]) => json(200, &shared.reports(now)),
        (Method::Get, ["servers", selector]) => match shared.find(selector) {
            Some(index) => json(200, &shared.report(index, now)),
            None => error(
                404,
                &SimError::UnknownServer(selector.to_string()).to_string(),
            ),
        },
        (Method::Post, ["servers", selector]) => {
            let patch: ServerPatch = match serde_json::from_slice(&req.body) {
                Ok(p) => p,
                Err(e) => return error(400, &format!("invalid patch: {e}")),
            };
            let Some(index) = shared.find(selector) else {
                return error(
                    404,
                    &SimError::UnknownServer(selector.to_string()).to_string(),
                );
            };
            match shared.patch(index, &patch, now) {
                Ok(report) => json(200, &report),
                Err(e @ SimError::UnknownServer(_)) => error(404, &e.to_string()),
                Err(e) => error(400, &e.to_string()),
            }
        }
        (Method::Post, ["reset"]) => {
            shared.reset();
            json(200, &serde_json::json!({ "reset": true }))
        }
        (Method::Post, ["ledger", "lookup"]) => lookup(shared, &req.body),
        (Method::Get | Method::Head, ["health"]) => json(200, &serde_json::json!({ "ok": true })),
        (Method::Get, []) => json(
            200,
            &serde_json::json!({
                "routes": [
                    "GET /score", "GET /servers", "GET /servers/{index-or-port}",
                    "POST /servers/{index-or-port}", "POST /reset", "POST /ledger/lookup",
                    "GET /health"
                ]
            }),
        ),
        (_, ["score" | "servers" | "reset" | "health"] | ["servers" | "ledger", _]) => {
            error(405, &format!("method not allowed on {path}"))
        }
        _ => error(404, &format!("no route {path}; GET / lists the routes")),
    }
}

fn lookup(shared: &Shared, body: &[u8]) -> (u16, Vec<u8>) {
    let request: LookupRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(400, &format!("expected {{\"ids\":[...]}}: {e}")),
    };
    let mut ids = Vec::with_capacity(request.ids.len());
    for text in &request.ids {
        match parse_id(text) {
            Some(id) => ids.push(id),
            None => {
                return error(
                    400,
                    &format!("not a 24-character alphanumeric id: {text:?}"),
                )
            }
        }
    }
    let entries = shared.lookup(&ids);
    let response = LookupResponse {
        entries: ids
            .iter()
            .zip(entries)
            .map(|(id, e)| (id_str(id).to_string(), e.unwrap_or_default()))
            .collect(),
    };
    json(200, &response)
}

fn json<T: Serialize>(status: u16, value: &T) -> (u16, Vec<u8>) {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            (status, body)
        }
        Err(e) => error(500, &format!("serialising the answer: {e}")),
    }
}

fn error(status: u16, message: &str) -> (u16, Vec<u8>) {
    let mut body = serde_json::json!({ "error": message })
        .to_string()
        .into_bytes();
    body.push(b'\n');
    (status, body)
}

/// The `ids_per_s` query parameter of `GET /score`, if any: a positive number.
fn offered_rate(path: &str) -> Result<Option<f64>, String> {
    let Some((_, query)) = path.split_once('?') else {
        return Ok(None);
    };
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("ids_per_s=") {
            return match v.parse::<f64>() {
                Ok(r) if r > 0.0 && r.is_finite() => Ok(Some(r)),
                _ => Err(format!("ids_per_s must be a positive number, not {v:?}")),
            };
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_takes_the_rate_the_client_sent() {
        assert_eq!(offered_rate("/score"), Ok(None));
        assert_eq!(offered_rate("/score?ids_per_s=30"), Ok(Some(30.0)));
        assert_eq!(offered_rate("/score?x=1&ids_per_s=2.5"), Ok(Some(2.5)));
        assert!(offered_rate("/score?ids_per_s=0").is_err());
        assert!(offered_rate("/score?ids_per_s=fast").is_err());
    }
}
