//! What the edge tests put around sluice: HAProxy as a real PROXY protocol peer, clients that
//! connect from a loopback address of their own, and HTTP backends (TCP or Unix-domain) that can
//! be stopped and started again, for health checks to see them go.
//!
//! HAProxy is given its listening socket already bound (to port 0) and listening, as an inherited
//! descriptor (`bind fd@N`): no port is guessed, and connections made before it runs wait in the
//! backlog. It runs in the foreground and is killed by its PID on drop.

use std::io::{self, BufReader, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use super::{read_request, Reply, Req, IO_TIMEOUT};

/// The descriptor HAProxy finds its listening socket at (`bind fd@100`).
pub const HAPROXY_FD: i32 = 100;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sluice-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP connection to `dst` from the loopback address `src` (any 127.x address is local on
/// Linux), so that a peer further on can tell this client from sluice and HAProxy.
pub fn connect_from(src: IpAddr, dst: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
    sock.connect(&dst.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// HAProxy running `config`, whose one `bind` line says `fd@100`; stopped by PID on drop.
pub struct Haproxy {
    pub addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl Haproxy {
    pub fn start(config: &str) -> Haproxy {
        let dir = TempDir::new("haproxy");
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: between fork and exec the closure only calls dup2 and fcntl, which are
        // async-signal-safe, on descriptors this process owns.
        unsafe {
            cmd.pre_exec(move || {
                if fd == HAPROXY_FD {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(fd, HAPROXY_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("haproxy not found: scripts/test.sh installs it (Debian package haproxy)");
        // The child has its copy; connections wait in the backlog until it accepts.
        drop(listener);
        Haproxy {
            addr,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The common head of an HAProxy configuration: no daemon, short timeouts for tests.
pub fn haproxy_defaults(mode: &str) -> String {
    format!(
        "global\n  maxconn 256\n\ndefaults\n  mode {mode}\n  timeout connect 5s\n  \
         timeout client 30s\n  timeout server 30s\n\n"
    )
}

/// A stream an HTTP backend serves: TCP or Unix-domain.
pub trait Conn: io::Read + Write + Send + Sized + 'static {
    fn try_clone(&self) -> io::Result<Self>;
    fn close(&self);
}

impl Conn for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn close(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl Conn for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
    fn close(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

/// Where a stoppable backend listens.
#[derive(Clone, Debug)]
pub enum Place {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Place {
    /// The address as sluice's flags and API write it.
    pub fn backend_text(&self) -> String {
        match self {
            Place::Tcp(a) => a.to_string(),
            Place::Unix(p) => format!("unix:{}", p.display()),
        }
    }
}

/// An HTTP backend answering `handler`, recording requests, that can stop listening (its
/// address then refuses connections) and start again at the same address.
pub struct StoppableBackend {
    pub place: Place,
    pub seen: Arc<Mutex<Vec<Req>>>,
    handler: Arc<dyn Fn(&Req) -> Reply + Send + Sync>,
    stop: Option<Arc<AtomicBool>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl StoppableBackend {
    /// On `bind` (a TCP address, port 0 for any) or, with `unix`, at that socket path.
    pub fn tcp(bind: SocketAddr, handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Self {
        StoppableBackend::on(TcpListener::bind(bind).unwrap(), handler)
    }

    /// On a TCP listener bound already.
    pub fn on(
        listener: TcpListener,
        handler: impl Fn(&Req) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let place = Place::Tcp(listener.local_addr().unwrap());
        let mut b = StoppableBackend::new(place, Arc::new(handler));
        b.serve_tcp(listener);
        b
    }

    pub fn unix(path: &Path, handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Self {
        let mut b = StoppableBackend::new(Place::Unix(path.to_path_buf()), Arc::new(handler));
        b.resume();
        b
    }

    fn new(place: Place, handler: Arc<dyn Fn(&Req) -> Reply + Send + Sync>) -> Self {
        StoppableBackend {
            place,
            seen: Arc::new(Mutex::new(Vec::new())),
            handler,
            stop: None,
            thread: None,
        }
    }

    pub fn requests(&self) -> Vec<Req> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops accepting and closes the listening socket (a unix socket's file is removed), so
    /// connects are refused from when this returns.
    pub fn pause(&mut self) {
        let Some(stop) = self.stop.take() else { return };
        stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and drops the listener.
        match &self.place {
            Place::Tcp(a) => drop(TcpStream::connect(a)),
            Place::Unix(p) => drop(UnixStream::connect(p)),
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        if let Place::Unix(p) = &self.place {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Listens again at the same address.
    pub fn resume(&mut self) {
        match self.place.clone() {
            Place::Tcp(a) => self.serve_tcp(TcpListener::bind(a).unwrap()),
            Place::Unix(p) => {
                let _ = std::fs::remove_file(&p);
                let listener = UnixListener::bind(&p).unwrap();
                self.serve(move || listener.accept().map(|(s, _)| s));
            }
        }
    }

    fn serve_tcp(&mut self, listener: TcpListener) {
        self.serve(move || listener.accept().map(|(s, _)| s));
    }

    fn serve<C: Conn>(&mut self, accept: impl Fn() -> io::Result<C> + Send + 'static) {
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = Some(stop.clone());
        let (seen, handler) = (self.seen.clone(), self.handler.clone());
        self.thread = Some(thread::spawn(move || loop {
            let Ok(conn) = accept() else { continue };
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let (seen, handler) = (seen.clone(), handler.clone());
            thread::spawn(move || serve_conn(conn, &*handler, &seen));
        }));
    }
}

impl Drop for StoppableBackend {
    fn drop(&mut self) {
        self.pause();
    }
}

fn serve_conn<C: Conn>(conn: C, handler: &dyn Fn(&Req) -> Reply, seen: &Mutex<Vec<Req>>) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Ok(Some(req)) = read_request(&mut reader) {
        seen.lock().unwrap().push(req.clone());
        let reply = handler(&req);
        if writer.write_all(&reply.bytes).is_err() || reply.close {
            writer.close();
            return;
        }
    }
}
