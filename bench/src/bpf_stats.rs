//! What the kernel-cost measures share: the kernel's run time and count of programs
//! (`bpf_stats`), the programs an attach loaded, and the median of the bracket programs'
//! buckets.
use std::collections::HashSet;

use anyhow::Context as _;
use aya::{Ebpf, maps::Array, programs::loaded_programs};
use dad_trace_common::{BRACKET_BUCKETS, BRACKET_MAP, BRACKET_NS};

/// Run time and count summed over some programs.
#[derive(Clone, Copy, Default)]
pub struct Stat {
    pub run_ns: u64,
    pub runs: u64,
}

/// The kernel's figures of the programs `ids` now.
pub fn stat(ids: &HashSet<u32>) -> Stat {
    loaded_programs()
        .flatten()
        .filter(|info| ids.contains(&info.id()))
        .fold(Stat::default(), |sum, info| Stat {
            run_ns: sum.run_ns + u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
            runs: sum.runs + info.run_count(),
        })
}

/// What `attach` returned, and the ids of the programs that appeared while it ran.
pub fn new_programs<T>(attach: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, HashSet<u32>)> {
    let ids = || -> HashSet<u32> { loaded_programs().flatten().map(|info| info.id()).collect() };
    let before = ids();
    let attached = attach()?;
    let after = ids();
    Ok((attached, after.difference(&before).copied().collect()))
}

/// The median time from `bracket_open` to `bracket_close` in `ebpf`'s bucket map (the middle
/// of its bucket, ns), and how many events the buckets hold.
pub fn bracket_median(ebpf: &Ebpf) -> anyhow::Result<(f64, u64)> {
    let counts: Array<_, u64> = Array::try_from(ebpf.map(BRACKET_MAP).context("the bracket map")?)?;
    let counts: Vec<u64> = (0..BRACKET_BUCKETS)
        .map(|bucket| counts.get(&bucket, 0).unwrap_or(0))
        .collect();
    let events: u64 = counts.iter().sum();
    let mut seen = 0;
    let middle = counts
        .iter()
        .position(|count| {
            seen += count;
            seen * 2 >= events
        })
        .unwrap_or(0);
    Ok(((middle as u64 * BRACKET_NS) as f64 + BRACKET_NS as f64 / 2.0, events))
}
