//! Kernel cost of the socket error filter, per syscall exit: the program on `sys_exit` runs
//! for every syscall of the machine and must cost close to nothing when the call did not fail
//! with `EADDRNOTAVAIL`. Measured as `cost` measures the queue filter, with the same two
//! yardsticks:
//! - program run time (`bpf_stats`): the empty program and both filter programs attached at
//!   once, ratio to the empty program per window;
//! - whole path: each attached alone between `bracket_open` and `bracket_close` on
//!   `sys_exit`, rotating rounds, minus the brackets alone in the same round.
//!
//! Event source: a loop of successful IPv6 UDP `bind` and `connect` calls (with the socket's
//! `socket` and `close`) pinned to CPU 0.
use std::{
    net::{Ipv6Addr, SocketAddrV6, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{Ebpf, programs::RawTracePoint};
use dad_trace::kernel::{Kernel, VMLINUX_BTF, loader, sockets::SOCKET_HOOKS};

use crate::{
    bpf_stats::{self, Measured, bracket_median},
    pty,
    stats::Spread,
};

const TRACEPOINT: &str = "sys_exit";

/// What is attached to `sys_exit`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Variant {
    Nothing,
    Empty,
    Btf,
    Raw,
}

impl Measured for Variant {
    fn label(self) -> &'static str {
        Variant::label(self)
    }
}

impl Variant {
    pub const MEASURED: [Variant; 3] = [Variant::Empty, Variant::Btf, Variant::Raw];

    pub fn label(self) -> &'static str {
        match self {
            Variant::Nothing => "nothing attached",
            Variant::Empty => "empty raw tracepoint program (yardstick)",
            Variant::Btf => "dad-trace: `tp_btf` socket error filter",
            Variant::Raw => "dad-trace: raw tracepoint fallback",
        }
    }
}

struct Setup {
    kernel: Kernel,
    extras: loader::Extras,
    config: dad_trace_common::Config,
}

impl Setup {
    fn load(&self) -> anyhow::Result<Ebpf> {
        loader::load_all(&self.config, &self.extras, 4096, false).context("load the eBPF object")
    }

    /// `variant` attached on its own object; `None` for nothing.
    fn attach(&self, variant: Variant) -> anyhow::Result<Option<Ebpf>> {
        if variant == Variant::Nothing {
            return Ok(None);
        }
        let mut ebpf = self.load()?;
        match variant {
            Variant::Nothing => {}
            Variant::Empty => attach_raw(&mut ebpf, "baseline_empty")?,
            Variant::Btf | Variant::Raw => {
                let hook = &SOCKET_HOOKS[usize::from(variant == Variant::Raw)];
                loader::load_and_attach_target(&mut ebpf, hook.target, self.kernel.facts.sys_exit_btf_id)
                    .with_context(|| format!("attach {}", hook.target.program))?;
            }
        }
        Ok(Some(ebpf))
    }
}

fn attach_raw(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<()> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(name)
        .with_context(|| format!("{name} in the object"))?
        .try_into()?;
    program.load()?;
    program.attach(TRACEPOINT)?;
    Ok(())
}

/// `rounds` of: a UDP socket bound to `[::1]:0`, connected to `[::1]:9`, closed. Every call
/// succeeds: the filter's common path.
fn sockets(rounds: u64) -> anyhow::Result<()> {
    let target = SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 0, 0);
    for _ in 0..rounds {
        let socket = UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 0, 0, 0)).context("bind [::1]:0")?;
        socket.connect(target).context("connect [::1]:9")?;
    }
    Ok(())
}

fn sockets_for(window: Duration) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < window {
        sockets(100)?;
        rounds += 100;
    }
    Ok(rounds)
}

pub type ProgramCost = bpf_stats::ProgramCost<Variant>;
pub type PathCost = bpf_stats::PathCost<Variant>;

pub struct SocketCost {
    pub windows: usize,
    pub window: Duration,
    pub rounds: usize,
    pub calls: u64,
    /// Syscall exits per socket round (socket, bind, connect, close and whatever else ran).
    pub exits_per_round: f64,
    pub programs: Vec<ProgramCost>,
    pub bracket_base_ns: Spread,
    pub noise: PathCost,
    pub paths: Vec<PathCost>,
}

/// Measures on a thread of its own, pinned to CPU 0.
pub fn measure(windows: usize, window: Duration, rounds: usize, calls: u64) -> anyhow::Result<SocketCost> {
    std::thread::spawn(move || measure_pinned(windows, window, rounds, calls))
        .join()
        .map_err(|_| anyhow::anyhow!("the socket-cost thread panicked"))?
}

fn measure_pinned(windows: usize, window: Duration, rounds: usize, calls: u64) -> anyhow::Result<SocketCost> {
    let kernel = Kernel::discover(Path::new(VMLINUX_BTF), None)?;
    let config = kernel.config()?;
    let socket = kernel
        .facts
        .socket
        .clone()
        .map_err(|why| anyhow::anyhow!("the socket error program cannot run here: {why}"))?;
    let setup = Setup {
        kernel,
        extras: loader::Extras {
            socket,
            ..loader::Extras::default()
        },
        config,
    };
    pty::pin_to(0)?;
    let (programs, exits_per_round) = program_costs(&setup, windows, window)?;
    let (bracket_base_ns, noise, paths) = path_costs(&setup, rounds, calls)?;
    Ok(SocketCost {
        windows,
        window,
        rounds,
        calls,
        exits_per_round,
        programs,
        bracket_base_ns,
        noise,
        paths,
    })
}

fn program_costs(setup: &Setup, windows: usize, window: Duration) -> anyhow::Result<(Vec<ProgramCost>, f64)> {
    bpf_stats::program_costs(
        &Variant::MEASURED,
        |variant| setup.attach(variant),
        windows,
        || sockets_for(window),
    )
}

/// The median time from `bracket_open` to `bracket_close` per syscall exit, with `variant`
/// between them, over `calls` socket rounds.
fn bracketed(setup: &Setup, variant: Variant, calls: u64) -> anyhow::Result<f64> {
    let mut ebpf = setup.load()?;
    attach_raw(&mut ebpf, "bracket_open")?;
    let between = setup.attach(variant)?;
    attach_raw(&mut ebpf, "bracket_close")?;
    sockets(calls)?;
    drop(between);
    let (median, events) = bracket_median(&ebpf)?;
    if events < calls {
        bail!(
            "{}: {events} syscall exits bracketed in {calls} rounds",
            variant.label()
        );
    }
    Ok(median)
}

fn path_costs(setup: &Setup, rounds: usize, calls: u64) -> anyhow::Result<(Spread, PathCost, Vec<PathCost>)> {
    let costs = bpf_stats::path_costs(Variant::Nothing, &Variant::MEASURED, rounds, |variant| {
        bracketed(setup, variant, calls)
    })?;
    Ok((costs.base, costs.noise, costs.costs))
}
