//! One recording from attach to the saved session, as `record`, `serve` and the scenario run
//! it: [`record`] is four stages on one owner, each consuming the one before, so their order
//! is the types' and not a comment's:
//!
//! 1. [`Started::start`]: signal handlers first (a Ctrl-C during start-up still ends in a
//!    saved session and no leftovers), then the kernel, the programs, the outputs, the
//!    enricher, the synthetic pods.
//! 2. [`Started::follow`]: readings to the recorder until a stop condition.
//! 3. [`Followed::drain`]: what the kernel already sent still counts, and the runtime is
//!    asked once more (containers started since its last refresh).
//! 4. [`Drained::close`]: the session, then the programs detached before the synthetic pods
//!    go (their removal is not traced as aborts); the file saved last.
use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::{Notify, mpsc};

use self::{
    signals::StopSignals,
    start::{Programs, Runtime, Server},
};
use crate::{
    kernel::{BackendChoice, VMLINUX_BTF, loader::Reading},
    node::{synthetic::SyntheticPod, sysctl},
    output::{
        LiveView, ServeOptions, filter, live,
        otlp::{self, export::Finisher},
        sinks::Sinks,
    },
    record::{
        clock::{monotonic_ns, peak_rss_kib},
        enrich::{Enricher, cri::SocketChoice},
        recorder::Recorder,
    },
    session::{Session, SocketTracing},
};

pub mod signals;
mod start;

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
    /// An address tentative this long is said to be stuck (a line, a gauge), while it lasts.
    pub stuck_after: Duration,
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
    /// Send spans to a collector.
    pub otlp: Option<otlp::OtlpConfig>,
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
            stuck_after: Duration::from_secs(10),
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
            otlp: None,
        }
    }
}

impl RecordOptions {
    /// Whether anything is shown on standard output while recording.
    fn shows_live(&self) -> bool {
        self.lines || self.live.interval.is_some() || self.live.format == live::LiveFormat::Jsonl
    }
}

/// Records until stopped (Ctrl-C, SIGTERM, `--duration`, `--count` addresses or intervals,
/// all synthetic pods settled, or `stop`), then saves the session if asked.
pub async fn record(opts: RecordOptions) -> anyhow::Result<Session> {
    // On the heap: a recording's state is large, and callers keep this future in theirs.
    let started = Box::pin(Started::start(opts)).await?;
    Box::pin(started.follow()).await.drain().await.close().await
}

/// A recording attached, its outputs and enricher ready. Fields drop in declaration order:
/// on any early return the programs go before the synthetic pods.
pub struct Started {
    programs: Programs,
    readings: mpsc::Receiver<Vec<Reading>>,
    recorder: Recorder<Enricher, Sinks>,
    runtime: Option<Runtime>,
    _server: Option<Server>,
    /// Sends the last spans once the recording closed.
    otlp: Option<Finisher>,
    pods: Vec<SyntheticPod>,
    /// A signal came while the synthetic pods were created: nothing to follow.
    interrupted: bool,
    signals: StopSignals,
    opts: RecordOptions,
}

/// Stage 2 done: the recording stopped, maybe because of a failure.
pub struct Followed {
    started: Started,
    failure: Option<anyhow::Error>,
}

/// Stage 3 done: every reading the kernel sent is in the recorder.
pub struct Drained(Followed);

impl Started {
    /// Stage 1.
    pub async fn start(opts: RecordOptions) -> anyhow::Result<Self> {
        crate::kernel::check_privileges()?;
        // First thing: a signal during start-up must still end in a saved session.
        let mut signals = StopSignals::install()?;
        let (programs, readings) = Programs::attach(&opts)?;
        let (metrics, server) = start::metrics(opts.serve, &programs).await?;
        let (enricher, runtime) = start::enricher(&opts).await?;
        let mut session = programs.session_header();
        session.sysctls_start = sysctl::snapshot();
        start::announce(&opts, &session, programs.cni_dirs());
        let (pods, interrupted) = match opts.synthetic_pods {
            Some(count) => start::synthetic_pods(count, &opts.synthetic_prefix, &mut signals).await?,
            None => (Vec::new(), false),
        };
        let (spans, otlp) = match &opts.otlp {
            Some(config) => {
                let (spans, finisher) = otlp::Otlp::start(config).context("--otlp-endpoint")?;
                (Some(spans), Some(finisher))
            }
            None => (None, None),
        };
        let mut sinks = Sinks::new(opts.keep_events)
            .with_filter(opts.filter.clone())
            .with_metrics(metrics)
            .with_otlp(spans)
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
        let recorder = programs
            .recorder(enricher, sinks, session)
            .stuck_after(u64::try_from(opts.stuck_after.as_nanos()).unwrap_or(u64::MAX));
        Ok(Self {
            programs,
            readings,
            recorder,
            runtime,
            _server: server,
            otlp,
            pods,
            interrupted,
            signals,
            opts,
        })
    }

    /// Stage 2: feeds readings to the recorder until a stop condition.
    pub async fn follow(mut self) -> Followed {
        let failure = if self.interrupted {
            None
        } else {
            self.follow_until_stopped().await
        };
        Followed { started: self, failure }
    }

    /// Returns why it stopped when that is a failure.
    async fn follow_until_stopped(&mut self) -> Option<anyhow::Error> {
        let opts = &self.opts;
        let recorder = &mut self.recorder;
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
                batch = self.readings.recv() => match batch {
                    Some(batch) => tokio::task::block_in_place(|| {
                        for reading in batch {
                            recorder.on_reading(reading);
                        }
                    }),
                    None => return Some(anyhow::anyhow!("the ring buffer reader stopped")),
                },
                _ = sweep.tick() => tokio::task::block_in_place(|| {
                    recorder.socket_counts(self.programs.socket_failures(), monotonic_ns());
                    recorder.sweep(monotonic_ns(), stale_ns, self.programs.lost());
                }),
                _ = interval.tick(), if opts.live.interval.is_some() => {
                    tokio::task::block_in_place(|| recorder.tick(monotonic_ns()));
                    if opts.live.intervals.is_some_and(|count| recorder.output().intervals() >= count) {
                        return None;
                    }
                }
                () = self.signals.recv() => return None,
                () = &mut deadline => return None,
                () = external_stop.notified(), if opts.stop.is_some() => return None,
                () = &mut synthetic_deadline, if recorder.output().follows_synthetic() => {
                    eprintln!("Synthetic pods did not all settle within 60 s; stopping.");
                    return None;
                }
            }
            let output = recorder.output();
            if opts.count.is_some_and(|count| output.finished() >= count) || output.synthetic_done() {
                return None;
            }
        }
    }
}

impl Followed {
    /// Stage 3: whatever the kernel already sent still counts (the readers gather for a
    /// moment before they hand a batch over); containers started since the runtime's last
    /// refresh count in the pods' start.
    pub async fn drain(mut self) -> Drained {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = &mut self.started;
        tokio::task::block_in_place(|| {
            while let Ok(batch) = started.readings.try_recv() {
                for reading in batch {
                    started.recorder.on_reading(reading);
                }
            }
        });
        if let Some(runtime) = &started.runtime {
            runtime.refresh_now().await;
        }
        Drained(self)
    }
}

impl Drained {
    /// Stage 4: the session, with what the kernel could not record; the programs go before
    /// the synthetic pods; the file is saved last.
    pub async fn close(self) -> anyhow::Result<Session> {
        let Followed { started, failure } = self.0;
        let Started {
            programs,
            recorder,
            pods,
            opts,
            otlp,
            ..
        } = started;
        let (mut session, forgotten) = tokio::task::block_in_place(|| {
            let mut recorder = recorder;
            // bcc's count means exactly that many intervals: no partial one after the last.
            let counted_out = opts
                .live
                .intervals
                .is_some_and(|count| recorder.output().intervals() >= count);
            // The last counts: failures since the last sweep count too.
            recorder.socket_counts(programs.socket_failures(), monotonic_ns());
            recorder.close_live(monotonic_ns(), !counted_out);
            let forgotten = recorder.socket_keys_forgotten();
            (recorder.into_session(programs.lost(), monotonic_ns()), forgotten)
        });
        session.sockets = programs
            .socket_tracing()
            .map(|tracing| SocketTracing { forgotten, ..tracing });
        session.sysctls_end = sysctl::snapshot();
        programs.count_cni_losses(&mut session);
        drop(programs);
        drop(pods);
        if let Some(path) = &opts.output {
            session.save(path)?;
            eprintln!("Session saved to {}", path.display());
        }
        // After the file: a collector that does not answer delays the exit, never the session.
        if let (Some(finisher), Some(config)) = (otlp, &opts.otlp) {
            let stats = finisher.finish(otlp::FINISH_DEADLINE).await;
            eprintln!("{}", otlp::report(&stats, &config.url));
        }
        log::debug!("peak resident memory: {} KiB", peak_rss_kib());
        failure.map_or(Ok(session), Err)
    }
}
