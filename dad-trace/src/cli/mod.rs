//! Command line: one file per subcommand, each its arguments and its `run`.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    files::write_atomically,
    kernel::{BackendChoice, VMLINUX_BTF},
    output::{filter::Filter, otlp},
    record::enrich::cri::SocketChoice,
    tracer::RecordOptions,
};

pub mod completions;
pub mod doctor;
pub mod gate;
pub mod man;
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
    KernelFacts(probes::KernelFactsCommand),
    Completions(completions::Completions),
    Man(man::Man),
    KernelDescription(probes::KernelDescription),
}

impl Cli {
    /// What the parser cannot say: flags accepted alone that do nothing together. Refused
    /// as a usage error (exit code 2, with the subcommand's usage), never ignored.
    pub fn check(&self) -> Result<(), clap::Error> {
        use clap::CommandFactory as _;
        let (name, problem) = match &self.command {
            Command::Record(record) => ("record", record.check().err()),
            Command::Report(report) => ("report", report.check().err()),
            _ => return Ok(()),
        };
        let Some((kind, message)) = problem else {
            return Ok(());
        };
        let command = Cli::command();
        let mut sub = command
            .find_subcommand(name)
            .cloned()
            .unwrap_or_else(Cli::command)
            .bin_name(format!("dad-trace {name}"));
        Err(sub.error(kind, message))
    }
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
        Command::Completions(command) => command.run(),
        Command::Man(command) => command.run(),
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

/// Writes `text` to `output`, or to standard output without one.
pub(crate) fn write_output(output: Option<&Path>, text: &str) -> anyhow::Result<()> {
    if let Some(path) = output {
        warn_if_format_name(path);
        write_atomically(path, |file| file.write_all(text.as_bytes()))
            .with_context(|| format!("write {}", path.display()))
    } else {
        out(text)
    }
}

/// Writes to standard output. A reader that went away (`dad-trace report … | head`) ends
/// the output, not the program: that is success, never a panic.
pub(crate) fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("write to standard output"),
        _ => Ok(()),
    }
}

/// The names of output formats, which `-o` (a file) is easily mistaken for.
const FORMAT_NAMES: &[&str] = &["json", "jsonl", "text", "txt", "markdown", "md", "html", "csv", "yaml"];

/// The warning for an output file named like a format (`record -o json` writes a file called
/// `json`): `-o` is the file everywhere, `--format` the format.
#[must_use]
pub fn format_name_warning(path: &Path) -> Option<String> {
    let name = path.to_str()?;
    FORMAT_NAMES.contains(&name.to_ascii_lowercase().as_str()).then(|| {
        format!(
            "writing to a file named {name:?} in the current directory: -o takes a file name; \
             for a format say --format (or name the file e.g. {name}-out.{name})"
        )
    })
}

pub(crate) fn warn_if_format_name(path: &Path) {
    if let Some(warning) = format_name_warning(path) {
        eprintln!("dad-trace: warning: {warning}");
    }
}

/// Where the node's root is: shared by every command that reads the node.
#[derive(clap::Args)]
pub struct HostRootArg {
    /// The node's root file system is mounted here (a `kubectl debug node` pod's /host): its
    /// /run/netns, CRI sockets (the defaults and --cri-socket), /proc/sys and tune's state
    /// file are read under it. Needs the host's PID and network namespaces.
    #[arg(long, env = crate::node::host::HOST_ROOT_ENV, value_name = "DIR")]
    host_root: Option<PathBuf>,
}

impl HostRootArg {
    /// Takes the root for the rest of the run (before anything reads the node).
    pub fn apply(&self) -> anyhow::Result<()> {
        if let Some(root) = &self.host_root {
            crate::node::host::set_root(root)?;
        }
        Ok(())
    }
}

/// How to trace: shared by `record` and `serve`.
#[derive(clap::Args)]
pub struct TraceArgs {
    #[command(flatten)]
    host: HostRootArg,
    /// kprobe (precise, needs `CONFIG_KPROBES`), tracepoint (workqueue events, any kernel), or auto.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Size of the kernel → userspace ring buffer (power of two).
    #[arg(long, default_value_t = dad_trace_common::DEFAULT_RING_BYTES, value_name = "BYTES", value_parser = parse_ring_bytes)]
    ring_bytes: u32,
    /// Check an address for existence after this long without kernel events (seconds).
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    stale_after: f64,
    /// Say an address is stuck once it has been tentative this long (a live line, and the
    /// `dad_trace_stuck_addresses` gauge of `serve`), while it lasts (seconds).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    stuck_after: f64,
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
    /// Only pods of Kubernetes namespaces matching this glob.
    #[arg(long, value_name = "GLOB", value_parser = parse_glob)]
    namespace: Option<glob::Pattern>,
    /// Only pods whose name or label (`namespace/name`, netns name, `host`) matches this glob.
    #[arg(long, value_name = "GLOB", value_parser = parse_glob)]
    pod: Option<glob::Pattern>,
    /// Only network namespaces whose name (under /run/netns) or inode matches this glob.
    #[arg(long, value_name = "GLOB", value_parser = parse_glob)]
    netns: Option<glob::Pattern>,
    /// Only interfaces whose name matches this glob.
    #[arg(long, value_name = "GLOB", value_parser = parse_glob)]
    ifname: Option<glob::Pattern>,
    /// Also follow CNI plugins run from this directory, as the runtime names it (besides
    /// /opt/cni/bin and /usr/lib/cni; four directories in all).
    #[arg(long = "cni-bin-dir", value_name = "DIR")]
    cni_bin_dirs: Vec<PathBuf>,
    /// Do not follow CNI plugin calls (pod start): DAD only.
    #[arg(long)]
    no_cni: bool,
    /// Send pod start as OpenTelemetry traces (OTLP/HTTP, protobuf) to this collector
    /// (`/v1/traces` is added unless the URL ends with it). Without it, the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` and other `OTEL_*` variables are read.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Trust this CA (PEM certificates) for an https collector, besides the system's roots.
    #[arg(long, value_name = "FILE")]
    otlp_ca_file: Option<PathBuf>,
}

fn parse_glob(text: &str) -> Result<glob::Pattern, String> {
    glob::Pattern::new(text).map_err(|e| format!("{text:?} is not a glob: {e}"))
}

impl TraceArgs {
    fn options(&self, verbose: bool) -> anyhow::Result<RecordOptions> {
        self.host.apply()?;
        let dirs = crate::kernel::cni_bin_dirs(&self.cni_bin_dirs);
        anyhow::ensure!(
            dirs.len() <= dad_trace_common::PREFIXES,
            "--cni-bin-dir: dad-trace follows {} plugin directories at most, the two defaults included ({} given)",
            dad_trace_common::PREFIXES,
            dirs.len()
        );
        if let Some(long) = dirs.iter().find(|dir| dir.len() >= dad_trace_common::PREFIX_BYTES) {
            anyhow::bail!(
                "--cni-bin-dir {long:?}: longer than the {} bytes of a path dad-trace compares",
                dad_trace_common::PREFIX_BYTES - 1
            );
        }
        Ok(RecordOptions {
            cni: !self.no_cni,
            cni_bin_dirs: self.cni_bin_dirs.clone(),
            backend: self.backend,
            ring_bytes: self.ring_bytes,
            verbose,
            stale_after: seconds(self.stale_after, "--stale-after")?,
            stuck_after: seconds(self.stuck_after, "--stuck-after")?,
            cri_socket: SocketChoice::parse(&self.cri_socket),
            resolve_wait: seconds(self.resolve_wait, "--resolve-wait")?,
            btf: self.btf.clone(),
            filter: Filter {
                namespace: self.namespace.clone(),
                pod: self.pod.clone(),
                netns: self.netns.clone(),
                ifname: self.ifname.clone(),
            },
            facts_helper: std::env::current_exe().ok(),
            otlp: otlp::config::resolve(
                &otlp::OtlpFlags {
                    endpoint: self.otlp_endpoint.clone(),
                    ca_file: self.otlp_ca_file.clone(),
                },
                &|name| std::env::var(name).ok(),
            )?,
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

    /// Every flag and argument of every subcommand says what it is for in `-h`.
    #[test]
    fn every_flag_and_argument_has_help() {
        fn missing(command: &clap::Command, path: &str, out: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() && !arg.is_hide_set() {
                    out.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
                missing(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut without = Vec::new();
        missing(&<Cli as clap::CommandFactory>::command(), "dad-trace", &mut without);
        assert!(without.is_empty(), "without help: {without:?}");
    }

    /// Values that would do nothing, and flags that do nothing together, are usage errors
    /// (exit code 2), never ignored.
    #[test]
    fn what_would_do_nothing_is_refused_as_usage() {
        for args in [
            &["record", "--duration", "0"][..],
            &["record", "-d", "nan"],
            &["record", "--duration", "-1"],
            &["record", "--count", "0"],
            &["record", "5", "0"],
            &["record", "-j", "--format", "text"],
            &["tune"],
            &["tune", "--apply", "--yes", "--revert"],
            &["scenario", "--pods", "0"],
        ] {
            let refused = Cli::try_parse_from(["dad-trace"].iter().chain(args)).err();
            assert_eq!(
                refused.map(|e| e.exit_code()),
                Some(i32::from(EXIT_USAGE)),
                "{args:?} accepted"
            );
        }
        for args in [
            &["report", "--per-pod", "--format", "json", "a.json"][..],
            &["report", "-P", "a.json", "b.json"],
            &["record", "-j", "--per-pod"],
        ] {
            let cli = Cli::try_parse_from(["dad-trace"].iter().chain(args)).expect("parses");
            let refused = cli.check().err();
            assert_eq!(
                refused.map(|e| e.exit_code()),
                Some(i32::from(EXIT_USAGE)),
                "{args:?} accepted"
            );
        }
        for args in [
            &["report", "-P", "a.json"][..],
            &["report", "--per-pod", "--merge", "a.json", "b.json"],
            &["record", "-d", "2.5", "-j", "-m"],
            &["tune", "--revert"],
        ] {
            let cli = Cli::try_parse_from(["dad-trace"].iter().chain(args));
            let checked = cli
                .map_err(|e| e.to_string())
                .and_then(|cli| cli.check().map_err(|e| e.to_string()));
            // -j with -m is refused by the check (JSON carries nanoseconds): the only one here.
            assert_eq!(checked.is_ok(), args[0] != "record", "{args:?}: {checked:?}");
        }
    }

    #[test]
    fn a_bad_flag_is_a_usage_error() {
        let usage = Cli::try_parse_from(["dad-trace", "record", "--no-such-flag"])
            .err()
            .expect("rejected");
        assert_eq!(usage.exit_code(), i32::from(EXIT_USAGE));
    }

    #[test]
    fn cni_bin_dirs_are_bounded() {
        let options = |args: &[&str]| {
            let cli = Cli::try_parse_from(["dad-trace", "record"].iter().chain(args)).expect("parses");
            let Command::Record(record) = cli.command else {
                panic!("record")
            };
            record.trace_options()
        };
        let two = options(&["--cni-bin-dir", "/a", "--cni-bin-dir", "/b"]).expect("four in all");
        assert!(two.cni && two.cni_bin_dirs.len() == 2);
        let Err(error) = options(&["--cni-bin-dir", "/a", "--cni-bin-dir", "/b", "--cni-bin-dir", "/c"]) else {
            panic!("five directories accepted")
        };
        assert!(format!("{error}").contains("4 plugin directories at most"), "{error}");
        let long = format!("/{}", "x".repeat(70));
        assert!(options(&["--cni-bin-dir", &long]).is_err());
        assert!(!options(&["--no-cni"]).expect("parses").cni);
    }

    #[test]
    fn output_files_named_like_formats_are_warned_about() {
        assert!(format_name_warning(Path::new("json")).is_some_and(|w| w.contains("--format")));
        assert!(format_name_warning(Path::new("HTML")).is_some());
        assert_eq!(format_name_warning(Path::new("before.json")), None);
        assert_eq!(format_name_warning(Path::new("out/json")), None);
    }

    #[test]
    fn formats_a_command_cannot_write_are_refused() {
        let error = Cli::try_parse_from(["dad-trace", "gate", "a.json", "b.json", "--format", "html"])
            .err()
            .expect("refused");
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidValue, "{error}");
        for format in ["text", "markdown", "html", "json"] {
            assert!(
                Cli::try_parse_from(["dad-trace", "doctor", "--format", format]).is_ok(),
                "{format}"
            );
        }
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
