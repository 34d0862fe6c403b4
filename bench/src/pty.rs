//! A workqueue event source with a known rate: a pseudo-terminal ping-pong. Each byte
//! written to the master side queues one `flush_to_ldisc` work item (the
//! `workqueue_queue_work` tracepoint fires in the writer's context), and the read on the
//! slave side waits until a kworker ran it (`workqueue_execute_end`). None of it is a DAD
//! step: it is the filter path every workqueue item of a node takes.
use std::{
    os::fd::{AsFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::{
    pty::openpty,
    sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr},
    unistd::{read, write},
};

pub struct PingPong {
    master: OwnedFd,
    slave: OwnedFd,
}

/// One run of the ping-pong.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub iterations: u64,
    /// CPU time of the writing thread (its syscalls and the queue-side hook).
    pub thread_cpu: Duration,
    pub wall: Duration,
}

impl PingPong {
    pub fn open() -> anyhow::Result<Self> {
        let pty = openpty(None, None).context("openpty")?;
        // Raw: a byte is readable as soon as it is flushed, nothing is echoed back.
        let mut attrs = tcgetattr(pty.slave.as_fd()).context("tcgetattr")?;
        cfmakeraw(&mut attrs);
        tcsetattr(pty.slave.as_fd(), SetArg::TCSANOW, &attrs).context("tcsetattr")?;
        Ok(Self {
            master: pty.master,
            slave: pty.slave,
        })
    }

    /// `iterations` round trips on this thread.
    pub fn run(&self, iterations: u64) -> anyhow::Result<Run> {
        let mut byte = [0_u8; 1];
        let cpu_before = thread_cpu();
        let started = Instant::now();
        for _ in 0..iterations {
            write(&self.master, b"x").context("write to the pty")?;
            read(self.slave.as_fd(), &mut byte).context("read from the pty")?;
        }
        Ok(Run {
            iterations,
            thread_cpu: thread_cpu().saturating_sub(cpu_before),
            wall: started.elapsed(),
        })
    }

    /// Round trips until `window` has passed.
    pub fn run_for(&self, window: Duration) -> anyhow::Result<Run> {
        let started = Instant::now();
        let mut total = Run {
            iterations: 0,
            thread_cpu: Duration::ZERO,
            wall: Duration::ZERO,
        };
        while started.elapsed() < window {
            let run = self.run(1000)?;
            total.iterations += run.iterations;
            total.thread_cpu += run.thread_cpu;
            total.wall += run.wall;
        }
        Ok(total)
    }
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Pins this thread to `cpu`, so runs compare the same core.
pub fn pin_to(cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).context("sched_setaffinity")
}
