//! The control side: owns the authoritative backend list and strategy, and turns every change into
//! a new, complete [`BackendTable`] version for the workers.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use log::info;

use crate::backend::{Backend, BackendId, BackendSpec, BackendTable};
use crate::config::Settings;
use crate::server::DataPlane;
use crate::strategy::StrategyKind;

/// The authoritative configuration; only the control thread touches it.
pub struct ControlState {
    version: u64,
    next_id: BackendId,
    backends: Vec<Backend>,
    strategy: StrategyKind,
}

impl ControlState {
    pub fn new(specs: &[BackendSpec], strategy: StrategyKind) -> ControlState {
        let mut state = ControlState {
            version: 0,
            next_id: 1,
            backends: Vec::new(),
            strategy,
        };
        for spec in specs {
            state.add(spec);
        }
        state
    }

    fn add(&mut self, spec: &BackendSpec) -> BackendId {
        let id = self.next_id;
        self.next_id += 1;
        self.backends.push(Backend::new(id, spec.addr, spec.weight));
        id
    }

    /// A new table version holding the current state.
    pub fn publish(&mut self) -> Arc<BackendTable> {
        self.version += 1;
        Arc::new(BackendTable::new(
            self.version,
            self.backends.clone(),
            self.strategy,
        ))
    }
}

/// Signals that stop the process, handled by the main thread with `sigwait`.
fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Runs sluice until SIGINT or SIGTERM, then shuts down gracefully.
pub fn run(settings: Settings) -> io::Result<()> {
    let signals = shutdown_signals();
    // Block the signals before any thread starts, so every thread inherits the mask and only the
    // main thread's sigwait receives them.
    // SAFETY: the set is initialised; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };

    let mut state = ControlState::new(&settings.backends, settings.strategy);
    let table = state.publish();
    let plane = DataPlane::start(settings.proxy.clone(), settings.listen, table)?;
    info!(
        "sluice listening on {} ({:?} mode, {} workers, strategy {}, {} backends)",
        plane.local_addr(),
        settings.proxy.mode,
        settings.proxy.workers,
        settings.strategy,
        settings.backends.len()
    );
    let mut signal = 0;
    // SAFETY: both pointers are valid for the call.
    unsafe { libc::sigwait(&signals, &mut signal) };
    info!(
        "signal {signal}: shutting down, waiting up to {} ms for requests in flight",
        settings.proxy.shutdown_timeout_ms
    );
    plane.shutdown(Duration::from_millis(settings.proxy.shutdown_timeout_ms));
    info!("stopped");
    Ok(())
}
