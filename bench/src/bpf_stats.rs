//! What the kernel-cost measures (the queue filter's, the socket filter's) share: program
//! run time per event from `bpf_stats` with every variant attached at once, and the whole
//! path between the bracket programs in rotating rounds.
use std::collections::HashSet;

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::Array,
    programs::loaded_programs,
    sys::{Stats, enable_stats},
};
use dad_trace_common::{BRACKET_BUCKETS, BRACKET_MAP, BRACKET_NS};

use crate::stats::Spread;

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

/// What a kernel-cost measure compares: the programs it attaches, named for errors.
pub trait Measured: Copy {
    fn label(self) -> &'static str;
}

/// Program run time per event of one variant, over the windows.
pub struct ProgramCost<V> {
    pub variant: V,
    /// ns per program run, median over windows.
    pub ns_per_run: Spread,
    /// Per-window ratio to the first variant (the empty program) in the same window.
    pub ratio_to_empty: Spread,
}

/// Whole-path cost of one variant per event: the median time between the bracketing
/// programs with it between them, minus that with nothing between them in the same round.
pub struct PathCost<V> {
    pub variant: V,
    pub added_ns: Spread,
    /// Per round: this variant's added time over the first variant's (the empty program).
    pub ratio_to_empty: Spread,
}

/// Every variant attached at once (`attach`; the first is the yardstick), `windows` runs of
/// `run_window` (returns its units of work): each variant's run time per run, and the
/// yardstick's runs per unit of work.
pub fn program_costs<V: Measured, A>(
    variants: &[V],
    attach: impl Fn(V) -> anyhow::Result<A>,
    windows: usize,
    mut run_window: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<(Vec<ProgramCost<V>>, f64)> {
    let mut attached = Vec::new();
    for &variant in variants {
        let (handle, ids) = new_programs(|| attach(variant))?;
        if ids.is_empty() {
            anyhow::bail!("{} loaded no program", variant.label());
        }
        attached.push((variant, handle, ids));
    }
    // Counting stays on while the fd is open and stops if this process dies.
    let _stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let mut per_window: Vec<Vec<f64>> = vec![Vec::new(); attached.len()];
    let (mut units, mut yardstick_runs) = (0, 0);
    for _ in 0..windows {
        let before: Vec<Stat> = attached.iter().map(|(_, _, ids)| stat(ids)).collect();
        units += run_window()?;
        for (index, (_, _, ids)) in attached.iter().enumerate() {
            let after = stat(ids);
            let runs = after.runs - before[index].runs;
            if index == 0 {
                yardstick_runs += runs;
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
    Ok((programs, yardstick_runs as f64 / units.max(1) as f64))
}

/// The whole-path measure's results: the noise (nothing against nothing), each variant's
/// added time, and the brackets' own time.
pub struct PathCosts<V> {
    pub noise: PathCost<V>,
    pub costs: Vec<PathCost<V>>,
    pub base: Spread,
}

/// `rounds` of: `nothing`, every variant (the order rotating each round), `nothing` again,
/// each timed by `bracketed` (median ns between the brackets).
pub fn path_costs<V: Measured>(
    nothing: V,
    variants: &[V],
    rounds: usize,
    mut bracketed: impl FnMut(V) -> anyhow::Result<f64>,
) -> anyhow::Result<PathCosts<V>> {
    let (mut noise, mut base) = (Vec::new(), Vec::new());
    let mut added: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        let first = bracketed(nothing)?;
        for offset in 0..variants.len() {
            let index = (round + offset) % variants.len();
            added[index].push(bracketed(variants[index])? - first);
        }
        noise.push(bracketed(nothing)? - first);
        base.push(first);
    }
    let empty = added[0].clone();
    let cost = |variant, values: &[f64]| PathCost {
        variant,
        added_ns: Spread::of(values.iter().copied()),
        ratio_to_empty: Spread::of(values.iter().zip(&empty).map(|(value, empty)| value / empty.max(1.0))),
    };
    Ok(PathCosts {
        noise: cost(nothing, &noise),
        costs: variants
            .iter()
            .zip(&added)
            .map(|(variant, values)| cost(*variant, values))
            .collect(),
        base: Spread::of(base),
    })
}
