//! Command line: one file per subcommand, each its arguments and its `run`.
use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    kernel::{BackendChoice, VMLINUX_BTF},
    record::{RecordOptions, enrich::cri::SocketChoice},
};

pub mod doctor;
pub mod gate;
pub mod probes;
pub mod record;
pub mod report;
pub mod scenario;
pub mod serve;

#[derive(Parser)]
#[command(
    name = "dad-trace",
    version,
    about = "How long IPv6 addresses stay tentative (DAD), per pod",
    after_help = "EXAMPLES:\n    sudo dad-trace record -o before.json      # trace until Ctrl-C, save the session\n    \
                  dad-trace report before.json after.json   # before/after, no root needed\n    \
                  sudo dad-trace doctor                     # why pods wait, and the fix\n    \
                  sudo dad-trace serve --listen '[::]:9797' # node agent with Prometheus metrics"
)]
pub struct Cli {
    /// More output: -v shows debug logs (including the kernel programs'), -vv traces every event.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    Record(record::Record),
    Serve(serve::Serve),
    Probes(probes::Probes),
    Scenario(scenario::Scenario),
    Doctor(doctor::Doctor),
    Tune(doctor::Tune),
    Gate(gate::Gate),
    Report(report::Report),
    KernelFacts(probes::KernelFacts),
    KernelDescription(probes::KernelDescription),
}

impl Command {
    /// Whether the command records: its stop signals must be held from the start.
    #[must_use]
    pub fn records(&self) -> bool {
        matches!(self, Command::Record(_) | Command::Serve(_) | Command::Scenario(_))
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let verbose = cli.verbose > 0;
    match cli.command {
        Command::Record(command) => command.run(verbose).await,
        Command::Serve(command) => command.run(verbose).await,
        Command::Probes(command) => command.run(),
        Command::Scenario(command) => command.run().await,
        Command::Doctor(command) => command.run(),
        Command::Tune(command) => command.run(),
        Command::Gate(command) => command.run(),
        Command::Report(command) => command.run(),
        Command::KernelFacts(command) => command.run(),
        Command::KernelDescription(command) => command.run(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    /// One self-contained page with SVG charts (write it with -o).
    Html,
    Json,
}

/// How to trace: shared by `record` and `serve`.
#[derive(clap::Args)]
pub struct TraceArgs {
    /// kprobe (precise, needs `CONFIG_KPROBES`), tracepoint (workqueue events, any kernel), or auto.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Size of the kernel → userspace ring buffer (power of two).
    #[arg(long, default_value_t = dad_trace_common::DEFAULT_RING_BYTES, value_name = "BYTES", value_parser = parse_ring_bytes)]
    ring_bytes: u32,
    /// Check an address for existence after this long without kernel events (seconds).
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    stale_after: f64,
    /// Container runtime socket that names pods (CRI: containerd, CRI-O); `auto` finds the
    /// usual ones, `none` goes without (pods are then named by cgroup and netns).
    #[arg(long, default_value = "auto", value_name = "PATH|auto|none")]
    cri_socket: String,
    /// How long a finished address of a pod the runtime has not listed yet waits for its name.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    resolve_wait: f64,
    /// The kernel's BTF, for kernels that do not publish /sys/kernel/btf/vmlinux (e.g. a file
    /// from `BTFHub` for the running kernel).
    #[arg(long, default_value = VMLINUX_BTF, value_name = "FILE")]
    btf: PathBuf,
}

impl TraceArgs {
    fn options(&self, verbose: bool) -> anyhow::Result<RecordOptions> {
        Ok(RecordOptions {
            backend: self.backend,
            ring_bytes: self.ring_bytes,
            verbose,
            stale_after: seconds(self.stale_after, "--stale-after")?,
            cri_socket: SocketChoice::parse(&self.cri_socket),
            resolve_wait: seconds(self.resolve_wait, "--resolve-wait")?,
            btf: self.btf.clone(),
            facts_helper: std::env::current_exe().ok(),
            ..RecordOptions::default()
        })
    }
}

fn parse_ring_bytes(text: &str) -> Result<u32, String> {
    let bytes: u32 = text.parse().map_err(|e| format!("{e}"))?;
    if bytes.is_power_of_two() && bytes >= 4096 {
        Ok(bytes)
    } else {
        Err(format!(
            "{bytes} is not a power of two of at least 4096 (the kernel requires it)"
        ))
    }
}

fn seconds(value: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("{what} must be a positive number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EXIT_USAGE;

    #[test]
    fn a_bad_flag_is_a_usage_error() {
        let usage = Cli::try_parse_from(["dad-trace", "record", "--no-such-flag"])
            .err()
            .expect("rejected");
        assert_eq!(usage.exit_code(), i32::from(EXIT_USAGE));
    }

    #[test]
    fn every_subcommand_help_ends_with_examples() {
        use clap::CommandFactory as _;
        let command = Cli::command();
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            let help = sub.clone().render_long_help().to_string();
            assert!(
                help.contains("EXAMPLES:"),
                "{} has no examples:\n{help}",
                sub.get_name()
            );
        }
    }
}
