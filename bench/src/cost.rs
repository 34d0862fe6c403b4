//! Kernel cost per workqueue event, two ways, each as ratios taken side by side:
//! - program run time (`bpf_stats`): every variant attached at once, so each window's
//!   figures come from the same events; the ratio to the empty program is taken per window.
//! - whole path: each variant attached alone in turn (rotating order, several rounds)
//!   between two bracketing programs on `workqueue_queue_work`, the first attached before
//!   it and the last after, which time each event from one to the other in the kernel; the
//!   median minus that with nothing between them in the same round. This includes what
//!   `run_time_ns` leaves out: the dispatch, and for a classic tracepoint the trace record it
//!   fills before bpftrace's program runs. (CPU or wall time of the ping-pong per round trip
//!   could not tell the variants apart: a kworker's wake-up varies by far more.)
use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    programs::RawTracePoint,
    sys::{Stats, enable_stats},
};
use dad_trace::kernel::{Kernel, VMLINUX_BTF, loader, probes};

use crate::{
    bpf_stats::{Stat, bracket_median, new_programs, stat},
    pty::{self, PingPong},
    stats::Spread,
};

/// What can be attached to the workqueue tracepoints.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Variant {
    Nothing,
    Empty,
    BtfTracepoint,
    RawFallback,
    Bpftrace,
}

impl Variant {
    pub const MEASURED: [Variant; 4] = [
        Variant::Empty,
        Variant::BtfTracepoint,
        Variant::RawFallback,
        Variant::Bpftrace,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Variant::Nothing => "nothing attached",
            Variant::Empty => "empty raw tracepoint program (yardstick)",
            Variant::BtfTracepoint => "dad-trace: `tp_btf` queue filter (used where BTF has the typedef)",
            Variant::RawFallback => "dad-trace: raw tracepoint fallback (`work->func` through a helper)",
            Variant::Bpftrace => "bpftrace, same delays (2 classic tracepoints)",
        }
    }
}

/// A variant attached; detached on drop.
#[allow(dead_code, reason = "the links live as long as the object")]
enum Attached {
    Nothing,
    Programs(Ebpf),
    /// bpftrace, and its output pipe (kept open so it never gets SIGPIPE).
    Bpftrace(Child, BufReader<ChildStdout>),
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Attached::Bpftrace(child, _) = self {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id().cast_signed()),
                nix::sys::signal::Signal::SIGINT,
            );
            let _ = child.wait();
        }
    }
}

struct Hooks {
    kernel: Kernel,
    config: dad_trace_common::Config,
}

impl Hooks {
    fn attach(&self, variant: Variant) -> anyhow::Result<Attached> {
        let btf_id = self.kernel.support.queue_work_btf_id;
        let load = || loader::load(&self.config, 4096, false).context("load the eBPF object");
        Ok(match variant {
            Variant::Nothing => Attached::Nothing,
            Variant::Empty => {
                let mut ebpf = load()?;
                let program: &mut RawTracePoint = ebpf
                    .program_mut("baseline_empty")
                    .context("baseline_empty in the object")?
                    .try_into()?;
                program.load()?;
                program.attach("workqueue_queue_work")?;
                program.attach("workqueue_execute_end")?;
                Attached::Programs(ebpf)
            }
            Variant::BtfTracepoint | Variant::RawFallback => {
                let queued = if variant == Variant::BtfTracepoint {
                    "dad_work_queued_btf"
                } else {
                    "dad_work_queued"
                };
                let mut ebpf = load()?;
                for program in [queued, "dad_work_done"] {
                    let hook = probes::def(program).with_context(|| format!("{program} in the hook table"))?;
                    loader::load_and_attach(&mut ebpf, hook, btf_id)
                        .with_context(|| format!("attach {}", hook.program))?;
                }
                Attached::Programs(ebpf)
            }
            Variant::Bpftrace => {
                let script = bpftrace_script(&self.config);
                let mut child = Command::new("bpftrace")
                    .arg("-e")
                    .arg(&script)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .context("start bpftrace (apt-get install bpftrace)")?;
                let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
                let mut line = String::new();
                while !line.starts_with("Attaching") {
                    line.clear();
                    if stdout.read_line(&mut line)? == 0 {
                        bail!("bpftrace exited before attaching:\n{script}");
                    }
                }
                // It prints "Attaching" before the last link is in place.
                std::thread::sleep(Duration::from_millis(500));
                Attached::Bpftrace(child, stdout)
            }
        })
    }
}

/// The same delays as the tracepoint backend, in bpftrace on classic tracepoints.
fn bpftrace_script(config: &dad_trace_common::Config) -> String {
    let (dad_work_fn, ifa_dad_work, ifa_flags) = (config.dad_work_fn, config.ifa_dad_work, config.ifa_flags);
    format!(
        "tracepoint:workqueue:workqueue_queue_work /(uint64)args->function == (uint64){dad_work_fn:#x}/ {{\n  \
         $ifa = (uint64)args->work - {ifa_dad_work};\n  if (@start[$ifa] == 0) {{ @start[$ifa] = nsecs; }}\n}}\n\
         tracepoint:workqueue:workqueue_execute_end /(uint64)args->function == (uint64){dad_work_fn:#x}/ {{\n  \
         $ifa = (uint64)args->work - {ifa_dad_work};\n  $flags = *(uint32 *)($ifa + {ifa_flags});\n  \
         if (($flags & 0x40) == 0 && @start[$ifa] != 0) {{\n    @tentative_us = hist((nsecs - @start[$ifa]) / 1000);\n    \
         delete(@start[$ifa]);\n  }}\n}}\n"
    )
}

/// Program run time per event of one variant, over the windows.
pub struct ProgramCost {
    pub variant: Variant,
    /// ns per program run (both tracepoints), median over windows.
    pub ns_per_run: Spread,
    /// Per-window ratio to the empty program in the same window.
    pub ratio_to_empty: Spread,
}

/// Whole-path cost of one variant per `workqueue_queue_work` event: the median time between
/// the bracketing programs with it between them, minus that with nothing between them in
/// the same round, ns.
pub struct PathCost {
    pub variant: Variant,
    pub added_ns: Spread,
    /// Per round: this variant's added time over the empty program's.
    pub ratio_to_empty: Spread,
}

pub struct KernelCost {
    pub windows: usize,
    pub window: Duration,
    pub rounds: usize,
    pub iterations: u64,
    /// Bracketed events per run, the smallest seen.
    pub bracketed_events: u64,
    /// Time between the brackets with nothing between them, ns (median over rounds).
    pub bracket_base_ns: Spread,
    pub programs: Vec<ProgramCost>,
    /// Workqueue tracepoint events per ping-pong round trip (both tracepoints, machine-wide:
    /// other work items of the node count too), from the empty program's run count.
    pub events_per_trip: f64,
    /// Nothing attached vs nothing attached, in the same round: the measure's own noise.
    pub noise: PathCost,
    pub paths: Vec<PathCost>,
}

/// Measures on a thread of its own, pinned to CPU 0 (the rest of the benchmark keeps every CPU).
pub fn measure(windows: usize, window: Duration, rounds: usize, iterations: u64) -> anyhow::Result<KernelCost> {
    std::thread::spawn(move || measure_pinned(windows, window, rounds, iterations))
        .join()
        .map_err(|_| anyhow::anyhow!("the kernel-cost thread panicked"))?
}

fn measure_pinned(windows: usize, window: Duration, rounds: usize, iterations: u64) -> anyhow::Result<KernelCost> {
    let kernel = Kernel::discover(Path::new(VMLINUX_BTF), None)?;
    let config = kernel.config()?;
    let hooks = Hooks { kernel, config };
    pty::pin_to(0)?;
    let ping_pong = PingPong::open()?;
    let (programs, events_per_trip) = program_costs(&hooks, &ping_pong, windows, window)?;
    let paths = path_costs(&hooks, &ping_pong, rounds, iterations)?;
    Ok(KernelCost {
        windows,
        window,
        rounds,
        iterations,
        bracketed_events: paths.events,
        bracket_base_ns: paths.base,
        programs,
        events_per_trip,
        noise: paths.noise,
        paths: paths.costs,
    })
}

fn program_costs(
    hooks: &Hooks,
    ping_pong: &PingPong,
    windows: usize,
    window: Duration,
) -> anyhow::Result<(Vec<ProgramCost>, f64)> {
    let mut attached = Vec::new();
    for variant in Variant::MEASURED {
        let (handle, ids) = new_programs(|| hooks.attach(variant))?;
        if ids.is_empty() {
            bail!("{} loaded no program", variant.label());
        }
        attached.push((variant, handle, ids));
    }
    // Counting stays on while the fd is open and stops if this process dies.
    let _stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let mut per_window: Vec<Vec<f64>> = vec![Vec::new(); attached.len()];
    let (mut trips, mut empty_runs) = (0, 0);
    for _ in 0..windows {
        let before: Vec<Stat> = attached.iter().map(|(_, _, ids)| stat(ids)).collect();
        let run = ping_pong.run_for(window)?;
        trips += run.iterations;
        for (index, (variant, _, ids)) in attached.iter().enumerate() {
            let after = stat(ids);
            let runs = after.runs - before[index].runs;
            if *variant == Variant::Empty {
                empty_runs += runs;
            }
            per_window[index].push((after.run_ns - before[index].run_ns) as f64 / runs.max(1) as f64);
        }
    }
    let empty = per_window[0].clone();
    let programs = attached
        .iter()
        .zip(&per_window)
        .map(|((variant, _, _), values)| ProgramCost {
            variant: *variant,
            ns_per_run: Spread::of(values.iter().copied()),
            ratio_to_empty: Spread::of(values.iter().zip(&empty).map(|(value, empty)| value / empty)),
        })
        .collect();
    Ok((programs, empty_runs as f64 / trips.max(1) as f64))
}

/// Time from `bracket_open` to `bracket_close` per queue event, with `variant` attached
/// between them, while the ping-pong runs: median ns, and how many events.
fn bracketed(hooks: &Hooks, ping_pong: &PingPong, variant: Variant, iterations: u64) -> anyhow::Result<(f64, u64)> {
    let mut ebpf = loader::load(&hooks.config, 4096, false).context("load the eBPF object")?;
    let mut attach = |name: &str| -> anyhow::Result<()> {
        let program: &mut RawTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} in the object"))?
            .try_into()?;
        program.load()?;
        program.attach("workqueue_queue_work")?;
        Ok(())
    };
    // A tracepoint runs its programs in the order they were attached.
    attach("bracket_open")?;
    let between = hooks.attach(variant)?;
    attach("bracket_close")?;
    ping_pong.run(iterations)?;
    drop(between);
    let (median, events) = bracket_median(&ebpf)?;
    if events < iterations {
        bail!(
            "{}: {events} events bracketed in {iterations} round trips",
            variant.label()
        );
    }
    Ok((median, events))
}

struct PathCosts {
    noise: PathCost,
    costs: Vec<PathCost>,
    base: Spread,
    events: u64,
}

fn path_costs(hooks: &Hooks, ping_pong: &PingPong, rounds: usize, iterations: u64) -> anyhow::Result<PathCosts> {
    // Each round: nothing, every variant, nothing again; the order of the variants rotates.
    let (mut noise, mut base) = (Vec::new(), Vec::new());
    let mut added: Vec<Vec<f64>> = vec![Vec::new(); Variant::MEASURED.len()];
    let mut fewest = u64::MAX;
    for round in 0..rounds {
        let mut timed = |variant| -> anyhow::Result<f64> {
            let (median, events) = bracketed(hooks, ping_pong, variant, iterations)?;
            fewest = fewest.min(events);
            Ok(median)
        };
        let first = timed(Variant::Nothing)?;
        for offset in 0..Variant::MEASURED.len() {
            let index = (round + offset) % Variant::MEASURED.len();
            added[index].push(timed(Variant::MEASURED[index])? - first);
        }
        noise.push(timed(Variant::Nothing)? - first);
        base.push(first);
    }
    let empty = added[0].clone();
    let cost = |variant, values: &[f64]| PathCost {
        variant,
        added_ns: Spread::of(values.iter().copied()),
        ratio_to_empty: Spread::of(values.iter().zip(&empty).map(|(value, empty)| value / empty.max(1.0))),
    };
    Ok(PathCosts {
        noise: cost(Variant::Nothing, &noise),
        costs: Variant::MEASURED
            .iter()
            .zip(&added)
            .map(|(variant, values)| cost(*variant, values))
            .collect(),
        base: Spread::of(base),
        events: fewest,
    })
}
