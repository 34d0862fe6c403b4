//! The pod-start scenario: pods are fresh network namespaces set up by a real CNI ADD, the
//! way a container runtime sets up a pod sandbox, under three sysctl phases. dad-trace
//! records each phase; its per-pod delays must explain the ADD times.
//!
//! [`phases`] (the story and the one source of phase names) → [`cni`] and [`pods`] (the
//! workload) → [`gates`] (what each phase must show) → [`render`] (the results).
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::bail;
use serde::Serialize;
use tokio::sync::Notify;

use self::{
    phases::{Expectation, ScenarioPhase},
    plugin::Plugin,
};
use crate::{
    hist::{Delays, Summary},
    kernel::BackendChoice,
    node::{
        doctor::{Verdict, audit, diagnose},
        netns::NETNS_DIR,
        sysctl::SysctlGuard,
    },
    record::enrich::cri::SocketChoice,
    report::{gate::GateResult, pod_delays},
    session::Session,
    tracer::{self, RecordOptions, signals::StopSignals},
};

pub mod app;
pub mod gates;
pub mod phases;
pub mod plugin;
pub mod pod_batch;
mod progress;
pub mod render;

/// One pod of a phase and how long its network setup took.
#[derive(Clone, Debug, Serialize)]
pub struct PodRun {
    pub name: String,
    /// The whole setup: namespace, then the CNI ADD (or veth and address, then the wait).
    pub add_ns: u64,
    /// dad-trace's per-pod delay (first tentative address → last settled), if it saw any.
    pub traced_ns: Option<u64>,
    /// The CNI ADD alone, as the scenario timed it (spawn → reaped), with a CNI plugin.
    pub cni_add_ns: Option<u64>,
    /// The same ADD as dad-trace traced it from the kernel (the session's `cni_add_ns`).
    pub traced_cni_add_ns: Option<u64>,
    /// Binds the pod's application saw fail (`EADDRNOTAVAIL`) before one worked.
    pub app_failures: Option<u64>,
    /// The same failures as dad-trace counted them (the session's `socket_errors`).
    pub traced_app_failures: u64,
}

impl PodRun {
    /// |measured − traced| ADD time, when both are known.
    #[must_use]
    pub fn add_difference_ns(&self) -> Option<u64> {
        Some(self.cni_add_ns?.abs_diff(self.traced_cni_add_ns?))
    }
}

#[derive(Debug, Serialize)]
pub struct PhaseResult {
    pub phase: &'static str,
    pub plugin: Plugin,
    pub gate: Expectation,
    /// What doctor concluded while the pods were up, and what it should have.
    pub doctor: Verdict,
    pub expected_doctor: Verdict,
    pub pods: Vec<PodRun>,
    pub add: Option<Summary>,
    pub traced: Option<Summary>,
    /// |measured − traced| CNI ADD time over the pods (a CNI plugin only).
    pub add_agreement: Option<Summary>,
    /// Gate violations, empty when the phase tells the expected story.
    pub problems: Vec<String>,
    /// On the "after" phase: the before/after gate the kind CI job applies too.
    pub before_after: Option<GateResult>,
    #[serde(skip)]
    pub session: Session,
}

impl PhaseResult {
    #[must_use]
    pub fn plugin_label(&self) -> String {
        format!("{:?}", self.plugin).to_lowercase()
    }
}

pub struct ScenarioOptions {
    pub plugin: Plugin,
    pub cni_dir: PathBuf,
    pub pods: usize,
    pub backend: BackendChoice,
    /// Names of the phases to run, in order.
    pub phases: Vec<&'static ScenarioPhase>,
    pub prefix: String,
    /// Timing slack of slow machines (emulated VMs); none on real hardware.
    pub slack: gates::Slack,
    /// Each phase's spans go to this collector.
    pub otlp: Option<crate::output::otlp::OtlpConfig>,
}

/// Runs one phase: sysctls set (and restored when it ends, however it ends), recording
/// started, pods added one by one, recording stopped, pods removed.
pub async fn run_phase(
    phase: &'static ScenarioPhase,
    opts: &ScenarioOptions,
    cancelled: Arc<AtomicBool>,
) -> anyhow::Result<PhaseResult> {
    let mut sysctls = SysctlGuard::default();
    for (name, value) in phase.sysctls() {
        sysctls.set(name, value)?;
    }
    let ipam_dir = tempfile::Builder::new().prefix("dad-trace-ipam-").tempdir()?;
    let config = opts.plugin.config(ipam_dir.path());
    let stop = Arc::new(Notify::new());
    let recording = tracer::record(RecordOptions {
        backend: opts.backend,
        // The scenario names its own namespaces; no runtime knows them.
        cri_socket: SocketChoice::Off,
        stop: Some(stop.clone()),
        cni_bin_dirs: vec![opts.cni_dir.clone()],
        otlp: opts.otlp.clone(),
        ..RecordOptions::default()
    });
    let prefix = format!("{}{}-", opts.prefix, phase.name.chars().next().unwrap_or('p'));
    let workload = {
        let (plugin, cni_dir, config, prefix, count) = (
            opts.plugin,
            opts.cni_dir.clone(),
            config.clone(),
            prefix.clone(),
            opts.pods,
        );
        let cancelled = cancelled.clone();
        let progress = progress::PodProgress::new(phase.name, count);
        async move {
            let pods = tokio::task::spawn_blocking(move || {
                pod_batch::add_pods(
                    plugin,
                    &cni_dir,
                    config.as_deref(),
                    &prefix,
                    count,
                    &cancelled,
                    &progress,
                )
            })
            .await;
            stop.notify_one();
            pods
        }
    };
    // The recorder is polled first: it attaches before the first pod is added.
    let (session, pods) = tokio::join!(recording, workload);
    let pods = pods?;
    let session = session?;
    let pods = pods?;
    let traced = pod_delays(&session.events);
    let runs: Vec<PodRun> = pods
        .iter()
        .filter_map(|added| Some((added, added.add_ns?)))
        .map(|(added, add_ns)| PodRun {
            name: added.name.clone(),
            add_ns,
            traced_ns: traced.iter().find(|pod| pod.pod == added.name).map(|pod| pod.delay_ns),
            cni_add_ns: added.cni_add_ns,
            traced_cni_add_ns: session
                .pods
                .iter()
                .find(|pod| pod.netns_name.as_deref() == Some(added.name.as_str()))
                .and_then(|pod| pod.cni_add_ns),
            app_failures: added.app.map(|app| app.failures),
            traced_app_failures: session
                .socket_errors
                .iter()
                .filter(|error| error.netns_name.as_deref() == Some(added.name.as_str()) && error.comm == app::COMM)
                .map(|error| error.count)
                .sum(),
        })
        .collect();
    let doctor = tokio::task::block_in_place(|| diagnose(&audit(Path::new(NETNS_DIR))).verdict);
    let (plugin, cni_dir) = (opts.plugin, opts.cni_dir.clone());
    tokio::task::spawn_blocking(move || pod_batch::remove_pods(plugin, &cni_dir, config.as_deref(), pods)).await?;
    sysctls.restore()?;
    Ok(PhaseResult {
        phase: phase.name,
        plugin: opts.plugin,
        gate: phase.gate,
        doctor,
        expected_doctor: phase.doctor,
        add: Delays::from_values(runs.iter().map(|run| run.add_ns)).summary(),
        traced: Delays::from_values(runs.iter().filter_map(|run| run.traced_ns)).summary(),
        add_agreement: Delays::from_values(runs.iter().filter_map(PodRun::add_difference_ns)).summary(),
        problems: Vec::new(),
        before_after: None,
        pods: runs,
        session,
    })
}

/// Runs the phases in order; Ctrl-C or SIGTERM ends the current phase early (its sysctls
/// restored, its pods removed) and skips the rest.
pub async fn run(opts: &ScenarioOptions) -> anyhow::Result<Vec<PhaseResult>> {
    if !opts.plugin.available(&opts.cni_dir) {
        bail!(
            "CNI plugin {:?} or host-local not found in {}: install containernetworking-plugins, or use --plugin veth",
            opts.plugin,
            opts.cni_dir.display()
        );
    }
    let cancelled = Arc::new(AtomicBool::new(false));
    let watcher = {
        let cancelled = cancelled.clone();
        let mut signals = StopSignals::install()?;
        tokio::spawn(async move {
            signals.recv().await;
            cancelled.store(true, Ordering::Relaxed);
        })
    };
    let mut results = Vec::new();
    let mut failure = None;
    for phase in &opts.phases {
        if cancelled.load(Ordering::Relaxed) {
            break;
        }
        eprintln!(
            "== phase {}: {} ({} pods, {:?})",
            phase.name, phase.description, opts.pods, opts.plugin
        );
        match run_phase(phase, opts, cancelled.clone()).await {
            Ok(result) => results.push(result),
            Err(e) => {
                failure = Some(e.context(format!("phase {}", phase.name)));
                break;
            }
        }
    }
    watcher.abort();
    if opts.plugin == Plugin::BridgeDad {
        plugin::remove_bridge().await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if cancelled.load(Ordering::Relaxed) {
        bail!("interrupted; sysctls restored and pods removed");
    }
    gates::apply_gates(&mut results, opts.slack);
    Ok(results)
}
