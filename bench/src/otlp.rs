//! What exporting spans costs the tracer: the same burst of addresses recorded without an
//! exporter, sending to a receiver that accepts everything, and sending to one that never
//! answers (the queue fills, spans are dropped). Tracer CPU and peak memory side by side,
//! in rotating order; and the binary's size.
use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::{Context as _, bail};
use integration_tests::netns::TestNetns;
use otlp_receiver::{Answer, Receiver};

use crate::{stats::Spread, tracer};

/// The three ways a run exports.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Export {
    None,
    Accepting,
    Hung,
}

impl Export {
    const ALL: [Export; 3] = [Export::None, Export::Accepting, Export::Hung];

    fn label(self) -> &'static str {
        match self {
            Export::None => "no exporter",
            Export::Accepting => "a receiver that accepts",
            Export::Hung => "a receiver that never answers",
        }
    }
}

pub struct OtlpRow {
    pub label: &'static str,
    pub cpu: Vec<Duration>,
    pub peak_kib: Vec<u64>,
    /// Spans the receiver accepted, per run.
    pub received: Vec<usize>,
}

pub struct OtlpCost {
    pub addresses: u16,
    pub binary_bytes: u64,
    pub rows: Vec<OtlpRow>,
}

/// `addr add` lines for `count` addresses of `fd00:dad:<block>::/64` on `d0`.
fn batch(block: u16, count: u16) -> String {
    let mut text = String::new();
    for i in 1..=count {
        let _ = writeln!(text, "addr add fd00:dad:{block:x}::{i:x}/64 dev d0");
    }
    text
}

/// One run: `count` addresses at once on one end of a veth pair (both ends in one namespace,
/// so the link is up), all in DAD together, while a tracer records them.
fn run_once(
    binary: &Path,
    dir: &Path,
    export: Export,
    block: u16,
    count: u16,
) -> anyhow::Result<(Duration, u64, usize)> {
    let receiver = match export {
        Export::None => None,
        Export::Accepting => Some(Receiver::start("127.0.0.1:0".parse()?, Answer::Accept)?),
        Export::Hung => Some(Receiver::start("127.0.0.1:0".parse()?, Answer::Never)?),
    };
    let endpoint = receiver.as_ref().map(Receiver::endpoint);
    let wanted = count.to_string();
    let mut extra = vec!["--netns", "dtbo-*", "--count", &wanted, "--duration", "120"];
    if let Some(endpoint) = &endpoint {
        extra.extend(["--otlp-endpoint", endpoint]);
    }
    let session = dir.join("otlp.json");
    let tracer = tracer::Tracer::record(binary, &session, &extra)?;
    let netns = TestNetns::new("dtbo-p");
    netns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    netns.ip(&["link", "set", "d1", "up"]);
    netns.ip(&["link", "set", "d0", "up"]);
    let file = dir.join("otlp.batch");
    std::fs::write(&file, batch(block, count))?;
    netns.ip(&["-batch", file.to_str().context("path")?]);
    let (session, usage) = tracer.finish()?;
    drop(netns);
    let seen = session.context("no session")?.events.len();
    if seen < usize::from(count) {
        bail!("{}: the tracer saw {seen} of {count} addresses", export.label());
    }
    let accepted = receiver.map_or(0, |receiver| receiver.spans().len());
    Ok((usage.cpu, usage.own_peak_kib, accepted))
}

pub fn run(binary: &Path, dir: &Path, addresses: u16, rounds: usize) -> anyhow::Result<OtlpCost> {
    let mut rows: Vec<OtlpRow> = Export::ALL
        .iter()
        .map(|export| OtlpRow {
            label: export.label(),
            cpu: Vec::new(),
            peak_kib: Vec::new(),
            received: Vec::new(),
        })
        .collect();
    for round in 0..rounds {
        for offset in 0..Export::ALL.len() {
            let which = (round + offset) % Export::ALL.len();
            let block = u16::try_from(0xb000 + round * 3 + offset).context("block")?;
            let (cpu, peak, received) = run_once(binary, dir, Export::ALL[which], block, addresses)?;
            rows[which].cpu.push(cpu);
            rows[which].peak_kib.push(peak);
            rows[which].received.push(received);
        }
    }
    Ok(OtlpCost {
        addresses,
        binary_bytes: std::fs::metadata(binary)?.len(),
        rows,
    })
}

pub fn render(out: &mut String, cost: &OtlpCost) {
    let _ = write!(
        out,
        "\n## Exporting spans (OTLP)\n\n{} addresses added at once on a veth in one namespace (all in DAD together), \
         recorded three ways in rotating order, {} runs each: one span per address. A \
         receiver that never answers fills the exporter's queue ({} spans); the rest are dropped and counted. \
         Median [smallest..largest]; the release binary is {:.1} MB.\n\n| exporting to | tracer CPU (ms) | × no exporter \
         | peak RSS (KiB) | spans received |\n|---|---:|---:|---:|---:|\n",
        cost.addresses,
        cost.rows.first().map_or(0, |row| row.cpu.len()),
        dad_trace::output::otlp::export::QUEUE_MAX,
        cost.binary_bytes as f64 / 1e6,
    );
    let baseline: Vec<f64> = cost.rows[0].cpu.iter().map(Duration::as_secs_f64).collect();
    for row in &cost.rows {
        let ms: Vec<f64> = row.cpu.iter().map(|cpu| cpu.as_secs_f64() * 1e3).collect();
        let ratios: Vec<f64> = row
            .cpu
            .iter()
            .zip(&baseline)
            .map(|(cpu, base)| cpu.as_secs_f64() / base)
            .collect();
        let kib: Vec<f64> = row.peak_kib.iter().map(|&kib| kib as f64).collect();
        let received: Vec<f64> = row.received.iter().map(|&n| n as f64).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            row.label,
            Spread::of(ms).show(0),
            Spread::of(ratios).show(2),
            Spread::of(kib).show(0),
            Spread::of(received).show(0),
        );
    }
}
