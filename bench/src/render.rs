//! bench/RESULTS.md: every figure with how it was measured, each goal marked met or missed.
use std::fmt::Write as _;

use dad_trace::hist::human;

use crate::{
    Results,
    cost::{KernelCost, Variant},
    scale::ScaleRow,
    sockets::{SocketCost, Variant as SocketVariant},
    stats::Spread,
};

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn render(results: &Results, machine: &str, commit: &str) -> String {
    let mut out = format!(
        "# dad-trace benchmark\n\nMachine: {machine}. Backend: tracepoint (this kernel has no kprobe PMU; in the \
         qemu guests that have kprobes, timings measure the emulator, so the kprobe backend's cost is not here). \
         Commit: {commit}. Date: {}. Written by `cargo xtask bench`; every ratio comes from runs taken side by \
         side in this one run, shown as median [smallest..largest] over its repeats.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
    );
    if let Some(cost) = &results.cost {
        kernel_cost(&mut out, cost);
    }
    if let Some(cost) = &results.sockets {
        socket_cost(&mut out, cost);
    }
    if !results.scale.is_empty() {
        scale(&mut out, results);
    }
    big(&mut out, results);
    if let Some(soak) = &results.soak {
        let _ = writeln!(
            out,
            "\n## A long-lived agent\n\n`dad-trace serve` (no `-o`: it keeps no events) while {} synthetic pods are \
             created and deleted, {} at a time (each batch scraped once, then deleted ~2.5 s after creation, so \
             most addresses settle and the rest are aborted). Its resident memory after each 2,000 pods:\n\n\
             | pods so far | agent RSS |\n|---:|---:|",
            soak.pods, soak.batch
        );
        for (pods, kib) in &soak.rss_kib {
            let _ = writeln!(out, "| {pods} | {} |", mib(*kib));
        }
        let _ = writeln!(
            out,
            "\nGrowth from 2,000 pods to the end: {:+.2} MiB (goal ≤ 2 MiB: {}). Addresses counted by its \
             metrics: {}; lost events: {}; agent CPU: {:.1} s.",
            soak.growth_kib() as f64 / 1024.0,
            verdict(soak.growth_kib() <= 2048),
            soak.counted,
            soak.lost,
            soak.cpu.as_secs_f64(),
        );
    }
    flood(&mut out, results);
    if let Some(cost) = &results.otlp {
        crate::otlp::render(&mut out, cost);
    }
    if let Some(accuracy) = &results.accuracy {
        let _ = writeln!(
            out,
            "\n## Accuracy\n\nTentative delay per address, dad-trace vs an rtnetlink listener in each of {} pod \
             namespaces (`RTM_NEWADDR` with the tentative flag → without it, timestamped on arrival):\n\n\
             | addresses compared | median difference | p99 | max |\n|---:|---:|---:|---:|\n| {} | {} | {} | {} |\n\n\
             Goal: median ≤ 2 ms: {}.",
            accuracy.pods,
            accuracy.compared,
            human(accuracy.median_ns),
            human(accuracy.p99_ns),
            human(accuracy.max_ns),
            verdict(accuracy.median_ns <= 2_000_000)
        );
    }
    out
}

fn big(out: &mut String, results: &Results) {
    if !results.big.is_empty() {
        let _ = writeln!(
            out,
            "\n## Reports on big sessions\n\n`dad-trace report` (text) on generated sessions (3 addresses per pod \
             namespace), the release binary as a user runs it. Goals: ≤ 2 s and ≤ 300 MB for 1M addresses.\n\n\
             | addresses | pod identity on each | file | wall time | peak RSS |\n|---:|---|---:|---:|---:|"
        );
        for big in &results.big {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} MB | {:.2} s ({}) | {} ({}) |",
                big.events,
                if big.with_pods {
                    "yes (CRI: namespace, name, UID, sandbox, pause pid)"
                } else {
                    "no (netns name only)"
                },
                big.file_bytes as f64 / 1e6,
                big.wall.as_secs_f64(),
                verdict(big.wall.as_secs_f64() <= 2.0),
                mib(big.peak_kib),
                verdict(big.peak_kib * 1024 <= 300_000_000),
            );
        }
    }
}

fn flood(out: &mut String, results: &Results) {
    if let Some(flood) = &results.flood {
        let _ = writeln!(
            out,
            "\n## A flood of duplicate answers\n\nAnyone on a link can answer DAD for every address. {} addresses \
             added at once on a bridge where another namespace holds them all (nearly every one fails: a probe or \
             answer the bridge drops lets one settle now and then), then {} on a prefix nobody holds (every one \
             settles), each under its own `dad-trace record`; every outcome the kernel reports is traced (checked). \
             Tracer CPU, whole run:\n\n| run | traced | tracer CPU |\n|---|---:|---:|\n\
             | start and stop, nothing traced | | {:.2} s |\n\
             | duplicates (holder looked up for each failure) | {} failed | {:.2} s |\n\
             | no duplicates | {} settled | {:.2} s |\n\n\
             Failing instead of settling changed the tracer's CPU by {:+.2} s for the {} addresses: holders are found \
             in an index built at most a few times per burst, not by one scan of the node per failure.",
            flood.count,
            flood.count,
            results.idle_cpu.as_secs_f64(),
            flood.failed_traced,
            flood.failing_cpu.as_secs_f64(),
            flood.settled_traced,
            flood.settling_cpu.as_secs_f64(),
            flood.failing_cpu.as_secs_f64() - flood.settling_cpu.as_secs_f64(),
            flood.count,
        );
    }
}

fn socket_cost(out: &mut String, cost: &SocketCost) {
    let _ = writeln!(
        out,
        "\n## Kernel cost per syscall exit (socket error filter)\n\nThe socket error program runs on `sys_exit`, \
         for every syscall of the node; only a return of `-EADDRNOTAVAIL` goes further. Event source: a loop of \
         successful IPv6 UDP binds and connects (socket, bind, connect, close) pinned to CPU 0, {:.1} syscall exits \
         per round (machine-wide). Program run time (`bpf_stats`, every program attached at once, {} windows of \
         {} ms, ratio to the empty program per window):\n\n| program | ns per run | ratio to empty | goal ≤ 1.3× |\n\
         |---|---:|---:|---|",
        cost.exits_per_round,
        cost.windows,
        cost.window.as_millis()
    );
    for program in &cost.programs {
        let goal = if program.variant == SocketVariant::Empty {
            "-"
        } else {
            verdict(program.ratio_to_empty.median <= 1.3)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {goal} |",
            program.variant.label(),
            program.ns_per_run.show(1),
            program.ratio_to_empty.show(2)
        );
    }
    let _ = writeln!(
        out,
        "\nWhole path per syscall exit: each program attached alone between `bracket_open` and `bracket_close` on \
         `sys_exit`, {} rotating rounds of {} socket rounds, minus the brackets alone in the same round ({} ns). \
         The first row is the measure's noise (the brackets alone, again):\n\n| attached | added ns per exit | \
         ratio to empty |\n|---|---:|---:|",
        cost.rounds,
        cost.calls,
        cost.bracket_base_ns.show(0)
    );
    for path in std::iter::once(&cost.noise).chain(&cost.paths) {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            path.variant.label(),
            path.added_ns.show(0),
            if path.variant == SocketVariant::Nothing {
                "-".to_string()
            } else {
                path.ratio_to_empty.show(2)
            }
        );
    }
}

fn kernel_cost(out: &mut String, cost: &KernelCost) {
    let _ = writeln!(
        out,
        "\n## Kernel cost per workqueue event\n\nEvent source: a pseudo-terminal ping-pong pinned to CPU 0 (each \
         byte queues one `flush_to_ldisc` work item and waits for a kworker to run it; {:.2} workqueue \
         tracepoint events per round trip, machine-wide). None of it is a DAD step: this is the filter path \
         every work item of a node takes.\n\n\
         ### Program run time (`bpf_stats`)\n\nAll four attached at once, so each window's figures come from the \
         same events; {} windows of {} ms; the ratio is taken per window. Statistics are switched on with \
         `BPF_ENABLE_STATS` (off again when the benchmark exits, even if it crashes).\n\n\
         | program | ns per run | × the empty program | goal ≤ 1.3× |\n|---|---:|---:|---|",
        cost.events_per_trip,
        cost.windows,
        cost.window.as_millis()
    );
    for program in &cost.programs {
        let goal = match program.variant {
            Variant::BtfTracepoint | Variant::RawFallback => verdict(program.ratio_to_empty.median <= 1.3),
            _ => "",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {goal} |",
            program.variant.label(),
            program.ns_per_run.show(1),
            program.ratio_to_empty.show(2)
        );
    }
    let _ = writeln!(
        out,
        "\nThe goal is met by the program dad-trace attaches where the kernel's BTF has the tracepoint's typedef \
         (5.5+, `CONFIG_DEBUG_INFO_BTF`, every kernel of the VM matrix); the raw tracepoint is the fallback \
         elsewhere. `run_time_ns` counts the program only: not the dispatch, and not the trace record a classic \
         tracepoint fills for bpftrace before its program runs.\n\n\
         ### Whole path (bracketed in the kernel)\n\nOn `workqueue_queue_work`, a program attached first \
         (`bracket_open`) and one attached last (`bracket_close`) time each event from one to the other \
         (`bpf_ktime_get_ns`, {} ns buckets); a tracepoint runs its programs in the order they were attached, so \
         whatever is attached in between is inside: its dispatch, and for a classic tracepoint the trace record \
         filled before bpftrace's program runs. Each variant alone between them, in a rotating order; {} rounds of \
         {} round trips each (at least {} events bracketed per run). Added = the variant's median minus the median \
         with nothing between the brackets in the same round ({} ns: the brackets' own cost). The first row is the \
         measure's noise: nothing between them, a second run minus the first.\n\n\
         | between the brackets | ns added per event | × the empty program |\n|---|---:|---:|",
        dad_trace_common::BRACKET_NS,
        cost.rounds,
        cost.iterations,
        cost.bracketed_events,
        cost.bracket_base_ns.show(0)
    );
    for path in std::iter::once(&cost.noise).chain(&cost.paths) {
        let (label, ratio) = if path.variant == Variant::Nothing {
            ("nothing (noise: a second run, minus the first)", String::new())
        } else {
            (path.variant.label(), path.ratio_to_empty.show(2))
        };
        let _ = writeln!(out, "| {label} | {} | {ratio} |", path.added_ns.show(0));
    }
    // The measure's noise: the largest difference between two runs with nothing between.
    let noise = cost.noise.added_ns.max.abs().max(cost.noise.added_ns.min.abs());
    let smallest = cost
        .paths
        .iter()
        .map(|path| path.added_ns.median.abs())
        .fold(f64::INFINITY, f64::min);
    let _ = if noise >= smallest {
        writeln!(
            out,
            "\nNoise (nothing vs nothing): up to {noise:.0} ns, as large as the smallest median ({smallest:.0} ns): \
             the rows are not all separable."
        )
    } else {
        writeln!(
            out,
            "\nNoise (nothing vs nothing): up to {noise:.0} ns; every median above is outside it."
        )
    };
}

fn scale(out: &mut String, results: &Results) {
    let _ = writeln!(
        out,
        "\n## Pod churn, tracer CPU and memory\n\nSynthetic pods (netns + veth + address each; 3 addresses) \
         created as fast as this machine allows, without and with the tracer (`dad-trace record`, a separate \
         process), in pairs whose order alternates. Throughput on/off = creation time off / on, per pair. Tracer \
         CPU per 1,000 addresses has start-up taken out ({:.2} s: a tracer that starts and stops tracing nothing, \
         its BTF helper child included).\n\n\
         | run | pods | pairs | create, off | create, on | throughput on/off | addresses | lost | tracer CPU per \
         1,000 addresses | peak RSS, tracer | with its BTF helper |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        results.idle_cpu.as_secs_f64()
    );
    for row in &results.scale {
        scale_row(out, row);
    }
    let worst_cpu = results
        .scale
        .iter()
        .map(|row| row.cpu_per_1000_s.median)
        .fold(0.0, f64::max);
    let peak = results
        .scale
        .iter()
        .map(|row| row.peak_with_helper_kib)
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "\nGoals: throughput on/off ≥ 0.98 and zero lost events (marked per row); tracer CPU ≤ 0.1 s per 1,000 \
         addresses: {} (worst median {:.3} s); peak RSS ≤ 32 MiB with any helper: {} ({}). The tracer reads the \
         kernel's BTF once at start in a short-lived child of its own (`dad-trace kernel-facts`); the last column \
         is the larger of the two processes' peaks.",
        verdict(worst_cpu <= 0.1),
        worst_cpu,
        verdict(peak > 0 && peak <= 32 * 1024),
        mib(peak),
    );
}

fn scale_row(out: &mut String, row: &ScaleRow) {
    let seconds = |spread: &Spread| format!("{:.1} s", spread.median);
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} ({}) | {} | {} ({}) | {} s | {} | {} |",
        row.label,
        row.pods,
        row.pairs,
        seconds(&row.off_s),
        seconds(&row.on_s),
        row.throughput.show(3),
        verdict(row.throughput.median >= 0.98),
        row.addresses,
        row.lost,
        verdict(row.lost == 0),
        row.cpu_per_1000_s.show(3),
        mib(row.peak_own_kib),
        mib(row.peak_with_helper_kib),
    );
}
