//! A pod's application, as the scenario starts one: it runs from the moment the pod's
//! namespace exists (a runtime starting containers while a plugin that does not wait for DAD
//! is done), waits for the pod's address, and binds it at once, retrying every 50 ms as a
//! server would. It counts its own failures: dad-trace's count must be the same.
use std::{
    net::{Ipv6Addr, SocketAddrV6, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::node::netns::{addresses_here, in_netns};

/// How often the application looks for its address, and retries a failed bind.
const LOOK: Duration = Duration::from_millis(20);
const RETRY: Duration = Duration::from_millis(50);
/// How long it tries at all: past any DAD of the scenario's phases.
const PATIENCE: Duration = Duration::from_secs(15);
/// Its thread's name: the `comm` dad-trace records for its failures.
pub const COMM: &str = "pod-app";

/// What one pod's application saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AppRun {
    /// Binds that failed with `EADDRNOTAVAIL` before one worked.
    pub failures: u64,
    pub bound: bool,
}

/// A running application; [`App::wait`] for what it saw. Dropped unwaited (its pod failed to
/// set up), it stops at its next look.
pub struct App {
    thread: Option<JoinHandle<anyhow::Result<AppRun>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl App {
    /// Starts the application of the pod whose namespace `netns` opens.
    ///
    /// # Errors
    ///
    /// When its thread cannot be started.
    pub fn start(netns: &Path) -> anyhow::Result<Self> {
        let netns: PathBuf = netns.into();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new().name(COMM.into()).spawn(move || {
            // in_netns runs the job on a thread of its own, named as this one.
            in_netns(&netns, move || run(&stopped))
        })?;
        Ok(Self {
            thread: Some(thread),
            stop,
        })
    }

    /// What it saw, once it bound its address or gave up.
    ///
    /// # Errors
    ///
    /// When it could not look at its addresses, or a bind failed otherwise.
    pub fn wait(mut self) -> anyhow::Result<AppRun> {
        self.thread
            .take()
            .context("waited once")?
            .join()
            .map_err(|_| anyhow::anyhow!("the pod application panicked"))?
    }
}

/// The pod's first address that is not link-local, once it has one.
fn pod_address(deadline: Instant, stop: &AtomicBool) -> anyhow::Result<Option<Ipv6Addr>> {
    loop {
        let global = addresses_here()?
            .into_iter()
            .map(|row| row.addr)
            .find(|addr| !addr.is_loopback() && addr.segments()[0] & 0xffc0 != 0xfe80);
        if global.is_some() || Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            return Ok(global);
        }
        std::thread::sleep(LOOK);
    }
}

fn run(stop: &AtomicBool) -> anyhow::Result<AppRun> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = AppRun::default();
    let Some(addr) = pod_address(deadline, stop)? else {
        return Ok(seen);
    };
    loop {
        match UdpSocket::bind(SocketAddrV6::new(addr, 0, 0, 0)) {
            Ok(_) => {
                seen.bound = true;
                return Ok(seen);
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => seen.failures += 1,
            Err(e) => return Err(anyhow::Error::from(e).context(format!("bind {addr}"))),
        }
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            return Ok(seen);
        }
        std::thread::sleep(RETRY);
    }
}
