//! A report on a big session: a million addresses (a busy node recorded for weeks, or many
//! nodes merged), reported by the release binary as a user would run it.
use std::{
    net::Ipv6Addr,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use chrono::Utc;
use dad_trace::{
    kernel::Backend,
    session::{AddressEvent, Outcome, Pod, Session},
};

pub struct BigReport {
    pub events: usize,
    /// Each address carries its pod's identity from the runtime (namespace, name, UID,
    /// sandbox id, pause process), as `record` writes it on a Kubernetes node.
    pub with_pods: bool,
    pub file_bytes: u64,
    pub wall: Duration,
    pub peak_kib: u64,
}

/// A session of `events` addresses, three per pod namespace, one in a thousand failed.
fn session(events: usize, with_pods: bool) -> Session {
    let started = Utc::now();
    let mut session = Session::new(Backend::Tracepoint, "6.18.0".into(), "node-1".into(), started);
    for index in 0..events {
        let pod = index / 3;
        let inode = 4_026_531_840_u32.wrapping_add(u32::try_from(pod).unwrap_or(u32::MAX));
        let tentative_ns = 1_000_000_000 + (index as u64 * 7_919) % 1_000_000_000;
        session.events.push(AddressEvent {
            time: started + chrono::Duration::milliseconds(i64::try_from(index).unwrap_or(i64::MAX)),
            netns_inode: inode,
            netns_cookie: Some(pod as u64 + 4096),
            netns_name: Some(format!("cni-{pod:08x}")),
            host_netns: false,
            pod: with_pods.then(|| Pod {
                namespace: Some(format!("team-{}", pod % 50)),
                name: Some(format!("web-{pod}")),
                uid: Some(format!("{pod:08x}-0000-4000-8000-000000000000")),
                container_id: Some(format!("{pod:064x}")),
                pid: Some(1000 + u32::try_from(pod % 60_000).unwrap_or(0)),
                comm: Some("pause".into()),
            }),
            ifname: "eth0".into(),
            ifindex: 2,
            peer: None,
            addr: Ipv6Addr::new(0xfd00, 0xdad, 0, 0, 0, 0, (index >> 16) as u16, index as u16),
            tentative_ns,
            dad_ns: Some(tentative_ns - 2_000_000),
            link_wait_ns: Some(20_000),
            delay_ns: Some(300_000_000),
            probing_ns: Some(tentative_ns - 300_020_000),
            optimistic: false,
            outcome: if index % 1000 == 999 {
                Outcome::Failed
            } else {
                Outcome::Settled
            },
            partial: false,
            node: None,
            duplicate_of: Vec::new(),
        });
    }
    session.ended_at = started + chrono::Duration::hours(1);
    session
}

pub fn run(binary: &Path, dir: &Path, events: usize, with_pods: bool) -> anyhow::Result<BigReport> {
    let path = dir.join("big.json");
    session(events, with_pods)
        .save(&path)
        .context("write the big session")?;
    let file_bytes = std::fs::metadata(&path)?.len();
    // A child's peak memory (`ru_maxrss`) starts from what it was spawned with: from this
    // process's own high-water mark when spawned sharing its memory (`posix_spawn`), from
    // its current size when forked. The session made above is freed and handed back to the
    // system, and the child forked (a `pre_exec` hook makes `Command` fork), so the figure
    // is the report's.
    // SAFETY: releases free heap memory; no allocation is in use across the call.
    unsafe { libc::malloc_trim(0) };
    let mut command = Command::new(binary);
    command
        .arg("report")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: the hook does nothing, so it is async-signal-safe.
    unsafe { command.pre_exec(|| Ok(())) };
    let started = Instant::now();
    let child = command.spawn().context("start dad-trace report")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child with valid pointers.
    let pid = unsafe { libc::wait4(child.id().cast_signed(), &raw mut status, 0, &raw mut usage) };
    let wall = started.elapsed();
    if pid < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("dad-trace report on {events} events failed (status {status})");
    }
    let _ = std::fs::remove_file(&path);
    Ok(BigReport {
        events,
        with_pods,
        file_bytes,
        wall,
        peak_kib: usage.ru_maxrss as u64,
    })
}
