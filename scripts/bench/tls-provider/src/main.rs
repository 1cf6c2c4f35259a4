//! Which rustls crypto provider should sluice build with? This measures the server's share of
//! sluice's TLS workload under `ring` and under `aws-lc-rs`, in memory (no sockets, so the
//! kernel's share and the machine's other load stay out of it): TLS 1.3, an ECDSA P-256
//! certificate, X25519, TLS_AES_128_GCM_SHA256.
//!
//! - full handshake: a client with resumption off, the server's work from ClientHello to its
//!   session tickets;
//! - resumed handshake: the client offers the ticket from its last connection (PSK with
//!   X25519, as browsers and `openssl s_time -reuse` do);
//! - keep-alive request: a 100-byte request decrypted and a 200-byte (or 16 KiB) response
//!   encrypted on an established connection.
//!
//! Only the server's calls are timed (read_tls, process_new_packets, reader/writer, write_tls),
//! in the thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so time the thread spent preempted by
//! other work on a shared machine is not counted; requests are timed in batches of `BATCH`
//! (records made by the client beforehand) to keep the clock's own cost out. The providers take
//! turns round by round and each figure is the best of `ROUNDS`.
//!
//! Run: `cargo run --release --manifest-path scripts/bench/tls-provider/Cargo.toml`

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::{aws_lc_rs, ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::ProducesTickets;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, ServerConfig};
use rustls::{ServerConnection, SupportedCipherSuite};

const ROUNDS: usize = 7;
const BATCH: usize = 500;
const HANDSHAKES: u32 = 2_000;
const REQUESTS: u32 = 50_000;
const SERVER_NAME: &str = "bench.sluice.test";

/// This thread's CPU time so far.
fn cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Adds the CPU time `f` takes to `total`.
fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t = cpu_now();
    let out = f();
    *total += cpu_now().saturating_sub(t);
    out
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A test CA and a leaf certificate it signed, both ECDSA P-256.
struct Certs {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
}

fn make_certs() -> BenchResult<Certs> {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let leaf = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])?
        .signed_by(&leaf_key, &ca, &ca_key)?;
    Ok(Certs {
        ca: ca.der().clone(),
        chain: vec![leaf.der().clone()],
        key_pkcs8: leaf_key.serialize_der(),
    })
}

/// The provider restricted to what the benchmark compares: one suite, one group.
fn narrowed(mut p: CryptoProvider, suite: SupportedCipherSuite) -> CryptoProvider {
    p.cipher_suites = vec![suite];
    p.kx_groups.retain(|g| g.name() == rustls::NamedGroup::X25519);
    p
}

struct Contender {
    name: &'static str,
    provider: fn() -> CryptoProvider,
    ticketer: fn() -> Result<Arc<dyn ProducesTickets>, rustls::Error>,
}

fn contenders() -> [Contender; 2] {
    [
        Contender {
            name: "ring",
            provider: || {
                narrowed(
                    ring::default_provider(),
                    ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
                )
            },
            ticketer: ring::Ticketer::new,
        },
        Contender {
            name: "aws-lc-rs",
            provider: || {
                narrowed(
                    aws_lc_rs::default_provider(),
                    aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
                )
            },
            ticketer: aws_lc_rs::Ticketer::new,
        },
    ]
}

struct Pair {
    server: Arc<ServerConfig>,
    client_full: Arc<ClientConfig>,
    client_resume: Arc<ClientConfig>,
}

fn configs(c: &Contender, certs: &Certs) -> BenchResult<Pair> {
    let provider = Arc::new((c.provider)());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certs.key_pkcs8.clone()));
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs.chain.clone(), key)?;
    server.ticketer = (c.ticketer)()?;
    let mut roots = RootCertStore::empty();
    roots.add(certs.ca.clone())?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client_full = client.clone();
    client_full.resumption = rustls::client::Resumption::disabled();
    Ok(Pair {
        server: Arc::new(server),
        client_full: Arc::new(client_full),
        client_resume: Arc::new(client),
    })
}

/// Moves what the client has to send into the server, and the server's answer back; the
/// server's calls are added to `server_time`.
fn exchange(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
    wire: &mut Vec<u8>,
    server_time: &mut Duration,
) -> BenchResult<bool> {
    let mut moved = false;
    wire.clear();
    while client.wants_write() {
        client.write_tls(wire)?;
    }
    if !wire.is_empty() {
        moved = true;
        timed(server_time, || -> BenchResult<()> {
            let mut rd = &wire[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd)?;
                server.process_new_packets()?;
            }
            Ok(())
        })?;
    }
    wire.clear();
    timed(server_time, || -> BenchResult<()> {
        while server.wants_write() {
            server.write_tls(wire)?;
        }
        Ok(())
    })?;
    if !wire.is_empty() {
        moved = true;
        let mut rd = &wire[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd)?;
            client.process_new_packets()?;
        }
    }
    Ok(moved)
}

fn connect(
    pair: &Pair,
    client_cfg: &Arc<ClientConfig>,
    wire: &mut Vec<u8>,
    server_time: &mut Duration,
) -> BenchResult<(ClientConnection, ServerConnection)> {
    let name = ServerName::try_from(SERVER_NAME)?;
    let mut client = ClientConnection::new(client_cfg.clone(), name)?;
    let mut server = timed(server_time, || ServerConnection::new(pair.server.clone()))?;
    while exchange(&mut client, &mut server, wire, server_time)? {}
    if client.is_handshaking() || server.is_handshaking() {
        return Err("the handshake stalled".into());
    }
    Ok((client, server))
}

/// Server microseconds per handshake in one round; `resume` offers the previous connection's
/// ticket.
fn handshakes(pair: &Pair, resume: bool) -> BenchResult<f64> {
    let cfg = if resume {
        &pair.client_resume
    } else {
        &pair.client_full
    };
    let want = if resume {
        HandshakeKind::Resumed
    } else {
        HandshakeKind::Full
    };
    let mut wire = Vec::with_capacity(8192);
    let mut warm = Duration::ZERO;
    connect(pair, cfg, &mut wire, &mut warm)?; // the first connection's ticket
    let mut server_time = Duration::ZERO;
    for _ in 0..HANDSHAKES {
        let (client, _server) = connect(pair, cfg, &mut wire, &mut server_time)?;
        if client.handshake_kind() != Some(want) {
            return Err(format!("expected a {want:?} handshake").into());
        }
    }
    Ok(server_time.as_secs_f64() * 1e6 / f64::from(HANDSHAKES))
}

/// Server microseconds per keep-alive request with a `response_bytes` answer, in one round.
fn requests(pair: &Pair, response_bytes: usize) -> BenchResult<f64> {
    let mut wire = Vec::with_capacity(64 * 1024);
    let mut warm = Duration::ZERO;
    let (mut client, mut server) = connect(pair, &pair.client_full, &mut wire, &mut warm)?;
    let request = vec![b'q'; 100];
    let response = vec![b'r'; response_bytes];
    let mut plain = vec![0u8; response_bytes.max(request.len())];
    let mut records: Vec<Vec<u8>> = vec![Vec::new(); BATCH];
    let mut answers = Vec::with_capacity(BATCH * (response_bytes + 64));
    let mut server_time = Duration::ZERO;
    for _ in 0..(REQUESTS as usize / BATCH) {
        for record in &mut records {
            record.clear();
            client.writer().write_all(&request)?;
            client.write_tls(record)?;
        }
        answers.clear();
        timed(&mut server_time, || -> BenchResult<()> {
            for record in &records {
                let mut rd = &record[..];
                while !rd.is_empty() {
                    server.read_tls(&mut rd)?;
                    server.process_new_packets()?;
                }
                server.reader().read_exact(&mut plain[..request.len()])?;
                server.writer().write_all(&response)?;
                while server.wants_write() {
                    server.write_tls(&mut answers)?;
                }
            }
            Ok(())
        })?;
        let mut rd = &answers[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd)?;
            client.process_new_packets()?;
            loop {
                match client.reader().read(&mut plain) {
                    Ok(0) => return Err("the server closed".into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(server_time.as_secs_f64() * 1e6 / f64::from(REQUESTS))
}

/// Best of each figure over the rounds.
#[derive(Clone, Copy)]
struct Figures {
    full: f64,
    resumed: f64,
    small: f64,
    large: f64,
}

impl Figures {
    const NONE: Figures = Figures {
        full: f64::MAX,
        resumed: f64::MAX,
        small: f64::MAX,
        large: f64::MAX,
    };

    fn best(self, o: Figures) -> Figures {
        Figures {
            full: self.full.min(o.full),
            resumed: self.resumed.min(o.resumed),
            small: self.small.min(o.small),
            large: self.large.min(o.large),
        }
    }
}

fn main() -> BenchResult<()> {
    let certs = make_certs()?;
    println!(
        "server CPU time, best of {ROUNDS} rounds ({HANDSHAKES} handshakes, {REQUESTS} requests each)"
    );
    println!(
        "{:<10} {:>12} {:>12} {:>14} {:>14} {:>16}",
        "provider", "full µs", "resumed µs", "full/s/core", "req 200B µs", "req 16KiB µs"
    );
    let contenders = contenders();
    let pairs = contenders
        .iter()
        .map(|c| configs(c, &certs))
        .collect::<BenchResult<Vec<_>>>()?;
    let mut best = [Figures::NONE; 2];
    for _ in 0..ROUNDS {
        // Taking turns spreads the machine's other load over both providers alike.
        for (b, pair) in best.iter_mut().zip(&pairs) {
            let round = Figures {
                full: handshakes(pair, false)?,
                resumed: handshakes(pair, true)?,
                small: requests(pair, 200)?,
                large: requests(pair, 16 * 1024)?,
            };
            *b = b.best(round);
        }
    }
    for (c, f) in contenders.iter().zip(best) {
        println!(
            "{:<10} {:>12.1} {:>12.1} {:>14.0} {:>14.3} {:>16.3}",
            c.name,
            f.full,
            f.resumed,
            1e6 / f.full,
            f.small,
            f.large
        );
    }
    Ok(())
}
