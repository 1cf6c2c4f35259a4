//! The admin API's JSON shapes: what the control thread answers and accepts, and what `sluice ctl`
//! reads. Shared here so the server and its client cannot drift apart; `openapi.json` documents the
//! same shapes for everyone else.

use serde::{Deserialize, Serialize};

use crate::backend::DEFAULT_WEIGHT;

/// A backend as the API shows it. A backend given by DNS name shows the addresses of its last
/// answer, how its lookups go, and its members (one per address, and those still draining after
/// their address left the answer); each member names the name it belongs to.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct BackendView {
    pub address: String,
    pub weight: u32,
    pub enabled: bool,
    pub healthy: bool,
    pub ejected: bool,
    pub draining: bool,
    /// The configuration revision of its last change: send it back as `revision` with a change
    /// to have the change refused (409) if someone else changed the backend meanwhile.
    #[serde(default)]
    pub revision: u64,
    /// A member of a backend given by name: that name (`app.internal:8080`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A backend given by name: the addresses it stands for now (its last answer that worked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<String>>,
    /// A backend given by name: `pending` (not looked up yet), `resolved`, or `failing` (the
    /// last lookup failed; `addresses` are from the last answer that worked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup: Option<String>,
    /// Why the last lookup failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_error: Option<String>,
    /// Lookups that failed in a row, when the last one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_failures: Option<u32>,
    /// A backend given by name: its members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<BackendView>>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StrategyView {
    pub configured: String,
    pub active: String,
    pub reason: Option<String>,
    pub switches: u64,
    pub available: Vec<String>,
    /// The configuration revision of the strategy's last change.
    #[serde(default)]
    pub revision: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BackendStatusView {
    #[serde(flatten)]
    pub backend: BackendView,
    pub in_flight: u64,
    /// Requests waiting for a connection under `--backend-max-conns`.
    #[serde(default)]
    pub queued: u64,
    pub active_connections: u64,
    /// Attempts per second (in TCP mode, connection attempts).
    pub requests_per_s: f64,
    /// TCP mode: connections opened to the backend per second.
    #[serde(default)]
    pub connections_per_s: f64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// What the `bandit` strategy believes of the backend; absent under other strategies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<LearnedView>,
}

/// What `bandit` has learned of one backend: why traffic goes where it goes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LearnedView {
    /// Estimated probability that an attempt succeeds (429s are capacity, not failure).
    pub success_estimate: f64,
    /// Attempts behind the estimate (recent ones weigh more; 60 s half-life).
    pub evidence: f64,
    /// Attempts per window the backend takes before it answers 429; absent before the first 429.
    pub limit: Option<u32>,
    pub window_ms: u64,
    /// unlimited, room, full (waiting for room), probing (trying one above the limit) or
    /// backing-off (after Retry-After, a burst of 429s, or no answer).
    pub pacing: String,
    /// Left of the backoff, when backing off.
    pub backoff_ms: u64,
    /// 429s in a row with no other answer between them.
    pub refused_in_a_row: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StatusView {
    pub version: u64,
    /// The oldest version a worker routes by; equal to `version` once every worker applied the
    /// last change.
    #[serde(default)]
    pub installed_version: u64,
    /// The configuration revision the table was built from: in a cluster, the etcd revision of
    /// the last change installed (equal on every instance that installed the same changes).
    #[serde(default)]
    pub revision: u64,
    /// The cluster this instance belongs to (`--cluster-name`), if it runs in one.
    #[serde(default)]
    pub cluster: Option<String>,
    pub mode: String,
    pub strategy: StrategyView,
    /// Responses to clients per second.
    pub requests_per_s: f64,
    /// Client connections accepted per second.
    #[serde(default)]
    pub connections_per_s: f64,
    /// Client connections open now.
    pub active_connections: u64,
    /// The seconds that rates and error rates average over.
    #[serde(default)]
    pub rate_window_s: u64,
    pub backends: Vec<BackendStatusView>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewBackend {
    pub address: String,
    /// Absent means the default; `null` is refused like any other non-integer.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Add a name that does not resolve (yet): it serves nothing until it does. Without it such
    /// a name is refused with 422.
    #[serde(default)]
    pub allow_unresolved: bool,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeightChange {
    pub weight: u32,
    /// Refuse (409) unless the backend is still at this revision.
    #[serde(default)]
    pub revision: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StrategyChange {
    pub strategy: String,
    /// Refuse (409) unless the strategy is still at this revision.
    #[serde(default)]
    pub revision: Option<u64>,
}

/// `GET /api/cluster`: this instance and the members it sees.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub name: String,
    /// This instance's id.
    pub instance: String,
    /// Whether the configuration store answers.
    pub store_up: bool,
    /// The configuration revision this instance has installed.
    pub revision: u64,
    pub members: Vec<MemberView>,
}

/// A member as its registration in the store says.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MemberView {
    pub id: String,
    pub proxy: String,
    pub admin: Option<String>,
    pub version: String,
    pub started_unix_ms: u64,
    /// The configuration revision it has installed.
    pub revision: u64,
}

/// `GET /api/tls`: the certificates the listener serves, in `--tls` order.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TlsView {
    /// Whether the listener speaks TLS (any `--tls` given).
    pub enabled: bool,
    /// Seconds since the Unix epoch when the certificates in use were loaded (at start or by the
    /// last successful reload); 0 when TLS is off.
    #[serde(default)]
    pub loaded_unix_s: u64,
    /// Successful reloads since start.
    #[serde(default)]
    pub reloads: u64,
    pub certificates: Vec<CertView>,
}

/// One certificate chain, as its leaf says.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CertView {
    /// The certificate file given to `--tls`.
    pub file: String,
    /// The DNS names it is chosen for by SNI (subject alternative names, wildcards as written).
    pub names: Vec<String>,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The end of its validity, in seconds since the Unix epoch.
    pub not_after_unix_s: i64,
    /// Whole days until `not_after_unix_s` (negative once past).
    pub days_left: i64,
    /// Served to clients without SNI or with a name no certificate has (the first `--tls`).
    pub default: bool,
}
