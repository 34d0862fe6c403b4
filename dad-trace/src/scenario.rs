//! The pod-start scenario: pods are fresh network namespaces set up by a real CNI ADD, the
//! way a container runtime sets up a pod sandbox, under three sysctl phases. dad-trace
//! records each phase; its per-pod delays must explain the ADD times.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::sync::Notify;

use crate::{
    doctor::{Verdict, audit, diagnose},
    enrich::{in_netns, parse_if_inet6},
    gate::{self, GateResult},
    hist::{Delays, Summary, human},
    record::{self, BackendChoice, RecordOptions},
    report::pod_delays,
    session::Session,
    synthetic::{NETNS_DIR, NamedNetns, SyntheticPod},
    sysctl::SysctlGuard,
};

/// What a phase must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Pods wait for DAD: each pod's delay is at most its ADD time and within this many ms.
    TracksAddTime { within_ms: u64 },
    /// DAD is gone: every pod's delay is under this many ms.
    Fast { under_ms: u64 },
}

pub struct Phase {
    pub name: &'static str,
    pub description: &'static str,
    /// `net.core.devconf_inherit_init_net` during the phase.
    pub inherit_init_net: &'static str,
    /// Host-namespace IPv6 settings during the phase.
    pub host_sysctls: &'static [(&'static str, &'static str)],
    pub gate: Gate,
    /// What `dad-trace doctor` must conclude while the phase's pods are up.
    pub doctor: Verdict,
}

impl Phase {
    /// Every sysctl the phase sets.
    pub fn sysctls(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        std::iter::once(("net.core.devconf_inherit_init_net", self.inherit_init_net))
            .chain(self.host_sysctls.iter().copied())
    }
}

/// The tuning from the field, set in the host namespace.
const NAIVE: [(&str, &str); 6] = [
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv6.conf.all.dad_transmits", "0"),
    ("net.ipv6.conf.default.dad_transmits", "0"),
    ("net.ipv6.conf.all.optimistic_dad", "1"),
    ("net.ipv6.conf.default.optimistic_dad", "1"),
];

/// The story in three phases; shared with the kind end-to-end job's gates.
pub const PHASES: [Phase; 3] = [
    Phase {
        name: "defaults",
        description: "kernel defaults: every pod interface runs DAD",
        inherit_init_net: "0",
        host_sysctls: &[],
        gate: Gate::TracksAddTime { within_ms: 150 },
        doctor: Verdict::DadOn,
    },
    Phase {
        name: "naive-tuning",
        description: "accept_dad=0, dad_transmits=0, optimistic_dad=1 on all/default in the host namespace only",
        inherit_init_net: "0",
        host_sysctls: &NAIVE,
        gate: Gate::TracksAddTime { within_ms: 150 },
        doctor: Verdict::NaiveTuningTrap,
    },
    Phase {
        name: "inherit",
        description: "the same plus net.core.devconf_inherit_init_net=1: new namespaces inherit it",
        inherit_init_net: "1",
        host_sysctls: &NAIVE,
        gate: Gate::Fast { under_ms: 50 },
        doctor: Verdict::Tuned,
    },
];

/// How pods get their network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Plugin {
    /// CNI ptp with host-local IPv6 IPAM (kind's default CNI uses ptp).
    Ptp,
    /// CNI bridge with `"enableDad": true`.
    BridgeDad,
    /// No CNI: a veth pair and an address, then wait for it to settle as ptp does.
    Veth,
}

/// Bridge created by the bridge plugin; removed after the scenario.
const BRIDGE: &str = "dtbr0";

impl Plugin {
    fn config(self, ipam_dir: &Path) -> Option<String> {
        let ipam = serde_json::json!({
            "type": "host-local",
            "ranges": [[{ "subnet": "fd00:dad:cafe::/64" }]],
            "dataDir": ipam_dir,
        });
        let config = match self {
            Plugin::Ptp => serde_json::json!({
                "cniVersion": "0.4.0", "name": "dad-trace-ptp", "type": "ptp", "ipMasq": false, "ipam": ipam,
            }),
            Plugin::BridgeDad => serde_json::json!({
                "cniVersion": "0.4.0", "name": "dad-trace-bridge", "type": "bridge", "bridge": BRIDGE,
                "isGateway": true, "ipMasq": false, "enableDad": true, "ipam": ipam,
            }),
            Plugin::Veth => return None,
        };
        Some(config.to_string())
    }

    fn binary(self) -> Option<&'static str> {
        match self {
            Plugin::Ptp => Some("ptp"),
            Plugin::BridgeDad => Some("bridge"),
            Plugin::Veth => None,
        }
    }

    /// Whether the plugin and host-local are installed in `cni_dir`.
    #[must_use]
    pub fn available(self, cni_dir: &Path) -> bool {
        self.binary()
            .is_none_or(|binary| cni_dir.join(binary).exists() && cni_dir.join("host-local").exists())
    }
}

/// One pod of a phase and how long its network setup took.
#[derive(Clone, Debug, Serialize)]
pub struct PodRun {
    pub name: String,
    pub add_ns: u64,
    /// dad-trace's per-pod delay (first tentative address → last settled), if it saw any.
    pub traced_ns: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct PhaseResult {
    pub phase: &'static str,
    pub plugin: Plugin,
    pub gate: Gate,
    /// What doctor concluded while the pods were up, and what it should have.
    pub doctor: Verdict,
    pub expected_doctor: Verdict,
    pub pods: Vec<PodRun>,
    pub add: Option<Summary>,
    pub traced: Option<Summary>,
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

fn cni(plugin: Plugin, command: &str, cni_dir: &Path, config: &str, name: &str) -> anyhow::Result<()> {
    let binary = plugin.binary().context("not a CNI plugin")?;
    let mut child = Command::new(cni_dir.join(binary))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", name)
        .env("CNI_NETNS", Path::new(NETNS_DIR).join(name))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run CNI plugin {binary}"))?;
    child
        .stdin
        .take()
        .context("plugin stdin")?
        .write_all(config.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "CNI {command} {name} with {binary} failed: {} {}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Waits, as CNI plugins do, until no address of `eth0` in the namespace is tentative.
fn settle(netns: &Path) -> anyhow::Result<()> {
    in_netns(netns, || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = parse_if_inet6(&std::fs::read_to_string("/proc/thread-self/net/if_inet6")?);
            if !rows
                .iter()
                .any(|row| row.flags & dad_trace_common::IFA_F_TENTATIVE != 0)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("addresses still tentative after 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// A pod set up for a phase: held until its DEL, then dropped with its namespace.
enum Pod {
    Cni(#[expect(dead_code, reason = "held for its Drop, which removes the namespace")] NamedNetns),
    Veth(#[expect(dead_code, reason = "held for its Drop, which removes the namespace")] SyntheticPod),
}

/// Sets up `count` pods one after another, timing each; stops early when `cancelled`.
fn add_pods(
    plugin: Plugin,
    cni_dir: &Path,
    config: Option<&str>,
    prefix: &str,
    count: usize,
    cancelled: &AtomicBool,
) -> anyhow::Result<Vec<(Pod, String, Option<u64>)>> {
    let add_cni = |config: &str, name: &str| -> anyhow::Result<Pod> {
        let netns = NamedNetns::create(Path::new(NETNS_DIR), name)?;
        // On failure the namespace is dropped, and its interfaces with it.
        cni(plugin, "ADD", cni_dir, config, name)?;
        Ok(Pod::Cni(netns))
    };
    let mut pods = Vec::new();
    if let Some(config) = config {
        // The first sandbox of a phase pays for cold caches (plugin binaries, IPAM store,
        // the tracer's first lookups): set one up untimed, as a warm node would have.
        let name = format!("{prefix}warm");
        pods.push((add_cni(config, &name)?, name, None));
    }
    for index in 0..count {
        if cancelled.load(Ordering::Relaxed) {
            break;
        }
        let name = format!("{prefix}{index}");
        let started = Instant::now();
        let pod = if let Some(config) = config {
            add_cni(config, &name)?
        } else {
            let pod = SyntheticPod::create(prefix, index)?;
            settle(pod.netns.path())?;
            Pod::Veth(pod)
        };
        let add_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        pods.push((pod, name, Some(add_ns)));
    }
    Ok(pods)
}

/// Tears pods down (CNI DEL first, so IPAM releases its addresses).
fn remove_pods(plugin: Plugin, cni_dir: &Path, config: Option<&str>, pods: Vec<(Pod, String, Option<u64>)>) {
    for (pod, name, _) in pods {
        if let (Pod::Cni(_), Some(config)) = (&pod, config)
            && let Err(e) = cni(plugin, "DEL", cni_dir, config, &name)
        {
            log::warn!("{e:#}");
        }
        drop(pod);
    }
}

/// What an ADD costs without DAD: the slowest ADD of a phase where DAD is gone. A slow
/// machine (a TCG guest) spends hundreds of ms in the plugin itself; that is not DAD.
#[must_use]
pub fn add_baseline_ns(results: &[PhaseResult]) -> u64 {
    results
        .iter()
        .filter(|result| matches!(result.gate, Gate::Fast { .. }))
        .filter_map(|result| result.add.map(|add| add.max_ns))
        .min()
        .unwrap_or(0)
}

/// Judges every phase, allowing the DAD-free ADD cost (and any extra slack) on top of the
/// tolerance.
pub fn apply_gates(results: &mut [PhaseResult], extra_slack_ms: u64) {
    let baseline = add_baseline_ns(results) + extra_slack_ms * 1_000_000;
    for result in results.iter_mut() {
        result.problems = check(result.gate, &result.pods, baseline);
        if result.doctor != result.expected_doctor {
            result.problems.push(format!(
                "doctor said {:?}, expected {:?}",
                result.doctor, result.expected_doctor
            ));
        }
    }
    let position = |name: &str| results.iter().position(|result| result.phase == name);
    if let (Some(before), Some(after)) = (position(gate::BEFORE_PHASE), position(gate::AFTER_PHASE)) {
        let verdict = gate::POD_START.check(&results[before].session, &results[after].session);
        let problems = verdict
            .problems
            .iter()
            .map(|problem| format!("before/after gate: {problem}"));
        results[after].problems.extend(problems);
        results[after].before_after = Some(verdict);
    }
}

fn check(gate: Gate, pods: &[PodRun], baseline_ns: u64) -> Vec<String> {
    let mut problems = Vec::new();
    for pod in pods {
        let Some(traced) = pod.traced_ns else {
            problems.push(format!("{}: dad-trace saw no address", pod.name));
            continue;
        };
        match gate {
            Gate::TracksAddTime { within_ms } => {
                if traced > pod.add_ns || pod.add_ns - traced > within_ms * 1_000_000 + baseline_ns {
                    problems.push(format!(
                        "{}: traced {} vs ADD {} (must be ≤ ADD and within {within_ms} ms + the {} ADD costs without DAD)",
                        pod.name,
                        human(traced),
                        human(pod.add_ns),
                        human(baseline_ns)
                    ));
                }
            }
            Gate::Fast { under_ms } => {
                if traced >= under_ms * 1_000_000 {
                    problems.push(format!(
                        "{}: traced {} (must be under {under_ms} ms)",
                        pod.name,
                        human(traced)
                    ));
                }
            }
        }
    }
    problems
}

pub struct ScenarioOptions {
    pub plugin: Plugin,
    pub cni_dir: PathBuf,
    pub pods: usize,
    pub backend: BackendChoice,
    /// Names of the phases to run, in order.
    pub phases: Vec<&'static Phase>,
    pub prefix: String,
    /// Added to every `TracksAddTime` tolerance: timing jitter of slow machines (emulated
    /// VMs); 0 on real hardware.
    pub extra_slack_ms: u64,
}

/// Runs one phase: sysctls set (and restored when it ends, however it ends), recording
/// started, pods added one by one, recording stopped, pods removed.
pub async fn run_phase(
    phase: &'static Phase,
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
    let recording = record::record(RecordOptions {
        backend: opts.backend,
        // The scenario names its own namespaces; no runtime knows them.
        cri_socket: crate::cri::SocketChoice::Off,
        stop: Some(stop.clone()),
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
        async move {
            let pods = tokio::task::spawn_blocking(move || {
                add_pods(plugin, &cni_dir, config.as_deref(), &prefix, count, &cancelled)
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
        .filter_map(|(_, name, add_ns)| Some((name, (*add_ns)?)))
        .map(|(name, add_ns)| PodRun {
            name: name.clone(),
            add_ns,
            traced_ns: traced.iter().find(|pod| &pod.pod == name).map(|pod| pod.delay_ns),
        })
        .collect();
    let doctor = tokio::task::block_in_place(|| diagnose(&audit(Path::new(NETNS_DIR))).verdict);
    let (plugin, cni_dir) = (opts.plugin, opts.cni_dir.clone());
    tokio::task::spawn_blocking(move || remove_pods(plugin, &cni_dir, config.as_deref(), pods)).await?;
    sysctls.restore()?;
    Ok(PhaseResult {
        phase: phase.name,
        plugin: opts.plugin,
        gate: phase.gate,
        doctor,
        expected_doctor: phase.doctor,
        add: Delays::from_values(runs.iter().map(|run| run.add_ns)).summary(),
        traced: Delays::from_values(runs.iter().filter_map(|run| run.traced_ns)).summary(),
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
        let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        record::release_signals();
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
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
        remove_bridge().await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if cancelled.load(Ordering::Relaxed) {
        bail!("interrupted; sysctls restored and pods removed");
    }
    apply_gates(&mut results, opts.extra_slack_ms);
    Ok(results)
}

async fn remove_bridge() {
    let removed = async {
        use futures::TryStreamExt as _;
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        let link = handle.link().get().match_name(BRIDGE.into()).execute().try_next().await;
        if let Ok(Some(link)) = link {
            handle.link().del(link.header.index).execute().await?;
        }
        anyhow::Ok(())
    };
    if let Err(e) = removed.await {
        log::warn!("could not remove bridge {BRIDGE}: {e:#}");
    }
}

/// The before/after table.
#[must_use]
pub fn render(results: &[PhaseResult]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "\nphase          plugin      pods   ADD p50    ADD p99   traced p50  traced p99  doctor           gate\n",
    );
    let cell =
        |summary: Option<Summary>, pick: fn(&Summary) -> u64| summary.as_ref().map_or("-".into(), |s| human(pick(s)));
    for result in results {
        let _ = writeln!(
            out,
            "{:<14} {:<10} {:>5} {:>9} {:>9} {:>11} {:>11}  {:<16} {}",
            result.phase,
            result.plugin_label(),
            result.pods.len(),
            cell(result.add, |s| s.p50_ns),
            cell(result.add, |s| s.p99_ns),
            cell(result.traced, |s| s.p50_ns),
            cell(result.traced, |s| s.p99_ns),
            format!("{:?}", result.doctor),
            if result.problems.is_empty() {
                "ok".to_string()
            } else {
                format!("FAILED ({})", result.problems.len())
            }
        );
    }
    let baseline = add_baseline_ns(results);
    if baseline > 0 {
        let _ = writeln!(
            out,
            "ADD cost without DAD (slowest ADD of the DAD-free phase): {}",
            human(baseline)
        );
    }
    for verdict in results.iter().filter_map(|result| result.before_after.as_ref()) {
        let _ = write!(
            out,
            "\nBefore/after gate ({} vs {}, as in the kind CI job):\n{}",
            gate::BEFORE_PHASE,
            gate::AFTER_PHASE,
            verdict.render()
        );
    }
    for result in results {
        for problem in &result.problems {
            let _ = writeln!(out, "  {}: {problem}", result.phase);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, add_ms: u64, traced_ms: Option<u64>) -> PodRun {
        PodRun {
            name: name.into(),
            add_ns: add_ms * 1_000_000,
            traced_ns: traced_ms.map(|ms| ms * 1_000_000),
        }
    }

    #[test]
    fn gates_judge_pods() {
        let tracks = Gate::TracksAddTime { within_ms: 150 };
        let problems =
            |gate, add_ms, traced_ms, baseline_ns| check(gate, &[run("a", add_ms, traced_ms)], baseline_ns).len();
        assert_eq!(problems(tracks, 2000, Some(1900), 0), 0);
        assert_eq!(problems(tracks, 2000, Some(1700), 0), 1, "too far below ADD");
        assert_eq!(
            problems(tracks, 2000, Some(1700), 340_000_000),
            0,
            "a slow plugin is not DAD"
        );
        assert_eq!(problems(tracks, 2000, Some(2100), 0), 1, "above ADD");
        assert_eq!(problems(tracks, 2000, None, 0), 1, "unseen");
        let fast = Gate::Fast { under_ms: 50 };
        assert_eq!(problems(fast, 10, Some(1), 0), 0);
        assert_eq!(problems(fast, 10, Some(60), 0), 1);
    }

    #[test]
    fn phases_tell_the_story() {
        let names: Vec<_> = PHASES.iter().map(|p| p.name).collect();
        assert_eq!(names, ["defaults", "naive-tuning", "inherit"]);
        let inherit = |phase: &Phase| {
            phase
                .sysctls()
                .find(|(k, _)| *k == "net.core.devconf_inherit_init_net")
                .map(|(_, v)| v)
        };
        assert_eq!(PHASES.map(|p| inherit(&p)), [Some("0"), Some("0"), Some("1")]);
        assert!(
            PHASES[1]
                .sysctls()
                .any(|setting| setting == ("net.ipv6.conf.default.accept_dad", "0"))
        );
        assert_eq!(
            PHASES[0].sysctls().count(),
            1,
            "defaults touch only the inheritance switch"
        );
    }

    #[test]
    fn plugin_configs_are_cni_json() {
        let config: serde_json::Value =
            serde_json::from_str(&Plugin::BridgeDad.config(Path::new("/tmp/x")).expect("cni")).expect("json");
        assert_eq!(
            (config["type"].as_str(), config["enableDad"].as_bool()),
            (Some("bridge"), Some(true))
        );
        assert_eq!(config["ipam"]["ranges"][0][0]["subnet"], "fd00:dad:cafe::/64");
        assert!(Plugin::Veth.config(Path::new("/tmp/x")).is_none());
        assert!(Plugin::Veth.available(Path::new("/nonexistent")));
        assert!(!Plugin::Ptp.available(Path::new("/nonexistent")));
    }
}
