//! What [`super::Started::start`] sets up: the kernel programs and their readers, the
//! metrics endpoint, the enricher and the runtime it asks, the synthetic pods.
use std::{path::Path, sync::Arc};

use anyhow::Context as _;
use chrono::Utc;
use dad_trace_common::{ProcStat, sockets::SocketStat};
use tokio::sync::mpsc;

use super::{RecordOptions, signals::StopSignals};
use crate::{
    kernel::{
        self, Attached, Backend, Kernel,
        loader::{self, LostCounter, ProcStats, Reading},
        sockets::{SocketCounts, SocketFailure},
    },
    node::{
        self, host,
        netns::NETNS_DIR,
        synthetic::{self, SyntheticPod},
    },
    output::{ServeOptions, metrics::Metrics, serve, sinks::Sinks},
    record::{
        clock::{Clock, monotonic_ns},
        enrich::{
            Enricher,
            cri::{Identities, SocketChoice},
        },
        recorder::Recorder,
    },
    session::{Session, SocketTracing},
};

/// The kernel side of a recording: the attached programs and what counts their losses.
/// Dropping it detaches them.
pub(super) struct Programs {
    /// Held for its drop, which detaches the programs.
    _ebpf: aya::Ebpf,
    kernel: Kernel,
    backend: Backend,
    lost: LostCounter,
    /// The CNI call programs' counters, when those programs run.
    proc_stats: Option<ProcStats>,
    /// The socket error program's counts and its name, when it runs.
    sockets: Option<(SocketCounts, &'static str)>,
    bin_dirs: Vec<String>,
    attached_ns: u64,
}

impl Programs {
    /// Discovers the kernel, attaches the best backend `opts` allows, and starts the ring
    /// buffer readers.
    pub(super) fn attach(opts: &RecordOptions) -> anyhow::Result<(Self, mpsc::Receiver<Vec<Reading>>)> {
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
            sockets,
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
        let sockets = match sockets {
            Ok(hook) => Some((SocketCounts::take(&mut ebpf)?, hook.target.program)),
            Err(why) => {
                log::warn!("application socket errors are not counted: {why}");
                None
            }
        };
        let readings = loader::spawn_readers(&mut ebpf, 256, proc_stats.is_some())?;
        let programs = Self {
            _ebpf: ebpf,
            kernel,
            backend,
            lost,
            proc_stats,
            sockets,
            bin_dirs,
            attached_ns,
        };
        Ok((programs, readings))
    }

    /// A session with this node's header and no events yet.
    pub(super) fn session_header(&self) -> Session {
        Session::new(self.backend, self.kernel.release.clone(), node::hostname(), Utc::now())
    }

    /// The plugin directories whose calls are followed, when they are.
    pub(super) fn cni_dirs(&self) -> Option<&[String]> {
        self.proc_stats.as_ref().map(|_| self.bin_dirs.as_slice())
    }

    /// Records the kernel could not hand over (ring buffer full).
    pub(super) fn lost(&self) -> u64 {
        self.lost.total()
    }

    /// The recorder of these programs' readings, timed from their attach.
    pub(super) fn recorder(&self, enricher: Enricher, sinks: Sinks, session: Session) -> Recorder<Enricher, Sinks> {
        let recorder = Recorder::new(enricher, sinks, Clock::now(), session).attached_at(self.attached_ns);
        match self.cni_dirs() {
            Some(dirs) => recorder.with_cni(dirs.to_vec()),
            None => recorder,
        }
    }

    /// The socket error counts now (none when the program does not run).
    pub(super) fn socket_failures(&self) -> Vec<SocketFailure> {
        let Some((counts, _)) = &self.sockets else {
            return Vec::new();
        };
        let (failures, undecodable) = counts.read();
        if undecodable > 0 {
            log::warn!("{undecodable} socket error counts could not be decoded");
        }
        failures
    }

    /// How socket errors were counted, and what the program left out.
    pub(super) fn socket_tracing(&self) -> Option<SocketTracing> {
        let (counts, program) = self.sockets.as_ref()?;
        Some(SocketTracing {
            program: (*program).to_string(),
            other_family: counts.stat(SocketStat::OtherFamily),
            unreadable: counts.stat(SocketStat::Unreadable),
            lost: counts.stat(SocketStat::Lost),
            forgotten: 0,
        })
    }

    /// What the CNI programs could not record: their records lost, environments cut short.
    pub(super) fn count_cni_losses(&self, session: &mut Session) {
        let (Some(cni), Some(stats)) = (session.cni.as_mut(), &self.proc_stats) else {
            return;
        };
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
}

pub(super) fn announce(opts: &RecordOptions, session: &Session, cni_dirs: Option<&[String]>) {
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

/// A background task that stops with its owner.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The metrics endpoint's task.
pub(super) type Server = AbortOnDrop;

/// Creates the synthetic pods; returns whether a signal asked to stop meanwhile. On a signal
/// it still waits for the creator, so the pods it made are removed on drop.
pub(super) async fn synthetic_pods(
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
pub(super) async fn metrics(
    options: Option<ServeOptions>,
    programs: &Programs,
) -> anyhow::Result<(Option<Arc<Metrics>>, Option<Server>)> {
    let Some(options) = options else {
        return Ok((None, None));
    };
    let metrics = Arc::new(Metrics::new(
        &programs.backend.to_string(),
        &programs.kernel.release,
        options.per_pod_labels,
    ));
    let (server, _) = serve::start(options.listen, metrics.clone(), serve::Limits::for_this_process()).await?;
    eprintln!("Serving Prometheus metrics on http://{}/metrics", options.listen);
    Ok((Some(metrics), Some(AbortOnDrop(server))))
}

/// The runtime, asked in the background for sandboxes and their containers' starts.
pub(super) struct Runtime {
    identities: Identities,
    socket: std::path::PathBuf,
    _refresher: AbortOnDrop,
}

impl Runtime {
    /// One more look, as a recording ends; a runtime that does not answer is said, not fatal.
    pub(super) async fn refresh_now(&self) {
        if let Err(e) = self.identities.refresh_now(&self.socket, Path::new("/proc")).await {
            log::warn!("pod start times from the runtime: {e}");
        }
    }
}

/// The enricher, naming pods through the runtime when a CRI socket is in reach.
pub(super) async fn enricher(opts: &RecordOptions) -> anyhow::Result<(Enricher, Option<Runtime>)> {
    let enricher = Enricher::new(Path::new("/proc"), &host::path(NETNS_DIR))?;
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
