//! Real etcd processes for the cluster tests: each member on ephemeral loopback ports with a
//! temporary data directory, killed by its PID (SIGKILL, like `kill -9`) and removed on drop.
//! Also a cuttable TCP relay, to cut one sluice instance off the store while the rest go on.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::wait_until;

/// How long a member (or a cluster) may take to answer after it starts.
const START_LIMIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One etcd member.
pub struct Etcd {
    pub name: String,
    pub client_url: String,
    peer_url: String,
    initial_cluster: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Etcd {
    /// A one-member cluster, answering when this returns.
    pub fn single() -> Etcd {
        let mut members = Etcd::cluster(1);
        members.remove(0)
    }

    /// An `n`-member cluster, every member answering when this returns.
    pub fn cluster(n: usize) -> Vec<Etcd> {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Etcd> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let dir = std::env::temp_dir().join(format!("sluice-etcd-{tag}-m{i}"));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("etcd data dir");
                Etcd {
                    name: format!("m{i}"),
                    client_url: format!("http://127.0.0.1:{client}"),
                    peer_url: format!("http://127.0.0.1:{peer}"),
                    initial_cluster: initial_cluster.clone(),
                    dir,
                    child: None,
                }
            })
            .collect();
        for m in &mut members {
            m.spawn();
        }
        for m in &members {
            m.wait_healthy();
        }
        members
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start etcd (install the etcd-server package)");
        self.child = Some(child);
    }

    /// Whether this member answers a linearizable read (it is up and has a leader).
    pub fn healthy(&self) -> bool {
        call(&self.client_url, "/v3/kv/range", r#"{"key":"AA=="}"#)
            .is_ok_and(|(status, _)| status == 200)
    }

    fn wait_healthy(&self) {
        assert!(
            wait_until(START_LIMIT, || self.healthy()),
            "etcd {} did not become healthy; its log: {}",
            self.name,
            std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
        );
    }

    /// SIGKILL, like `kill -9`, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the killed member again on the same ports and data, and waits until it answers
    /// (which needs a quorum).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_healthy();
    }

    /// Compacts the store's history up to its current revision.
    pub fn compact(&self) -> u64 {
        let (_, body) = call(&self.client_url, "/v3/kv/range", r#"{"key":"AA=="}"#).unwrap();
        let revision: u64 = body["header"]["revision"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let req = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        let (status, _) = call(&self.client_url, "/v3/kv/compaction", &req).unwrap();
        assert_eq!(status, 200);
        revision
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The client URLs of `members`, comma-separated, as `--cluster-store` takes them.
pub fn urls(members: &[&Etcd]) -> String {
    members
        .iter()
        .map(|m| m.client_url.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A POST to etcd's JSON gateway.
pub fn call(url: &str, path: &str, body: &str) -> io::Result<(u16, serde_json::Value)> {
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .map_err(io::Error::other)?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let resp = super::read_response(&mut io::BufReader::new(s), false)?;
    let json = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
    Ok((resp.status, json))
}

/// A TCP relay to `target` that can be cut: open connections are shut down and new ones closed
/// at once, as if the network between them failed, until it is restored.
pub struct Relay {
    pub url: String,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    pub fn to(target_url: &str) -> Relay {
        let target: SocketAddr = target_url.trim_start_matches("http://").parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut list = c.lock().unwrap();
                for s in [&client, &server] {
                    if let Ok(dup) = s.try_clone() {
                        list.push(dup);
                    }
                }
                drop(list);
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Relay { url, open, conns }
    }

    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
