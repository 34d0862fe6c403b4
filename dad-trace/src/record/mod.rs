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
use dad_trace_common::ProcStat;
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
        loader::{self, LostCounter, ProcStats, Reading},
    },
    node::{
        self,
        netns::NETNS_DIR,
        synthetic::{self, SyntheticPod},
        sysctl,
    },
    session::{CniTracing, Session},
};

pub mod clock;
pub mod cni;
pub mod display;
pub mod enrich;
pub mod filter;
pub mod identity;
pub mod live;
pub mod metrics;
mod pod_wait;
pub mod podstart;
pub mod recorder;
pub mod serve;
pub mod signals;
pub mod sinks;
pub mod track;

#[allow(clippy::struct_excessive_bools)] // independent switches of one command line
pub struct RecordOptions {
    pub backend: BackendChoice,
    pub duration: Option<Duration>,
    /// Stop after this many finished addresses.
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
    /// The live view on standard output: format, intervals, unit.
    pub live: LiveView,
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
    /// Which finished addresses are shown, counted (`count`) and kept.
    pub filter: filter::Filter,
    /// The kernel's BTF (type information), for kernels that do not publish it themselves.
    pub btf: PathBuf,
    /// This program, to parse the BTF in a short-lived child (see [`kernel::btf::kernel_facts`]).
    pub facts_helper: Option<PathBuf>,
    /// Follow CNI plugin calls (execs under these directories, beside the defaults).
    pub cni: bool,
    pub cni_bin_dirs: Vec<PathBuf>,
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
            live: LiveView::default(),
            stop: None,
            cri_socket: SocketChoice::Auto,
            resolve_wait: Duration::from_secs(10),
            serve: None,
            keep_events: true,
            filter: filter::Filter::default(),
            btf: VMLINUX_BTF.into(),
            facts_helper: None,
            cni: true,
            cni_bin_dirs: Vec::new(),
        }
    }
}

/// What `record` shows on standard output while it runs, besides the lines (`lines`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveView {
    pub format: live::LiveFormat,
    /// Histograms (or a JSON summary) every this long.
    pub interval: Option<Duration>,
    /// Stop after this many intervals (bcc's count).
    pub intervals: Option<usize>,
    /// The histograms' unit (`-m`); chosen per histogram when `None`.
    pub unit: Option<crate::hist::Unit>,
}

impl RecordOptions {
    /// Whether anything is shown on standard output while recording.
    fn shows_live(&self) -> bool {
        self.lines || self.live.interval.is_some() || self.live.format == live::LiveFormat::Jsonl
    }
}

/// Where and how `serve` exposes metrics.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    pub listen: std::net::SocketAddr,
    pub per_pod_labels: bool,
}

/// Records until stopped (Ctrl-C, SIGTERM, `--duration`, `--count` addresses or intervals,
/// all synthetic pods settled, or `stop`), then saves the session if asked.
pub async fn record(opts: RecordOptions) -> anyhow::Result<Session> {
    kernel::check_privileges()?;
    // First thing: a signal during start-up must still end in a saved session and no leftovers.
    let mut signals = StopSignals::install()?;
    let kernel = Kernel::discover(&opts.btf, opts.facts_helper.as_deref())?;
    let bin_dirs = kernel::cni_bin_dirs(&opts.cni_bin_dirs);
    let proc_config = if opts.cni {
        kernel.proc_config(&bin_dirs)
    } else {
        Err("not asked for".into())
    };
    let Attached {
        mut ebpf,
        backend,
        procs,
    } = kernel::attach(&kernel, opts.backend, opts.ring_bytes, opts.verbose, proc_config)?;
    let attached_ns = monotonic_ns();
    loader::start_kernel_logs(&mut ebpf);
    let lost = LostCounter::take(&mut ebpf)?;
    let proc_stats = match &procs {
        Ok(()) => Some(ProcStats::take(&mut ebpf)?),
        Err(why) => {
            if opts.cni {
                log::warn!("CNI calls are not followed: {why}");
            }
            None
        }
    };
    let mut readings = loader::spawn_readers(&mut ebpf, 256, proc_stats.is_some())?;
    let (metrics, _server) = start_metrics(opts.serve, &kernel, backend).await?;
    let (enricher, runtime) = start_enricher(&opts).await?;
    let mut session = Session::new(backend, kernel.release.clone(), node::hostname(), Utc::now());
    session.sysctls_start = sysctl::snapshot();
    announce(&opts, &session, proc_stats.as_ref().map(|_| bin_dirs.as_slice()));

    let (pods, interrupted) = match opts.synthetic_pods {
        Some(count) => create_synthetic_pods(count, &opts.synthetic_prefix, &mut signals).await?,
        None => (Vec::new(), false),
    };
    let mut sinks = Sinks::new(opts.keep_events)
        .with_filter(opts.filter.clone())
        .with_metrics(metrics)
        .with_progress(&pods);
    if opts.shows_live() {
        let options = live::LiveOptions {
            format: opts.live.format,
            lines: opts.lines,
            intervals: opts.live.interval.is_some(),
            unit: opts.live.unit,
        };
        sinks = sinks.with_live(live::Live::new(Box::new(std::io::stdout()), options));
    }
    let mut recorder = Recorder::new(enricher, sinks, Clock::now(), session).attached_at(attached_ns);
    if proc_stats.is_some() {
        recorder = recorder.with_cni(bin_dirs);
    }
    let failure = if interrupted {
        None
    } else {
        follow(&mut recorder, &mut readings, &lost, &opts, &mut signals).await
    };
    // Whatever the kernel already sent still counts: give the reader a moment, then drain.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::task::block_in_place(|| {
        while let Ok(batch) = readings.try_recv() {
            for reading in batch {
                recorder.on_reading(reading);
            }
        }
    });
    if let Some(runtime) = &runtime {
        // Containers started since the last refresh count in the pods' start.
        runtime.refresh_now().await;
    }
    let mut session = tokio::task::block_in_place(|| {
        // bcc's count means exactly that many intervals: no partial one after the last.
        let counted_out = opts
            .live
            .intervals
            .is_some_and(|count| recorder.sinks().intervals() >= count);
        recorder.close_live(monotonic_ns(), !counted_out);
        recorder.into_session(lost.total(), monotonic_ns())
    });
    session.sysctls_end = sysctl::snapshot();
    if let (Some(cni), Some(stats)) = (session.cni.as_mut(), &proc_stats) {
        count_cni_losses(cni, stats);
    }
    drop(ebpf);
    drop(pods);
    if let Some(path) = &opts.output {
        session.save(path)?;
        eprintln!("Session saved to {}", path.display());
    }
    log::debug!("peak resident memory: {} KiB", peak_rss_kib());
    failure.map_or(Ok(session), Err)
}

/// What the CNI programs could not record: their records lost, environments cut short.
fn count_cni_losses(cni: &mut CniTracing, stats: &ProcStats) {
    cni.lost_records = [ProcStat::Lost, ProcStat::ExitLost, ProcStat::TrackFailed]
        .into_iter()
        .map(|stat| stats.get(stat))
        .fold(0, u64::saturating_add);
    cni.env_truncated = stats.get(ProcStat::EnvTruncated);
    if cni.lost_records > 0 {
        log::warn!(
            "{} CNI process records lost (kernel ring buffer full or too many followed processes): calls may be missing",
            cni.lost_records
        );
    }
}

/// Feeds readings to the recorder until a stop condition; returns why it stopped when that
/// is a failure.
async fn follow(
    recorder: &mut Recorder<Enricher>,
    readings: &mut mpsc::Receiver<Vec<Reading>>,
    lost: &LostCounter,
    opts: &RecordOptions,
    signals: &mut StopSignals,
) -> Option<anyhow::Error> {
    let synthetic_deadline = tokio::time::sleep(Duration::from_mins(1));
    tokio::pin!(synthetic_deadline);
    let deadline = tokio::time::sleep(opts.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    // The first interval ends one period after the start (not at once, as tokio's first
    // tick would); a loop that fell behind shows one late interval, not a burst.
    let every = opts.live.interval.unwrap_or(Duration::from_hours(1));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stale_ns = u64::try_from(opts.stale_after.as_nanos()).unwrap_or(u64::MAX);
    let external_stop = opts.stop.clone().unwrap_or_default();
    loop {
        tokio::select! {
            // Enrichment may block: one hand-off of the worker thread per batch.
            batch = readings.recv() => match batch {
                Some(batch) => tokio::task::block_in_place(|| {
                    for reading in batch {
                        recorder.on_reading(reading);
                    }
                }),
                None => return Some(anyhow::anyhow!("the ring buffer reader stopped")),
            },
            _ = sweep.tick() => tokio::task::block_in_place(|| {
                recorder.sweep(monotonic_ns(), stale_ns, lost.total());
            }),
            _ = interval.tick(), if opts.live.interval.is_some() => {
                tokio::task::block_in_place(|| recorder.tick(monotonic_ns()));
                if opts.live.intervals.is_some_and(|count| recorder.sinks().intervals() >= count) {
                    return None;
                }
            }
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

fn announce(opts: &RecordOptions, session: &Session, cni_dirs: Option<&[String]>) {
    let cni = cni_dirs.map_or_else(String::new, |dirs| format!(" and CNI calls of {}", dirs.join(", ")));
    eprintln!(
        "Tracing IPv6 DAD with the {} backend{cni} on kernel {}. {}",
        session.backend,
        session.kernel_release,
        if opts.duration.is_some()
            || opts.count.is_some()
            || opts.live.intervals.is_some()
            || opts.synthetic_pods.is_some()
        {
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
    let (server, _) = serve::start(options.listen, metrics.clone(), serve::Limits::for_this_process()).await?;
    eprintln!("Serving Prometheus metrics on http://{}/metrics", options.listen);
    Ok((Some(metrics), Some(AbortOnDrop(server))))
}

/// The runtime, asked in the background for sandboxes and their containers' starts.
struct Runtime {
    identities: Identities,
    socket: PathBuf,
    _refresher: AbortOnDrop,
}

impl Runtime {
    /// One more look, as a recording ends; a runtime that does not answer is said, not fatal.
    async fn refresh_now(&self) {
        if let Err(e) = self.identities.refresh_now(&self.socket, Path::new("/proc")).await {
            log::warn!("pod start times from the runtime: {e}");
        }
    }
}

/// The enricher, naming pods through the runtime when a CRI socket is in reach.
async fn start_enricher(opts: &RecordOptions) -> anyhow::Result<(Enricher, Option<Runtime>)> {
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
    let refresher = AbortOnDrop(identities.spawn_refresher(socket.clone(), "/proc".into()));
    let runtime = Runtime {
        identities: identities.clone(),
        socket,
        _refresher: refresher,
    };
    Ok((enricher.with_cri(identities, opts.resolve_wait), Some(runtime)))
}
