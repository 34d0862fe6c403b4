//! `cargo xtask bench` (root): what dad-trace costs and how right it is, written to
//! bench/RESULTS.md with each goal marked met or missed.
//!
//! - [`cost`]: kernel cost per workqueue event, program run time and whole path, dad-trace's
//!   filter (`tp_btf` and its raw tracepoint fallback) next to an empty program and bpftrace.
//! - [`scale`]: pod churn with the tracer off and on in alternating pairs; tracer CPU per
//!   1,000 addresses and peak memory, also with thousands of idle veths and at 5,000 pods.
//! - [`big`]: `report` on a million addresses.
//! - [`soak`]: `serve` through 20,000 pods; memory must not grow.
//! - [`flood`]: 500 duplicate answers at once against 500 settling addresses.
//! - [`accuracy`]: per address, dad-trace vs an rtnetlink listener in each pod namespace.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "counters and durations of a benchmark run fit comfortably"
)]

mod accuracy;
mod big;
mod bpf_stats;
mod cost;
mod flood;
mod otlp;
mod progress;
mod pty;
mod render;
mod scale;
mod soak;
mod sockets;
mod stats;
mod tracer;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use dad_trace::{kernel, node::sysctl::SysctlGuard};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Cost,
    Scale,
    Big,
    Soak,
    Flood,
    Accuracy,
    Sockets,
    Otlp,
}

#[derive(Parser)]
struct Args {
    /// The release dad-trace binary to measure.
    #[arg(long)]
    dad_trace: PathBuf,
    /// Where the markdown goes (the repository keeps the reference there). Only a run of
    /// every part writes it; `--only` prints.
    #[arg(long, default_value = "bench/RESULTS.md")]
    output: PathBuf,
    #[arg(long, default_value = "unknown")]
    commit: String,
    /// Run only these parts (repeatable) and print, without writing --output.
    #[arg(long, value_enum)]
    only: Vec<Part>,
    /// Pods per churn run, and how many off/on pairs.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Idle veth interfaces present during the second churn row.
    #[arg(long, default_value_t = 10_000)]
    veths: usize,
    /// Pods of the largest churn row (one pair).
    #[arg(long, default_value_t = 5000)]
    many_pods: usize,
    #[arg(long, default_value_t = 50)]
    accuracy_pods: usize,
    /// Program run time: windows and their length.
    #[arg(long, default_value_t = 15)]
    cost_windows: usize,
    #[arg(long, default_value_t = 1000)]
    cost_window_ms: u64,
    /// Whole path: rounds, and round trips per variant and round.
    #[arg(long, default_value_t = 9)]
    cost_rounds: usize,
    #[arg(long, default_value_t = 20_000)]
    cost_trips: u64,
    /// Socket rounds (bind + connect) per bracketed run of the socket filter's cost.
    #[arg(long, default_value_t = 5_000)]
    socket_calls: u64,
    #[arg(long, default_value_t = 20_000)]
    soak_pods: usize,
    #[arg(long, default_value_t = 250)]
    soak_batch: usize,
    #[arg(long, default_value_t = 500)]
    duplicates: u16,
    #[arg(long, default_value_t = 1_000_000)]
    big_events: usize,
    /// Addresses per OTLP run (more than the exporter's queue holds), and runs of each kind.
    #[arg(long, default_value_t = 4000)]
    otlp_addresses: u16,
    #[arg(long, default_value_t = 3)]
    otlp_rounds: usize,
}

/// Everything one run measured.
#[derive(Default)]
pub struct Results {
    cost: Option<cost::KernelCost>,
    sockets: Option<sockets::SocketCost>,
    idle_cpu: Duration,
    scale: Vec<scale::ScaleRow>,
    big: Vec<big::BigReport>,
    soak: Option<soak::Soak>,
    flood: Option<flood::Flood>,
    accuracy: Option<accuracy::Accuracy>,
    otlp: Option<otlp::OtlpCost>,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|name| name.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let kib: u64 = text.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024 / 1024)
        })
        .unwrap_or(0);
    format!("{cpu}, {cores} cores, {memory} GiB, kernel {}", kernel::release())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kernel::check_privileges()?;
    let dir = tempfile::tempdir()?;
    let wanted = |part| args.only.is_empty() || args.only.contains(&part);
    let binary = args.dad_trace.as_path();
    // Stock DAD, so every pod waits as on an untuned node; restored on the way out.
    let mut sysctls = SysctlGuard::default();
    sysctls.set("net.core.devconf_inherit_init_net", "0")?;
    sysctls.set("net.ipv6.conf.default.accept_dad", "1")?;
    sysctls.set("net.ipv6.conf.default.dad_transmits", "1")?;
    let mut results = Results::default();
    if wanted(Part::Cost) {
        let _stage = progress::stage("kernel cost per workqueue event");
        results.cost = Some(cost::measure(
            args.cost_windows,
            Duration::from_millis(args.cost_window_ms),
            args.cost_rounds,
            args.cost_trips,
        )?);
    }
    if wanted(Part::Sockets) {
        let _stage = progress::stage("kernel cost per syscall exit (socket error filter)");
        results.sockets = Some(sockets::measure(
            args.cost_windows,
            Duration::from_millis(args.cost_window_ms),
            args.cost_rounds,
            args.socket_calls,
        )?);
    }
    if wanted(Part::Scale) || wanted(Part::Flood) {
        results.idle_cpu = scale::start_up_cpu(binary, dir.path())?.cpu;
    }
    if wanted(Part::Scale) {
        let stage = progress::stage(&format!("churn: {} pods, {} pairs", args.pods, args.pairs));
        let plain = scale::run(binary, dir.path(), "plain", args.pods, args.pairs, results.idle_cpu)?;
        results.scale.push(plain);
        drop(stage);
        {
            let _stage = progress::stage(&format!("churn: {} pods with {} idle veths", args.pods, args.veths));
            let _veths = scale::Veths::create(dir.path(), args.veths)?;
            let label = format!("{} veths present", args.veths);
            let row = scale::run(binary, dir.path(), &label, args.pods, args.pairs, results.idle_cpu)?;
            results.scale.push(row);
        }
        let _stage = progress::stage(&format!("churn: {} pods", args.many_pods));
        let many = scale::run(binary, dir.path(), "many pods", args.many_pods, 1, results.idle_cpu)?;
        results.scale.push(many);
    }
    if wanted(Part::Big) {
        let _stage = progress::stage(&format!("report on {} addresses", args.big_events));
        for with_pods in [false, true] {
            results
                .big
                .push(big::run(binary, dir.path(), args.big_events, with_pods)?);
        }
    }
    if wanted(Part::Soak) {
        let _stage = progress::stage(&format!("serve through {} pods", args.soak_pods));
        results.soak = Some(soak::run(binary, args.soak_pods, args.soak_batch)?);
    }
    if wanted(Part::Flood) {
        let _stage = progress::stage(&format!("{} duplicates at once", args.duplicates));
        results.flood = Some(flood::run(binary, dir.path(), args.duplicates)?);
    }
    if wanted(Part::Accuracy) {
        let _stage = progress::stage(&format!("accuracy: {} pods", args.accuracy_pods));
        results.accuracy = Some(accuracy::run(binary, dir.path(), args.accuracy_pods)?);
    }
    if wanted(Part::Otlp) {
        let _stage = progress::stage(&format!("exporting spans: {} addresses", args.otlp_addresses));
        results.otlp = Some(otlp::run(binary, dir.path(), args.otlp_addresses, args.otlp_rounds)?);
    }
    sysctls.restore()?;
    let table = render::render(&results, &machine(), &args.commit);
    println!("{table}");
    if args.only.is_empty() {
        if let Some(dir) = args.output.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&args.output, &table).with_context(|| format!("write {}", args.output.display()))?;
    }
    Ok(())
}
