//! Duplicate answers in a flood: anyone on a link can answer DAD for every address. 500
//! addresses that all fail (a holder on the same bridge has them) against the same 500 on
//! a prefix nobody holds: what a failure costs the tracer next to a settled address.
use std::{
    fmt::Write as _,
    net::Ipv6Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use dad_trace::session::Outcome;
use integration_tests::netns::TestNetns;

use crate::tracer;

pub struct Flood {
    pub count: u16,
    /// Tracer CPU of each run: all failing, all settling.
    pub failing_cpu: Duration,
    pub settling_cpu: Duration,
    pub failed_traced: usize,
    pub settled_traced: usize,
}

/// `addr add` lines for `count` addresses of `fd00:dad:<block>::/64`.
fn batch(block: u16, count: u16) -> String {
    let mut text = String::new();
    for i in 1..=count {
        let _ = writeln!(text, "addr add fd00:dad:{block:x}::{i:x}/64 dev eth0");
    }
    text
}

/// Waits until every address of the block in `netns` settled or failed (a failed address
/// keeps its tentative flag) (or 30 s); how many failed.
fn wait_done(netns: &str, block: u16, count: u16) -> anyhow::Result<usize> {
    let handle = Path::new("/run/netns").join(netns);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = dad_trace::node::netns::addresses_in(&handle)?;
        let ours: Vec<_> = rows.iter().filter(|row| row.addr.segments()[2] == block).collect();
        let tentative = ours
            .iter()
            .filter(|row| {
                row.flags & dad_trace_common::IFA_F_TENTATIVE != 0 && row.flags & dad_trace_common::IFA_F_DADFAILED == 0
            })
            .count();
        if ours.len() == usize::from(count) && tentative == 0 {
            return Ok(ours
                .iter()
                .filter(|row| row.flags & dad_trace_common::IFA_F_DADFAILED != 0)
                .count());
        }
        if Instant::now() > deadline {
            bail!("{tentative} of {count} addresses in {netns} still tentative after 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One run: the copier adds the block's addresses while a tracer runs; returns the
/// tracer's CPU and how many of the addresses it saw end as `outcome`.
fn traced(binary: &Path, dir: &Path, block: u16, count: u16, outcome: Outcome) -> anyhow::Result<(Duration, usize)> {
    let file = dir.join(format!("flood-{block:x}.batch"));
    std::fs::write(&file, batch(block, count))?;
    let session = dir.join("flood.json");
    let tracer = tracer::Tracer::record(binary, &session, &["--stale-after", "1"])?;
    let copier = TestNetns::new("dtbf-c");
    copier.veth("dtbfc", Some("dtbf-br"));
    integration_tests::netns::ip(&["-n", "dtbf-br", "link", "set", "dtbfc", "master", "br0"]);
    copier.ip(&["-batch", file.to_str().context("path")?]);
    let failed = wait_done("dtbf-c", block, count)?;
    let expected = if outcome == Outcome::Failed {
        failed
    } else {
        usize::from(count) - failed
    };
    std::thread::sleep(Duration::from_secs(1));
    tracer.interrupt();
    let (session, usage) = tracer.finish()?;
    drop(copier);
    let seen = session
        .context("the tracer wrote no session")?
        .events
        .iter()
        .filter(|e| e.netns_name.as_deref() == Some("dtbf-c") && e.addr.segments()[2] == block && e.outcome == outcome)
        .count();
    if seen != expected {
        bail!("the kernel says {expected} addresses ended {outcome}; the tracer saw {seen}");
    }
    Ok((usage.cpu, seen))
}

pub fn run(binary: &Path, dir: &Path, count: u16) -> anyhow::Result<Flood> {
    let bridge = TestNetns::new("dtbf-br");
    bridge.ip(&["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
    bridge.ip(&["link", "set", "br0", "up"]);
    let holder = TestNetns::new("dtbf-h");
    holder.veth("dtbfh", Some("dtbf-br"));
    bridge.ip(&["link", "set", "dtbfh", "master", "br0"]);
    let file = dir.join("holder.batch");
    std::fs::write(&file, batch(0xfa, count))?;
    holder.ip(&["-batch", file.to_str().context("path")?]);
    holder.wait_settled(Ipv6Addr::new(0xfd00, 0x0dad, 0xfa, 0, 0, 0, 0, count));
    let (failing, failed_traced) = traced(binary, dir, 0xfa, count, Outcome::Failed)?;
    let (settling, settled_traced) = traced(binary, dir, 0xfb, count, Outcome::Settled)?;
    Ok(Flood {
        count,
        failing_cpu: failing,
        settling_cpu: settling,
        failed_traced,
        settled_traced,
    })
}
