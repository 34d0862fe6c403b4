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
use aya::{Ebpf, programs::RawTracePoint};
use dad_trace::kernel::{Kernel, VMLINUX_BTF, loader, probes};

use crate::{
    bpf_stats::{self, Measured, bracket_median},
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

impl Measured for Variant {
    fn label(self) -> &'static str {
        Variant::label(self)
    }
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

pub type ProgramCost = bpf_stats::ProgramCost<Variant>;
pub type PathCost = bpf_stats::PathCost<Variant>;

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
        bracket_base_ns: paths.costs.base,
        programs,
        events_per_trip,
        noise: paths.costs.noise,
        paths: paths.costs.costs,
    })
}

fn program_costs(
    hooks: &Hooks,
    ping_pong: &PingPong,
    windows: usize,
    window: Duration,
) -> anyhow::Result<(Vec<ProgramCost>, f64)> {
    bpf_stats::program_costs(
        &Variant::MEASURED,
        |variant| hooks.attach(variant),
        windows,
        || Ok(ping_pong.run_for(window)?.iterations),
    )
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
    costs: bpf_stats::PathCosts<Variant>,
    events: u64,
}

fn path_costs(hooks: &Hooks, ping_pong: &PingPong, rounds: usize, iterations: u64) -> anyhow::Result<PathCosts> {
    let mut fewest = u64::MAX;
    let costs = bpf_stats::path_costs(Variant::Nothing, &Variant::MEASURED, rounds, |variant| {
        let (median, events) = bracketed(hooks, ping_pong, variant, iterations)?;
        fewest = fewest.min(events);
        Ok(median)
    })?;
    Ok(PathCosts { costs, events: fewest })
}
