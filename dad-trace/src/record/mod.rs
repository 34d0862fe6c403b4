//! `dad-trace record` and `serve`: attach a backend, follow every address through DAD, hand
//! finished ones to the sinks, save the session.
//!
//! The producer side lives in [`crate::kernel`] (programs → ring buffer → decoded
//! readings); the consumer side is the [`recorder::Recorder`]: [`track`] (phase state
//! machine) → [`enrich`] (names, one owner) → [`sinks`] (live lines, [`metrics`], session).
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use chrono::Utc;
use tokio::sync::{Notify, mpsc};

use self::{
    clock::{Clock, monotonic_ns, peak_rss_kib},
    enrich::{
        Enricher,
        cri::{Identities, SocketChoice},
    },
    metrics::Metrics,
    recorder::Recorder,
    signals::StopSignals,
    sinks::Sinks,
};
use crate::{
    kernel::{
        self, Attached, BackendChoice, Kernel, VMLINUX_BTF,
        loader::{self, LostCounter, Reading},
    },
    node::{
        self,
        netns::NETNS_DIR,
        synthetic::{self, SyntheticPod},
        sysctl,
    },
    session::Session,
};

pub mod clock;
pub mod enrich;
pub mod metrics;
pub mod recorder;
pub mod serve;
pub mod signals;
pub mod sinks;
pub mod track;

pub struct RecordOptions {
    pub backend: BackendChoice,
    pub duration: Option<Duration>,
    pub count: Option<usize>,
    pub output: Option<PathBuf>,
    pub synthetic_pods: Option<usize>,
    pub synthetic_prefix: String,
    pub ring_bytes: u32,
    pub verbose: bool,
    /// An in-flight address unseen this long is checked for existence.
    pub stale_after: Duration,
    /// Print one line per finished address.
    pub lines: bool,
    /// Stops the recording when notified (for callers that drive a workload meanwhile).
    pub stop: Option<Arc<Notify>>,
    /// The container runtime socket that names pods (CRI).
    pub cri_socket: SocketChoice,
    /// How long a finished address of an unnamed pod waits for the runtime to name it.
    pub resolve_wait: Duration,
    /// Serve Prometheus metrics of every finished address (`serve`).
    pub serve: Option<ServeOptions>,
    /// Keep every event for the session file (a long-running agent without a file does not).
    pub keep_events: bool,
    /// The kernel's BTF (type information), for kernels that do not publish it themselves.
    pub btf: PathBuf,
    /// This program, to parse the BTF in a short-lived child (see [`kernel::btf::kernel_facts`]).
    pub facts_helper: Option<PathBuf>,
}

impl Default for RecordOptions {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            duration: None,
            count: None,
            output: None,
            synthetic_pods: None,
            synthetic_prefix: "dt-pod-".into(),
            ring_bytes: dad_trace_common::DEFAULT_RING_BYTES,
            verbose: false,
            stale_after: Duration::from_secs(3),
            lines: false,
            stop: None,
            cri_socket: SocketChoice::Auto,
            resolve_wait: Duration::from_secs(10),
            serve: None,
            keep_events: true,
            btf: VMLINUX_BTF.into(),
            facts_helper: None,
        }
    }
}

/// Where and how `serve` exposes metrics.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    pub listen: std::net::SocketAddr,
    pub per_pod_labels: bool,
}

/// Records until stopped (Ctrl-C, SIGTERM, `--duration`, `--count`, all synthetic pods
/// settled, or `stop`), then saves the session if asked.
pub async fn record(opts: RecordOptions) -> anyhow::Result<Session> {
    kernel::check_privileges()?;
    // First thing: a signal during start-up must still end in a saved session and no leftovers.
    let mut signals = StopSignals::install()?;
    let kernel = Kernel::discover(&opts.btf, opts.facts_helper.as_deref())?;
    let Attached { mut ebpf, backend } = kernel::attach(&kernel, opts.backend, opts.ring_bytes, opts.verbose)?;
    loader::start_kernel_logs(&mut ebpf);
    let lost = LostCounter::take(&mut ebpf)?;
    let mut readings = loader::spawn_reader(&mut ebpf, 4096)?;
    let (metrics, _server) = start_metrics(opts.serve, &kernel, backend).await?;
    let (enricher, _refresher) = start_enricher(&opts).await?;
    let mut session = Session::new(backend, kernel.release.clone(), node::hostname(), Utc::now());
    session.sysctls_start = sysctl::snapshot();
    announce(&opts, &session);

    let (pods, interrupted) = match opts.synthetic_pods {
        Some(count) => create_synthetic_pods(count, &opts.synthetic_prefix, &mut signals).await?,
        None => (Vec::new(), false),
    };
    let mut sinks = Sinks::new(opts.keep_events).with_metrics(metrics).with_progress(&pods);
    if opts.lines {
        sinks = sinks.with_lines(Box::new(std::io::stdout()));
    }
    let mut recorder = Recorder::new(enricher, sinks, Clock::now(), session);
    let failure = if interrupted {
        None
    } else {
        follow(&mut recorder, &mut readings, &lost, &opts, &mut signals).await
    };
    // Whatever the kernel already sent still counts: give the reader a moment, then drain.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(reading) = readings.try_recv() {
        recorder.on_reading(reading);
    }

    let mut session = recorder.into_session(lost.total(), monotonic_ns());
    session.sysctls_end = sysctl::snapshot();
    drop(ebpf);
    drop(pods);
    if let Some(path) = &opts.output {
        session.save(path)?;
        eprintln!("Session saved to {}", path.display());
    }
    log::debug!("peak resident memory: {} KiB", peak_rss_kib());
    failure.map_or(Ok(session), Err)
}

/// Feeds readings to the recorder until a stop condition; returns why it stopped when that
/// is a failure.
async fn follow(
    recorder: &mut Recorder<Enricher>,
    readings: &mut mpsc::Receiver<Reading>,
    lost: &LostCounter,
    opts: &RecordOptions,
    signals: &mut StopSignals,
) -> Option<anyhow::Error> {
    let synthetic_deadline = tokio::time::sleep(Duration::from_mins(1));
    tokio::pin!(synthetic_deadline);
    let deadline = tokio::time::sleep(opts.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    let stale_ns = u64::try_from(opts.stale_after.as_nanos()).unwrap_or(u64::MAX);
    let external_stop = opts.stop.clone().unwrap_or_default();
    loop {
        tokio::select! {
            reading = readings.recv() => match reading {
                Some(reading) => recorder.on_reading(reading),
                None => return Some(anyhow::anyhow!("the ring buffer reader stopped")),
            },
            _ = sweep.tick() => recorder.sweep(monotonic_ns(), stale_ns, lost.total()),
            () = signals.recv() => return None,
            () = &mut deadline => return None,
            () = external_stop.notified(), if opts.stop.is_some() => return None,
            () = &mut synthetic_deadline, if recorder.sinks().follows_synthetic() => {
                eprintln!("Synthetic pods did not all settle within 60 s; stopping.");
                return None;
            }
        }
        let sinks = recorder.sinks();
        if opts.count.is_some_and(|count| sinks.finished() >= count) || sinks.synthetic_done() {
            return None;
        }
    }
}

fn announce(opts: &RecordOptions, session: &Session) {
    eprintln!(
        "Tracing IPv6 DAD with the {} backend on kernel {}. {}",
        session.backend,
        session.kernel_release,
        if opts.duration.is_some() || opts.count.is_some() || opts.synthetic_pods.is_some() {
            "Ctrl-C stops early."
        } else {
            "Ctrl-C to stop."
        }
    );
}

/// Stops a background task with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Creates the synthetic pods; returns whether a signal asked to stop meanwhile. On a signal
/// it still waits for the creator, so the pods it made are removed on drop.
async fn create_synthetic_pods(
    count: usize,
    prefix: &str,
    signals: &mut StopSignals,
) -> anyhow::Result<(Vec<SyntheticPod>, bool)> {
    let owned_prefix = prefix.to_string();
    let creation = tokio::task::spawn_blocking(move || synthetic::create_pods(&owned_prefix, count));
    tokio::pin!(creation);
    let (pods, stop) = tokio::select! {
        pods = &mut creation => (pods??, false),
        () = signals.recv() => (creation.await??, true),
    };
    eprintln!(
        "Created {count} synthetic pods ({prefix}0..{}).",
        count.saturating_sub(1)
    );
    Ok((pods, stop))
}

/// The metrics endpoint of `serve`, when asked for.
async fn start_metrics(
    options: Option<ServeOptions>,
    kernel: &Kernel,
    backend: kernel::Backend,
) -> anyhow::Result<(Option<Arc<Metrics>>, Option<AbortOnDrop>)> {
    let Some(options) = options else {
        return Ok((None, None));
    };
    let metrics = Arc::new(Metrics::new(
        &backend.to_string(),
        &kernel.release,
        options.per_pod_labels,
    ));
    let server = serve::start(options.listen, metrics.clone()).await?;
    eprintln!("Serving Prometheus metrics on http://{}/metrics", options.listen);
    Ok((Some(metrics), Some(AbortOnDrop(server))))
}

/// The enricher, naming pods through the runtime when a CRI socket is in reach.
async fn start_enricher(opts: &RecordOptions) -> anyhow::Result<(Enricher, Option<AbortOnDrop>)> {
    let enricher = Enricher::new(Path::new("/proc"), Path::new(NETNS_DIR))?;
    // Synthetic pods are named by their namespace; no runtime knows them.
    let choice = if opts.synthetic_pods.is_some() && opts.cri_socket == SocketChoice::Auto {
        SocketChoice::Off
    } else {
        opts.cri_socket.clone()
    };
    let Some(socket) = choice.resolve().map_err(|e| anyhow::anyhow!(e))? else {
        return Ok((enricher, None));
    };
    let sandboxes = Identities::check(&socket)
        .await
        .context("naming pods through the runtime (use --cri-socket none to go without)")?;
    eprintln!(
        "Naming pods through the CRI at {} ({sandboxes} sandboxes now).",
        socket.display()
    );
    let identities = Identities::default();
    let refresher = AbortOnDrop(identities.spawn_refresher(socket, "/proc".into()));
    Ok((enricher.with_cri(identities, opts.resolve_wait), Some(refresher)))
}
