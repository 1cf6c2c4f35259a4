//! A blocking client of etcd's v3 JSON gateway (HTTP/1.1, the API every etcd 3.4 serves next to
//! gRPC): ranges, transactions, leases and watches. Keys and values travel base64-encoded and
//! 64-bit numbers as JSON strings, as the gateway's protobuf mapping has them.
//!
//! It runs only on the store's own threads (never the control loop or a worker), so blocking I/O
//! is fine here. Every call has a deadline; a call that fails on one endpoint (refused, timed out,
//! or answered by a member without a leader) is tried on the next, and the endpoint that worked
//! is used first from then on.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

/// Connecting to one endpoint may take this long before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// A unary call (range, txn, lease) on one endpoint may take this long.
const CALL_TIMEOUT: Duration = Duration::from_millis(2_000);
/// A watch that delivers nothing this long is reopened (resuming where it was), so a member that
/// hangs without closing the connection is noticed and another one used.
pub(crate) const WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest watch message accepted (etcd caps a request at 1.5 MiB; a batch of events may be
/// several of them).
const MAX_WATCH_LINE_BYTES: u64 = 64 << 20;

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum EtcdError {
    /// No endpoint answered usefully (unreachable, timed out, no leader).
    Unavailable(String),
    /// etcd answered, but not with what the protocol promises.
    Protocol(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unavailable(m) => write!(f, "etcd unavailable: {m}"),
            EtcdError::Protocol(m) => write!(f, "unexpected answer from etcd: {m}"),
        }
    }
}

/// One key and its value as etcd stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: u64,
}

/// One change a watch reported: a put (`value` is `Some`) or a delete, at `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WatchEvent {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub revision: u64,
}

/// A whole prefix read at one revision.
#[derive(Debug, Clone, Default)]
pub(crate) struct Range {
    pub revision: u64,
    pub kvs: Vec<KeyValue>,
}

/// One operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: u64,
    },
    Delete {
        key: String,
    },
    /// A read of one key (or, with `prefix`, every key under it).
    Get {
        key: String,
        prefix: bool,
    },
}

/// A condition a transaction checks before it runs its success branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Compare {
    /// The key was last changed at this revision (0: the key does not exist).
    ModRevision { key: String, revision: u64 },
    /// No key under this prefix exists.
    Empty { prefix: String },
}

/// What a transaction did.
#[derive(Debug, Clone, Default)]
pub(crate) struct TxnResult {
    pub succeeded: bool,
    /// The store's revision after it: the commit revision when it succeeded and wrote.
    pub revision: u64,
    /// The keys the branch that ran read, in order.
    pub kvs: Vec<KeyValue>,
}

/// What reading a watch stream yields.
#[derive(Debug)]
pub(crate) enum WatchMessage {
    /// Changes, in revision order.
    Events(Vec<WatchEvent>),
    /// The revision asked for was compacted away: read everything again.
    Compacted(u64),
    /// etcd ended the watch for another reason (for instance its member lost the leader).
    Canceled(String),
}

/// The client: endpoints in the order to try them.
pub(crate) struct Etcd {
    endpoints: Vec<String>,
    current: usize,
    agent: ureq::Agent,
}

pub(crate) fn encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn decode(v: &Value) -> Result<Vec<u8>, EtcdError> {
    match v.as_str() {
        None => Ok(Vec::new()),
        Some(s) => B64
            .decode(s)
            .map_err(|e| EtcdError::Protocol(format!("bad base64: {e}"))),
    }
}

/// A 64-bit number the gateway sends as a string (absent when zero).
fn number(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The end of the key range holding every key that starts with `prefix` (etcd's "prefix end":
/// the prefix with its last byte that is not 0xff incremented).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn kv_of(v: &Value) -> Result<KeyValue, EtcdError> {
    let key = String::from_utf8(decode(&v["key"])?)
        .map_err(|_| EtcdError::Protocol("a key is not UTF-8".into()))?;
    Ok(KeyValue {
        key,
        value: decode(&v["value"])?,
        mod_revision: number(&v["mod_revision"]),
    })
}

fn kvs_of(v: &Value) -> Result<Vec<KeyValue>, EtcdError> {
    match v["kvs"].as_array() {
        None => Ok(Vec::new()),
        Some(list) => list.iter().map(kv_of).collect(),
    }
}

fn op_json(op: &Op) -> Value {
    match op {
        Op::Put { key, value, lease } => {
            let mut put = json!({ "key": encode(key.as_bytes()), "value": encode(value) });
            if *lease != 0 {
                put["lease"] = json!(lease.to_string());
            }
            json!({ "request_put": put })
        }
        Op::Delete { key } => json!({ "request_delete_range": { "key": encode(key.as_bytes()) } }),
        Op::Get { key, prefix } => {
            let mut get = json!({ "key": encode(key.as_bytes()) });
            if *prefix {
                get["range_end"] = json!(encode(&prefix_end(key)));
            }
            json!({ "request_range": get })
        }
    }
}

fn compare_json(c: &Compare) -> Value {
    match c {
        Compare::ModRevision { key, revision } => json!({
            "key": encode(key.as_bytes()),
            "target": "MOD",
            "result": "EQUAL",
            "mod_revision": revision.to_string(),
        }),
        // Over a range with no keys etcd compares against an absent key, whose create revision
        // is 0; over keys that exist, every one must match, and none has create revision 0.
        Compare::Empty { prefix } => json!({
            "key": encode(prefix.as_bytes()),
            "range_end": encode(&prefix_end(prefix)),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": "0",
        }),
    }
}

impl Etcd {
    pub(crate) fn new(endpoints: Vec<String>) -> Etcd {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .max_idle_connections_per_host(4)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Etcd {
            endpoints,
            current: 0,
            agent,
        }
    }

    /// The endpoint calls go to first.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoints[self.current % self.endpoints.len()]
    }

    /// Moves on to the next endpoint (after a failure the caller noticed itself).
    pub(crate) fn rotate(&mut self) {
        self.current = (self.current + 1) % self.endpoints.len();
    }

    /// POSTs `body` to `path` on each endpoint in turn until one answers 200.
    fn call(&mut self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let text = body.to_string();
        let mut last = String::new();
        for _ in 0..self.endpoints.len() {
            let url = format!("{}{path}", self.endpoint());
            match self.call_one(&url, &text) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    log::debug!("etcd {url}: {e}");
                    last = format!("{}: {e}", self.endpoint());
                    self.rotate();
                }
            }
        }
        Err(EtcdError::Unavailable(last))
    }

    fn call_one(&self, url: &str, body: &str) -> Result<Value, String> {
        let mut resp = self
            .agent
            .post(url)
            .config()
            .timeout_global(Some(CALL_TIMEOUT))
            .build()
            .content_type("application/json")
            .send(body)
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_str(&text).map_err(|e| format!("bad JSON: {e}"))?;
        if status != 200 {
            // The gateway's error body: {"error": "...", "message": "...", "code": N}.
            let msg = value["message"].as_str().unwrap_or(text.trim());
            return Err(format!("HTTP {status}: {msg}"));
        }
        Ok(value)
    }

    /// Every key under `prefix`, at one revision (linearizable: what a majority agreed on).
    pub(crate) fn range(&mut self, prefix: &str) -> Result<Range, EtcdError> {
        let body = json!({
            "key": encode(prefix.as_bytes()),
            "range_end": encode(&prefix_end(prefix)),
        });
        let v = self.call("/v3/kv/range", &body)?;
        Ok(Range {
            revision: number(&v["header"]["revision"]),
            kvs: kvs_of(&v)?,
        })
    }

    /// One key, read linearizably (so it fails without a quorum); `None` when absent.
    pub(crate) fn get(&mut self, key: &str) -> Result<Option<KeyValue>, EtcdError> {
        let v = self.call("/v3/kv/range", &json!({ "key": encode(key.as_bytes()) }))?;
        Ok(kvs_of(&v)?.into_iter().next())
    }

    /// Runs `success` if every comparison holds, else `failure`, atomically.
    pub(crate) fn txn(
        &mut self,
        compare: &[Compare],
        success: &[Op],
        failure: &[Op],
    ) -> Result<TxnResult, EtcdError> {
        let body = json!({
            "compare": compare.iter().map(compare_json).collect::<Vec<_>>(),
            "success": success.iter().map(op_json).collect::<Vec<_>>(),
            "failure": failure.iter().map(op_json).collect::<Vec<_>>(),
        });
        let v = self.call("/v3/kv/txn", &body)?;
        let mut kvs = Vec::new();
        if let Some(responses) = v["responses"].as_array() {
            for r in responses {
                kvs.extend(kvs_of(&r["response_range"])?);
            }
        }
        Ok(TxnResult {
            succeeded: v["succeeded"].as_bool().unwrap_or(false),
            revision: number(&v["header"]["revision"]),
            kvs,
        })
    }

    /// A new lease of `ttl_s` seconds; returns its id.
    pub(crate) fn lease_grant(&mut self, ttl_s: u64) -> Result<u64, EtcdError> {
        let v = self.call("/v3/lease/grant", &json!({ "TTL": ttl_s.to_string() }))?;
        match number(&v["ID"]) {
            0 => Err(EtcdError::Protocol(format!(
                "lease grant without an id: {v}"
            ))),
            id => Ok(id),
        }
    }

    /// Renews a lease; false when it has expired already (it must be granted anew).
    pub(crate) fn lease_keepalive(&mut self, id: u64) -> Result<bool, EtcdError> {
        let v = self.call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))?;
        Ok(number(&v["result"]["TTL"]) > 0)
    }

    /// Ends a lease now, deleting the keys attached to it.
    pub(crate) fn lease_revoke(&mut self, id: u64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({ "ID": id.to_string() }))
            .map(|_| ())
    }

    /// Opens a watch of every key under `prefix` from revision `from` on the current endpoint.
    /// It fails over no further: the caller reopens after a failure (calling [`Etcd::rotate`]).
    pub(crate) fn watch(&mut self, prefix: &str, from: u64) -> Result<WatchStream, EtcdError> {
        let body = json!({ "create_request": {
            "key": encode(prefix.as_bytes()),
            "range_end": encode(&prefix_end(prefix)),
            "start_revision": from.to_string(),
        }});
        let url = format!("{}/v3/watch", self.endpoint());
        let resp = self
            .agent
            .post(&url)
            .config()
            .timeout_recv_response(Some(CALL_TIMEOUT))
            .timeout_per_read(Some(WATCH_IDLE_TIMEOUT))
            .build()
            // Ask the member to end the watch when it loses its leader, instead of going quiet
            // while the rest of the cluster moves on (etcd's WithRequireLeader).
            .header("Grpc-Metadata-hasleader", "true")
            .content_type("application/json")
            .send(body.to_string())
            .map_err(|e| EtcdError::Unavailable(format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(EtcdError::Unavailable(format!("{url}: HTTP {status}")));
        }
        let reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
        Ok(WatchStream {
            lines: BufReader::new(Box::new(reader)),
        })
    }
}

/// An open watch: one JSON message per line.
pub(crate) struct WatchStream {
    lines: BufReader<Box<dyn Read + Send>>,
}

impl WatchStream {
    /// The next message with news; `Err` when the stream ended, failed or went quiet for
    /// [`WATCH_IDLE_TIMEOUT`].
    pub(crate) fn read(&mut self) -> Result<WatchMessage, EtcdError> {
        loop {
            let mut line = Vec::new();
            let n = (&mut self.lines)
                .take(MAX_WATCH_LINE_BYTES)
                .read_until(b'\n', &mut line)
                .map_err(|e| EtcdError::Unavailable(format!("watch: {e}")))?;
            if n == 0 {
                return Err(EtcdError::Unavailable("watch stream ended".into()));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Value = serde_json::from_slice(&line)
                .map_err(|e| EtcdError::Protocol(format!("watch message: {e}")))?;
            if let Some(m) = parse_watch_message(&v)? {
                return Ok(m);
            }
        }
    }
}

/// Reads one message of the watch stream; `None` for ones without news (created, progress).
pub(crate) fn parse_watch_message(v: &Value) -> Result<Option<WatchMessage>, EtcdError> {
    if let Some(err) = v.get("error") {
        let msg = err["message"].as_str().unwrap_or("watch failed");
        return Ok(Some(WatchMessage::Canceled(msg.to_string())));
    }
    let r = &v["result"];
    let compacted = number(&r["compact_revision"]);
    if compacted > 0 {
        return Ok(Some(WatchMessage::Compacted(compacted)));
    }
    if r["canceled"].as_bool().unwrap_or(false) {
        let reason = r["cancel_reason"].as_str().unwrap_or("canceled by etcd");
        return Ok(Some(WatchMessage::Canceled(reason.to_string())));
    }
    let Some(events) = r["events"].as_array() else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let kv = kv_of(&e["kv"])?;
        let delete = e["type"].as_str() == Some("DELETE");
        out.push(WatchEvent {
            key: kv.key,
            value: if delete { None } else { Some(kv.value) },
            revision: kv.mod_revision,
        });
    }
    Ok(Some(WatchMessage::Events(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end("/sluice/a/"), b"/sluice/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn watch_messages_as_etcd_3_4_sends_them() {
        let created = json!({"result": {"header": {"revision": "3"}, "created": true}});
        assert!(parse_watch_message(&created).unwrap().is_none());
        let events = json!({"result": {"header": {"revision": "5"}, "events": [
            {"kv": {"key": "L2E=", "create_revision": "4", "mod_revision": "4", "version": "1", "value": "dg=="}},
            {"type": "DELETE", "kv": {"key": "L2E=", "mod_revision": "5"}}
        ]}});
        match parse_watch_message(&events).unwrap() {
            Some(WatchMessage::Events(list)) => assert_eq!(
                list,
                vec![
                    WatchEvent {
                        key: "/a".into(),
                        value: Some(b"v".to_vec()),
                        revision: 4
                    },
                    WatchEvent {
                        key: "/a".into(),
                        value: None,
                        revision: 5
                    },
                ]
            ),
            other => panic!("{other:?}"),
        }
        let compacted =
            json!({"result": {"header": {}, "canceled": true, "compact_revision": "4"}});
        assert!(matches!(
            parse_watch_message(&compacted).unwrap(),
            Some(WatchMessage::Compacted(4))
        ));
        let canceled = json!({"result": {"canceled": true, "cancel_reason": "no leader"}});
        assert!(matches!(
            parse_watch_message(&canceled).unwrap(),
            Some(WatchMessage::Canceled(r)) if r == "no leader"
        ));
    }
}
