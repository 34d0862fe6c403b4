//! `cargo xtask kind-e2e`: the pod-start scenario on an IPv6 kind cluster, for CI runners
//! with docker (kind's default CNI, kindnet, sets pods up with the ptp plugin, so pods pay
//! the DAD wait).
//!
//! It shares its definition with the local scenario (`dad-trace scenario`): the phases are
//! `defaults` then `inherit`, the tuning between them is the doctor's (`dad-trace tune
//! --apply`), sessions are saved as PHASE.json as `scenario -o` saves them, and the verdict is
//! `dad-trace gate`, the gate the scenario applies to the same two phases.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{as_root, run, workspace_root};

pub struct KindOptions {
    pub pods: usize,
    pub cluster: String,
    pub out: PathBuf,
    /// A static dad-trace binary built elsewhere (e.g. in a Debian container); built here otherwise.
    pub binary: Option<PathBuf>,
    pub keep: bool,
}

/// The phases the before/after gate compares, as the scenario names them (its session files
/// are PHASE.json, as `dad-trace scenario -o` writes them), and the `dad-trace gate` flags of
/// its CNI ADD limits: asked of the binary itself, the one place both are written.
fn gate_phases(binary: &Path) -> anyhow::Result<(String, String, Vec<String>)> {
    let listing: serde_json::Value = serde_json::from_str(&output(Command::new(binary).args(["scenario", "--list"]))?)?;
    let name = |key: &str| {
        listing[key]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("`dad-trace scenario --list` has no {key:?} phase"))
    };
    let flags = listing["cni_gate_flags"]
        .as_array()
        .context("`dad-trace scenario --list` has no cni_gate_flags")?
        .iter()
        .map(|flag| flag.as_str().map(str::to_string).context("a gate flag is not a string"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((name("before")?, name("after")?, flags))
}
const NAMESPACE: &str = "dad-e2e";
/// Where dad-trace runs inside the node container.
const NODE_BINARY: &str = "/usr/local/bin/dad-trace";

fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command.output().with_context(|| format!("run {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn docker_exec(node: &str, args: &[&str]) -> Command {
    let mut command = Command::new("docker");
    command.args(["exec", node]).args(args);
    command
}

/// Deletes the cluster however the run ends (unless kept for debugging).
struct Cluster {
    name: String,
    keep: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kind cluster {} kept (--keep)", self.name);
        } else {
            let _ = Command::new("kind")
                .args(["delete", "cluster", "--name", &self.name])
                .status();
        }
    }
}

fn kind_config() -> &'static str {
    "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  ipFamily: ipv6\nnodes:\n  - role: control-plane\n  - role: worker\n"
}

/// The pause image the node already has (kind node images preload it): nothing is pulled.
fn pause_image(node: &str) -> anyhow::Result<String> {
    let images = output(&mut docker_exec(node, &["crictl", "images", "-o", "json"]))?;
    let json: serde_json::Value = serde_json::from_str(&images)?;
    json["images"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|image| image["repoTags"].as_array().into_iter().flatten())
        .filter_map(serde_json::Value::as_str)
        .find(|tag| tag.contains("/pause:"))
        .map(str::to_string)
        .context("no pause image preloaded on the kind node")
}

fn pods_manifest(phase: &str, pods: usize, image: &str) -> String {
    (0..pods)
        .map(|index| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {phase}-{index}\n  namespace: {NAMESPACE}\n  labels:\n    \
                 phase: {phase}\nspec:\n  containers:\n    - name: pause\n      image: {image}\n      \
                 imagePullPolicy: Never\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Records on the node while `pods` pods of one phase start, then saves PHASE.json in `out`.
fn record_phase(node: &str, phase: &str, opts: &KindOptions, image: &str) -> anyhow::Result<PathBuf> {
    let session = format!("/tmp/{phase}.json");
    let log = format!("/tmp/{phase}.log");
    run(&mut docker_exec(
        node,
        &[
            "sh",
            "-c",
            &format!(
                "{NODE_BINARY} record --quiet --cri-socket /run/containerd/containerd.sock -o {session} >{log} 2>&1 &"
            ),
        ],
    ))?;
    let deadline = Instant::now() + Duration::from_mins(1);
    while !output(&mut docker_exec(node, &["cat", &log]))?.contains("Tracing") {
        if Instant::now() > deadline {
            bail!(
                "dad-trace did not start on {node}: {}",
                output(&mut docker_exec(node, &["cat", &log]))?
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let manifest = opts.out.join(format!("{phase}-pods.yaml"));
    std::fs::write(&manifest, pods_manifest(phase, opts.pods, image))?;
    run(Command::new("kubectl").arg("apply").arg("-f").arg(&manifest))?;
    run(Command::new("kubectl").args([
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        &format!("phase={phase}"),
        "-n",
        NAMESPACE,
        "--timeout=300s",
    ]))?;
    // Ctrl-C saves the session (atomically).
    run(&mut docker_exec(node, &["pkill", "-INT", "-f", "dad-trace record"]))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while docker_exec(node, &["pgrep", "-f", "dad-trace record"])
        .output()?
        .status
        .success()
    {
        if Instant::now() > deadline {
            bail!("dad-trace did not stop on {node}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let local = opts.out.join(format!("{phase}.json"));
    run(Command::new("docker")
        .arg("cp")
        .arg(format!("{node}:{session}"))
        .arg(&local))?;
    run(Command::new("docker")
        .arg("cp")
        .arg(format!("{node}:{log}"))
        .arg(opts.out.join(format!("{phase}.log"))))?;
    Ok(local)
}

fn doctor(node: &str, phase: &str, out: &Path) -> anyhow::Result<()> {
    let text = output(&mut docker_exec(node, &[NODE_BINARY, "doctor"]))?;
    std::fs::write(out.join(format!("doctor-{phase}.txt")), &text)?;
    eprintln!("{text}");
    Ok(())
}

pub fn kind_e2e(opts: &KindOptions) -> anyhow::Result<()> {
    for tool in ["docker", "kind", "kubectl"] {
        if !Command::new(tool)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            bail!(
                "kind-e2e needs {tool} (and a running docker): it is for CI runners, see .github/workflows/kind-e2e.yaml"
            );
        }
    }
    let binary = match &opts.binary {
        Some(binary) => binary.clone(),
        None => crate::static_binary(crate::Arch::host())?,
    };
    let (before_phase, after_phase, cni_gate_flags) = gate_phases(&binary)?;
    std::fs::create_dir_all(&opts.out)?;
    let config = opts.out.join("kind.yaml");
    std::fs::write(&config, kind_config())?;
    run(Command::new("kind")
        .args([
            "create",
            "cluster",
            "--name",
            &opts.cluster,
            "--wait",
            "180s",
            "--config",
        ])
        .arg(&config))?;
    let _cluster = Cluster {
        name: opts.cluster.clone(),
        keep: opts.keep,
    };
    let node = format!("{}-worker", opts.cluster);
    run(Command::new("docker")
        .arg("cp")
        .arg(&binary)
        .arg(format!("{node}:{NODE_BINARY}")))?;
    run(Command::new("kubectl").args(["create", "namespace", NAMESPACE]))?;
    let image = pause_image(&node)?;

    doctor(&node, &before_phase, &opts.out)?;
    let before = record_phase(&node, &before_phase, opts, &image)?;
    // The doctor's fix, where it takes effect: new namespaces copy the settings of the
    // runner's initial namespace (devconf_inherit_init_net lives there, not in the node).
    let state = opts.out.join("tune-state.json");
    run(as_root(&binary)
        .args(["tune", "--apply", "--yes", "--state"])
        .arg(&state))?;
    let after = record_phase(&node, &after_phase, opts, &image);
    let revert = run(as_root(&binary).args(["tune", "--revert", "--state"]).arg(&state));
    let after = after?;
    revert?;
    doctor(&node, &after_phase, &opts.out)?;

    let report = output(
        Command::new(&binary)
            .arg("report")
            .arg(&before)
            .arg(&after)
            .args(["--format", "markdown"]),
    )?;
    std::fs::write(opts.out.join("report.md"), &report)?;
    run(Command::new(&binary)
        .arg("report")
        .arg(&before)
        .arg(&after)
        .args(["--format", "html", "-o"])
        .arg(opts.out.join("report.html")))?;
    // kindnet sets pods up with ptp (+ portmap): the gate looks at their CNI ADD times too.
    let gate = Command::new(&binary)
        .arg("gate")
        .arg(&before)
        .arg(&after)
        .args(&cni_gate_flags)
        .output()
        .context("run dad-trace gate")?;
    let verdict = String::from_utf8_lossy(&gate.stdout).into_owned();
    std::fs::write(opts.out.join("gate.md"), &verdict)?;
    eprintln!("{verdict}");
    if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&summary)
            .with_context(|| format!("open {}", PathBuf::from(&summary).display()))?;
        write!(file, "## dad-trace kind e2e\n\n{verdict}\n{report}")?;
    }
    if !gate.status.success() {
        bail!(
            "the before/after gate failed (see {})",
            opts.out.join("gate.md").display()
        );
    }
    eprintln!(
        "kind e2e passed; reports in {}",
        workspace_root().join(&opts.out).display()
    );
    Ok(())
}
