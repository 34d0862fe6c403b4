//! `cargo xtask <task>`: everything the README and CI run, in one place.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod apt;
mod arch;
mod check;
mod kind;
mod mutants;
mod progress;
mod release;
mod setup;
mod sid;
mod tiers;
mod vm;

use arch::Arch;
use release::{dist, image};
use setup::Need;
#[derive(Parser)]
#[command(about = "dad-trace project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building needs: the eBPF toolchain (Debian packages, bpf-linker, a rustup
    /// link). Idempotent. `run`/`demo` add the CNI plugins, `test` the test stack.
    Setup {
        /// Also what `test` needs: the test stack, and sid's containerd unpacked in the cache.
        #[arg(long)]
        test: bool,
    },
    /// Set up, build, and trace 20 synthetic pods coming up (root). Extra args go to `record`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run the pod-start scenario with a real CNI plugin: defaults, naive
    /// tuning, and tuning that reaches new namespaces (root). Sysctls are restored after.
    Demo {
        /// Pods per phase.
        #[arg(long, default_value_t = 20)]
        pods: usize,
        /// Also send the phases' pod start as OpenTelemetry traces to a receiver started here,
        /// and print them (trace ids, spans as trees) at the end.
        #[arg(long)]
        otlp: bool,
        /// Extra `dad-trace scenario` arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run every test tier available on this machine.
    Test,
    /// Fuzz the session parser and every report renderer (cargo fuzz, nightly).
    Fuzz {
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// Boot the VM kernel matrix under qemu (x86-64 and arm64 guests) and run the kernel
    /// tests there (root).
    VmTest {
        /// Only these guests, by label (`5.10-amd64`, `6.1-arm64`, ...).
        #[arg(long)]
        only: Vec<String>,
    },
    /// rustfmt check and clippy (userspace and the eBPF crate separately).
    Lint,
    /// Mutation testing of the pure modules (those whose doc comment says `Pure: mutation-tested
    /// (cargo xtask mutants).`, or `Mutation-tested ..., not pure: <why>`) with the unit tests:
    /// the caught share per file, goal 95% (cargo-mutants; over an hour on 2 cores for all).
    Mutants {
        /// Only these modules, by module path (`record::track`; `session` for all of
        /// `session/`) or file stem (`track`, `podstart` for both).
        #[arg(long)]
        only: Vec<String>,
        /// Test only what the last run did not catch (its results in target/mutants).
        #[arg(long)]
        iterate: bool,
    },
    /// The pod-start scenario on an IPv6 kind cluster, gated like the local scenario (CI
    /// runners with docker, kind and kubectl; see .github/workflows/kind-e2e.yaml).
    KindE2e {
        /// Pods per phase (as `dad-trace scenario --pods`).
        #[arg(long, default_value_t = 20)]
        pods: usize,
        #[arg(long, default_value = "dad-trace-e2e")]
        cluster: String,
        /// Sessions, reports and the gate verdict land here.
        #[arg(long, default_value = "target/kind-e2e")]
        out: PathBuf,
        /// A static dad-trace binary built elsewhere; built here otherwise.
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Keep the cluster afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Measure kernel cost, churn, big reports, a soak, a duplicate flood and accuracy
    /// (root; long: not part of CI) and write bench/RESULTS.md.
    Bench {
        /// Options of the benchmark itself (`--only PART`, `--pods`, `--pairs`, `--veths`,
        /// `--soak-pods`, `--output`, ...: `dad-trace-bench --help`, the crate in bench/), passed
        /// through.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the static binaries (x86-64 and aarch64) and the container image as one
    /// multi-platform OCI archive (no container engine needed): target/dad-trace-image.tar,
    /// for `ctr images import` or `podman load`.
    Image,
    /// The release files in target/dist: a tarball per architecture (static binary, manual
    /// pages, completions, README, licences), the image as an OCI archive, and SHA256SUMS.
    /// Built in the same directory, the same commit gives the same bytes.
    Dist,
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {command:?}");
    let status = command.status().with_context(|| format!("spawn {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn succeeds(command: &mut Command) -> bool {
    command.output().is_ok_and(|output| output.status.success())
}

/// A cargo command in the workspace, with unstable flags allowed for the eBPF build.
pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root()).env("RUSTC_BOOTSTRAP", "1");
    command
}

/// `binary` run as root: directly when we are, through sudo otherwise.
fn as_root(binary: &Path) -> Command {
    if is_root() {
        Command::new(binary)
    } else {
        let mut command = Command::new("sudo");
        command.arg(binary);
        command
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// Runs the scenario `command` sending its spans to an OTLP receiver started for it, then
/// prints what the receiver got. The receiver prints its endpoint first, and its traces once
/// its standard input closes.
fn demo_with_receiver(command: &mut Command) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    run(cargo().args(["build", "--release", "--package", "otlp-receiver"]))?;
    let mut receiver = Command::new(workspace_root().join("target/release/otlp-receiver"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("start otlp-receiver")?;
    let mut lines = std::io::BufReader::new(receiver.stdout.take().context("receiver stdout")?).lines();
    let endpoint = lines.next().context("the receiver said nothing")??;
    println!("OTLP receiver at {endpoint}");
    let scenario = run(command.args(["--otlp-endpoint", &endpoint]));
    drop(receiver.stdin.take());
    println!("\nTraces the receiver got:");
    for line in lines {
        println!("{}", line?);
    }
    receiver.wait()?;
    scenario
}

fn build_release() -> anyhow::Result<PathBuf> {
    run(cargo().args(["build", "--release", "--package", "dad-trace"]))?;
    Ok(workspace_root().join("target/release/dad-trace"))
}

/// The release binary for `arch`, linked statically: it runs in an empty image or any node
/// container.
pub(crate) fn static_binary(arch: Arch) -> anyhow::Result<PathBuf> {
    setup::ensure(Need::Build)?;
    if arch != Arch::Amd64 {
        setup::ensure_cross()?;
    }
    arch.build(&["build", "--package", "dad-trace"], "dad-trace")
}

fn bench(args: &[String]) -> anyhow::Result<()> {
    setup::ensure(Need::Test)?;
    let dad_trace = build_release()?;
    run(cargo().args(["build", "--release", "--package", "dad-trace-bench"]))?;
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default();
    run(as_root(&workspace_root().join("target/release/dad-trace-bench"))
        .current_dir(workspace_root())
        .arg("--dad-trace")
        .arg(&dad_trace)
        .args(["--commit", &commit])
        .args(args))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup { test } => setup::ensure(if test { Need::Test } else { Need::Build }),
        Task::Run { args } => {
            setup::ensure(Need::Run)?;
            let binary = build_release()?;
            let mut command = as_root(&binary);
            if args.is_empty() {
                command.args(["record", "--synthetic-pods", "20", "--per-pod"]);
            } else {
                command.args(&args);
            }
            run(&mut command)
        }
        Task::Demo { pods, otlp, args } => {
            setup::ensure(Need::Run)?;
            let binary = build_release()?;
            let mut command = as_root(&binary);
            command.args(["scenario", "--pods", &pods.to_string()]).args(&args);
            if otlp {
                demo_with_receiver(&mut command)
            } else {
                run(&mut command)
            }
        }
        Task::Test => check::test(),
        Task::Fuzz { seconds } => check::fuzz(check::FuzzFor::Seconds(seconds)).map(drop),
        Task::VmTest { only } => {
            setup::ensure(Need::Test)?;
            vm::vm_test(&only)
        }
        Task::Lint => check::lint(),
        Task::Mutants { only, iterate } => mutants::mutants(&only, iterate),
        Task::Image => image().map(drop),
        Task::Dist => dist().map(drop),
        Task::Bench { args } => bench(&args),
        Task::KindE2e {
            pods,
            cluster,
            out,
            binary,
            keep,
        } => kind::kind_e2e(&kind::KindOptions {
            pods,
            cluster,
            out,
            binary,
            keep,
        }),
    }
}
