//! Backends given by name (`app.internal:8080`): a thread of its own looks the names up and hands
//! each answer to the control thread, which turns every address in it into a member and drains the
//! members whose address left the answer. Lookups block, so they never run on a worker or on the
//! control loop.
//!
//! Without `--dns-server` a name goes through the system's resolver (`getaddrinfo`: /etc/hosts,
//! then DNS), which gives no time to live: it is looked up again every `--resolve-interval`. With
//! `--dns-server ADDR`, the thread asks that server itself, an `A` and an `AAAA` question over UDP
//! (RFC 1035 section 4.2.1; messages built and read with `simple-dns`), and looks again after the
//! answer's smallest TTL, within [`MIN_REFRESH_MS`] and `--resolve-interval`. A failed lookup is
//! tried again on the schedule the last answer set (the interval before any answer).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, RCODE, TYPE};

/// A name is never looked up more often than this, whatever its TTL.
pub(crate) const MIN_REFRESH_MS: u64 = 1_000;
/// How long one question to a DNS server may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Where names are looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The system's resolver.
    System,
    /// This DNS server, asked directly (`--dns-server`).
    Server(SocketAddr),
}

/// One lookup's outcome for a name given as `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The name as the backend was given: `host:port`.
    pub(crate) name: String,
    /// Every address in the answer with the port, sorted; or why the lookup failed.
    pub(crate) addrs: Result<Vec<SocketAddr>, String>,
    /// The answer to [`Resolver::check`] with this ticket; `None` for a followed name's.
    pub(crate) ticket: Option<u64>,
}

/// What the control thread asks of the resolver thread.
enum Request {
    /// Follow these names from now on.
    Follow(Vec<String>),
    /// Look this name up once, now.
    Check { ticket: u64, name: String },
}

/// The resolver thread, as the control thread holds it.
pub(crate) struct Resolver {
    names: Option<Sender<Request>>,
}

impl Resolver {
    /// Starts the thread; `deliver` hands each answer on (and wakes whoever waits for it). The
    /// thread ends once the `Resolver` is dropped (after the lookup under way, if any).
    pub(crate) fn spawn(
        lookup: Lookup,
        interval_ms: u64,
        deliver: impl Fn(Answer) + Send + 'static,
    ) -> std::io::Result<Resolver> {
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("sluice-resolve".into())
            .spawn(move || run(&rx, lookup, interval_ms.max(MIN_REFRESH_MS), &deliver))?;
        Ok(Resolver { names: Some(tx) })
    }

    /// The names to follow from now on (`host:port` each); new ones are looked up at once.
    pub(crate) fn follow(&self, names: Vec<String>) {
        if let Some(tx) = &self.names {
            let _ = tx.send(Request::Follow(names));
        }
    }

    /// Looks `name` up once, now; the answer carries `ticket`.
    pub(crate) fn check(&self, ticket: u64, name: String) {
        if let Some(tx) = &self.names {
            let _ = tx.send(Request::Check { ticket, name });
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        // Closing the channel ends the thread at its next wait. It is not joined: a lookup under
        // way can take the system resolver's whole timeout, which must not hold up a shutdown;
        // its answer goes nowhere.
        self.names = None;
    }
}

/// When a name is looked up next, and how long after a lookup.
struct Schedule {
    at: Instant,
    period_ms: u64,
}

/// How long after an answer a name is looked up again: its TTL when the answer has one, within
/// [`MIN_REFRESH_MS`] and `interval_ms`; else `interval_ms`.
fn refresh_ms(ttl_s: Option<u32>, interval_ms: u64) -> u64 {
    ttl_s.map_or(interval_ms, |ttl| {
        (u64::from(ttl) * 1000).clamp(MIN_REFRESH_MS, interval_ms)
    })
}

fn run(rx: &Receiver<Request>, lookup: Lookup, interval_ms: u64, deliver: &dyn Fn(Answer)) {
    let mut due: BTreeMap<String, Schedule> = BTreeMap::new();
    loop {
        let now = Instant::now();
        for (name, next) in due.iter_mut().filter(|(_, next)| next.at <= now) {
            let addrs = match resolve(lookup, name) {
                Ok((addrs, ttl_s)) => {
                    next.period_ms = refresh_ms(ttl_s, interval_ms);
                    Ok(addrs)
                }
                // A failed lookup is tried again on the schedule the last answer set.
                Err(e) => Err(e),
            };
            next.at = now + Duration::from_millis(next.period_ms);
            deliver(Answer {
                name: name.clone(),
                addrs,
                ticket: None,
            });
        }
        let next = due.values().map(|next| next.at).min();
        let wait = next.map_or(Duration::from_secs(3600), |at| {
            at.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(Request::Check { ticket, name }) => deliver(Answer {
                addrs: resolve(lookup, &name).map(|(addrs, _)| addrs),
                name,
                ticket: Some(ticket),
            }),
            Ok(Request::Follow(names)) => {
                let now = Instant::now();
                due.retain(|name, _| names.contains(name));
                for name in names {
                    due.entry(name).or_insert(Schedule {
                        at: now,
                        period_ms: interval_ms,
                    });
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Looks `name` (`host:port`) up; returns its addresses, sorted, and the TTL when known.
pub(crate) fn resolve(
    lookup: Lookup,
    name: &str,
) -> Result<(Vec<SocketAddr>, Option<u32>), String> {
    let (host, port) = split_name(name)?;
    let (ips, ttl) = match lookup {
        Lookup::System => {
            let addrs = (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("{host:?} did not resolve: {e}"))?;
            (addrs.map(|a| a.ip()).collect::<Vec<_>>(), None)
        }
        Lookup::Server(server) => {
            // The name resolves when either question is answered: a server that fails the AAAA
            // question (some answer SERVFAIL or NOTIMP) still gives the IPv4 addresses.
            let mut ips = Vec::new();
            let mut ttl: Option<u32> = None;
            let mut failed = None;
            for kind in [TYPE::A, TYPE::AAAA] {
                match ask(server, host, kind) {
                    Ok((found, t)) => {
                        ips.extend(found);
                        ttl = match (ttl, t) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            if let (true, Some(e)) = (ips.is_empty(), failed) {
                return Err(e);
            }
            (ips, ttl)
        }
    };
    let mut addrs: Vec<SocketAddr> = ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(format!(
            "{host:?} did not resolve: the answer has no address"
        ));
    }
    Ok((addrs, ttl))
}

/// `host:port` into its parts.
pub(crate) fn split_name(name: &str) -> Result<(&str, u16), String> {
    match name.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => port
            .parse()
            .map(|p| (host, p))
            .map_err(|_| format!("bad port in {name:?}")),
        _ => Err(format!("bad name {name:?} (expected host:port)")),
    }
}

/// One question to `server`: the addresses of `host` of record type `kind` (A or AAAA), and
/// their smallest TTL.
fn ask(server: SocketAddr, host: &str, kind: TYPE) -> Result<(Vec<IpAddr>, Option<u32>), String> {
    let host = host.trim_end_matches('.');
    let fqdn =
        Name::new(host).map_err(|e| format!("{host:?} did not resolve: not a DNS name: {e}"))?;
    let id = query_id(host, kind);
    let mut query = Packet::new_query(id);
    query.set_flags(PacketFlag::RECURSION_DESIRED);
    query
        .questions
        .push(Question::new(fqdn, kind.into(), CLASS::IN.into(), false));
    let bytes = query
        .build_bytes_vec()
        .map_err(|e| format!("{host:?} did not resolve: DNS query: {e}"))?;
    let unreachable = |e: std::io::Error| {
        format!("{host:?} did not resolve: the DNS server {server} did not answer: {e}")
    };
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).map_err(unreachable)?;
    socket
        .set_read_timeout(Some(QUERY_TIMEOUT))
        .map_err(unreachable)?;
    socket.connect(server).map_err(unreachable)?;
    socket.send(&bytes).map_err(unreachable)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).map_err(unreachable)?;
        let Ok(reply) = Packet::parse(&buf[..n]) else {
            continue; // not a DNS message: keep waiting for ours
        };
        if reply.id() != id || !reply.has_flags(PacketFlag::RESPONSE) {
            continue;
        }
        return match reply.rcode() {
            RCODE::NoError => Ok(addresses_in(&reply)),
            RCODE::NameError => Err(format!(
                "{host:?} did not resolve: no such name (NXDOMAIN from {server})"
            )),
            code => Err(format!(
                "{host:?} did not resolve: the DNS server {server} answered {code:?}"
            )),
        };
    }
}

/// The A and AAAA records of an answer and their smallest TTL (CNAMEs the server followed come
/// with the addresses they lead to).
fn addresses_in(reply: &Packet) -> (Vec<IpAddr>, Option<u32>) {
    let mut ips = Vec::new();
    let mut ttl = None::<u32>;
    for record in &reply.answers {
        let ip = match &record.rdata {
            RData::A(a) => IpAddr::V4(a.address.into()),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.address.into()),
            _ => continue,
        };
        ips.push(ip);
        ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
    }
    (ips, ttl)
}

/// A query id that differs between questions (so a late answer to an earlier one is not taken for
/// this one's) without a random generator: the clock's low bits mixed with the question.
fn query_id(host: &str, kind: TYPE) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut h = u64::from(nanos) ^ u64::from(u16::from(kind));
    for b in host.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 16) ^ (h >> 32)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, AAAA};
    use simple_dns::{ResourceRecord, QTYPE};
    use std::sync::{Arc, Mutex};

    /// A DNS server on loopback answering from `zone` (name → addresses, TTL 60), NXDOMAIN else;
    /// an AAAA question about a name starting with `v4only` gets SERVFAIL.
    fn dns_server(zone: Arc<Mutex<Vec<(String, IpAddr)>>>) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let q = Packet::parse(&buf[..n]).unwrap();
                let question = q.questions[0].clone();
                let asked = question.qname.to_string();
                let mut reply = Packet::new_reply(q.id());
                reply.questions.push(question.clone());
                let zone = zone.lock().unwrap();
                let known: Vec<IpAddr> = zone
                    .iter()
                    .filter(|(n, _)| *n == asked)
                    .map(|(_, ip)| *ip)
                    .collect();
                let aaaa = question.qtype == QTYPE::TYPE(TYPE::AAAA);
                if known.is_empty() {
                    *reply.rcode_mut() = RCODE::NameError;
                }
                if asked.starts_with("v4only") && aaaa {
                    *reply.rcode_mut() = RCODE::ServerFailure;
                }
                for ip in known {
                    let rdata = match (ip, aaaa) {
                        (IpAddr::V4(v4), false) => RData::A(A { address: v4.into() }),
                        (IpAddr::V6(v6), true) => RData::AAAA(AAAA { address: v6.into() }),
                        _ => continue,
                    };
                    let name = question.qname.clone();
                    reply
                        .answers
                        .push(ResourceRecord::new(name, CLASS::IN, 60, rdata));
                }
                socket
                    .send_to(&reply.build_bytes_vec().unwrap(), from)
                    .unwrap();
            }
        });
        addr
    }

    #[test]
    fn a_server_answer_gives_every_address_with_the_port_and_the_ttl() {
        let zone = Arc::new(Mutex::new(vec![
            ("app.test".to_string(), "127.0.0.2".parse().unwrap()),
            ("app.test".to_string(), "127.0.0.1".parse().unwrap()),
            ("app.test".to_string(), "::1".parse().unwrap()),
        ]));
        let server = dns_server(zone);
        let (addrs, ttl) = resolve(Lookup::Server(server), "app.test:8080").unwrap();
        let want: Vec<SocketAddr> = ["127.0.0.1:8080", "127.0.0.2:8080", "[::1]:8080"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(addrs, want);
        assert_eq!(ttl, Some(60));
        let e = resolve(Lookup::Server(server), "nothing.test:80").unwrap_err();
        assert!(
            e.contains("NXDOMAIN") && e.contains("did not resolve"),
            "{e}"
        );
    }

    #[test]
    fn a_failed_aaaa_question_still_gives_the_ipv4_addresses() {
        let zone = Arc::new(Mutex::new(vec![(
            "v4only.test".to_string(),
            "127.0.0.9".parse().unwrap(),
        )]));
        let server = dns_server(zone);
        let (addrs, _) = resolve(Lookup::Server(server), "v4only.test:80").unwrap();
        assert_eq!(addrs, vec!["127.0.0.9:80".parse().unwrap()]);
    }

    #[test]
    fn an_answer_is_refreshed_at_its_ttl_within_a_second_and_the_interval() {
        assert_eq!(refresh_ms(None, 30_000), 30_000, "no TTL: the interval");
        assert_eq!(refresh_ms(Some(5), 30_000), 5_000);
        assert_eq!(
            refresh_ms(Some(3600), 30_000),
            30_000,
            "at most the interval"
        );
        assert_eq!(
            refresh_ms(Some(0), 30_000),
            MIN_REFRESH_MS,
            "at least a second"
        );
    }

    #[test]
    fn the_system_resolver_knows_localhost_and_names_are_host_and_port() {
        let (addrs, ttl) = resolve(Lookup::System, "localhost:81").unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 81));
        assert_eq!(ttl, None);
        assert!(split_name("app.test").is_err());
        assert!(split_name(":80").is_err());
        assert!(split_name("app.test:http").is_err());
    }

    #[test]
    fn the_thread_follows_the_names_it_is_given_and_reports_each() {
        let zone = Arc::new(Mutex::new(vec![(
            "a.test".to_string(),
            "127.0.0.5".parse().unwrap(),
        )]));
        let server = dns_server(zone);
        let (tx, rx) = crossbeam_channel::unbounded();
        let resolver = Resolver::spawn(Lookup::Server(server), 60_000, move |a| {
            let _ = tx.send(a);
        })
        .unwrap();
        resolver.follow(vec!["a.test:80".into(), "b.test:80".into()]);
        let mut got: Vec<Answer> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(20)).unwrap())
            .collect();
        got.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(got[0].addrs, Ok(vec!["127.0.0.5:80".parse().unwrap()]));
        assert!(got[1].addrs.as_ref().is_err_and(|e| e.contains("NXDOMAIN")));
        drop(resolver);
    }
}
