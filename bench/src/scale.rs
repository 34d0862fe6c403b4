//! Pod churn: synthetic pods (netns + veth + address each; 3 addresses) created as fast as
//! the machine allows, with the tracer off and on in alternating order, several pairs. The
//! ratio of one pair is noise-prone (0.962 and 1.068 were seen for the same setup), so the
//! figure is the median ratio with its spread.
use std::{
    fmt::Write as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use dad_trace::node::synthetic;

use crate::{
    stats::Spread,
    tracer::{self, Usage},
};

pub struct ScaleRow {
    pub label: String,
    pub pods: usize,
    pub pairs: usize,
    /// Creation time with the tracer off / on, seconds, median over the pairs.
    pub off_s: Spread,
    pub on_s: Spread,
    /// Per pair: off time / on time (1 = no slowdown).
    pub throughput: Spread,
    /// Addresses traced and events lost, summed over the runs with the tracer on.
    pub addresses: usize,
    pub lost: u64,
    /// Tracer CPU per 1,000 addresses, start-up (an idle run's CPU) taken out.
    pub cpu_per_1000_s: Spread,
    pub peak_own_kib: u64,
    pub peak_with_helper_kib: u64,
}

/// CPU of a tracer that starts, traces nothing and stops: what every run pays once.
pub fn start_up_cpu(binary: &Path, dir: &Path) -> anyhow::Result<Usage> {
    let tracer = tracer::Tracer::record(binary, &dir.join("idle.json"), &[])?;
    std::thread::sleep(Duration::from_millis(500));
    tracer.interrupt();
    Ok(tracer.finish()?.1)
}

fn create_timed(count: usize) -> anyhow::Result<(Vec<synthetic::SyntheticPod>, Duration)> {
    let started = Instant::now();
    let pods = synthetic::create_pods("dtb-", count)?;
    Ok((pods, started.elapsed()))
}

/// Deletes the pods and lets the kernel finish tearing their namespaces down.
fn remove(pods: Vec<synthetic::SyntheticPod>) {
    drop(pods);
    std::thread::sleep(Duration::from_secs(2));
}

pub fn run(
    binary: &Path,
    dir: &Path,
    label: &str,
    pods: usize,
    pairs: usize,
    idle_cpu: Duration,
) -> anyhow::Result<ScaleRow> {
    let (mut off, mut on, mut ratios, mut cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut addresses, mut lost, mut peak_own_kib, mut peak_with_helper_kib) = (0, 0, 0, 0);
    for pair in 0..pairs {
        let mut pair_times = [Duration::ZERO; 2];
        // Off first in even pairs, on first in odd ones: a drift over the run cancels out.
        let order: [bool; 2] = if pair % 2 == 0 { [false, true] } else { [true, false] };
        for traced in order {
            if !traced {
                let (created, took) = create_timed(pods)?;
                remove(created);
                pair_times[0] = took;
                continue;
            }
            let session = dir.join("scale.json");
            let tracer = tracer::record_until(binary, &session, 3 * pods)?;
            let (created, took) = create_timed(pods)?;
            let (session, usage) = tracer.finish()?;
            remove(created);
            pair_times[1] = took;
            let session = session.context("the tracer wrote no session")?;
            if session.events.len() < 3 * pods {
                bail!(
                    "{label}: the tracer saw {} of {} addresses",
                    session.events.len(),
                    3 * pods
                );
            }
            addresses += session.events.len();
            lost += session.lost_events;
            peak_own_kib = peak_own_kib.max(usage.own_peak_kib);
            peak_with_helper_kib = peak_with_helper_kib.max(usage.with_helper_kib);
            let net = usage.cpu.saturating_sub(idle_cpu).as_secs_f64();
            cpu.push(net * 1000.0 / session.events.len() as f64);
        }
        off.push(pair_times[0].as_secs_f64());
        on.push(pair_times[1].as_secs_f64());
        ratios.push(pair_times[0].as_secs_f64() / pair_times[1].as_secs_f64());
    }
    Ok(ScaleRow {
        label: label.into(),
        pods,
        pairs,
        off_s: Spread::of(off),
        on_s: Spread::of(on),
        throughput: Spread::of(ratios),
        addresses,
        lost,
        cpu_per_1000_s: Spread::of(cpu),
        peak_own_kib,
        peak_with_helper_kib,
    })
}

/// Idle veth pairs in the host namespace, removed on drop.
pub struct Veths(usize);

impl Veths {
    pub fn create(dir: &Path, interfaces: usize) -> anyhow::Result<Self> {
        let pairs = interfaces / 2;
        let mut batch = String::new();
        for i in 0..pairs {
            let _ = writeln!(batch, "link add dtbv{i} type veth peer name dtbw{i}");
        }
        let file = dir.join("veths.batch");
        std::fs::write(&file, batch)?;
        // Dropped (and so deleted) even if creating fails halfway.
        let veths = Self(pairs);
        let status = Command::new("ip").arg("-batch").arg(&file).status()?;
        if !status.success() {
            bail!("creating {interfaces} veth interfaces failed");
        }
        Ok(veths)
    }
}

impl Drop for Veths {
    fn drop(&mut self) {
        let mut batch = String::new();
        for i in 0..self.0 {
            let _ = writeln!(batch, "link del dtbv{i}");
        }
        let file = std::env::temp_dir().join(format!("dad-trace-bench-veths-{}", std::process::id()));
        if std::fs::write(&file, batch).is_ok() {
            let _ = Command::new("ip").args(["-force", "-batch"]).arg(&file).status();
            let _ = std::fs::remove_file(&file);
        }
    }
}
