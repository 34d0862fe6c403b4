//! Command line.
use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    compare,
    cri::SocketChoice,
    doctor, gate,
    offsets::{KernelTypes, VMLINUX_BTF},
    probes::{self, Backend, KernelSupport},
    record::{self, BackendChoice, RecordOptions},
    report,
    scenario::{self, Plugin, ScenarioOptions},
    session::Session,
};

#[derive(Parser)]
#[command(
    name = "dad-trace",
    version,
    about = "How long IPv6 addresses stay tentative (DAD), per pod"
)]
pub struct Cli {
    /// More output: -v shows debug logs (including the kernel programs'), -vv traces every event.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
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

#[derive(Subcommand)]
pub enum Command {
    /// Trace DAD on this node (root); print each address as it settles and histograms at the end.
    Record {
        #[command(flatten)]
        trace: TraceArgs,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
        /// Stop after this many addresses finished.
        #[arg(long, value_name = "N")]
        count: Option<usize>,
        /// Save the session as JSON (atomically; also on Ctrl-C).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Also print a table of every pod's delay.
        #[arg(long)]
        per_pod: bool,
        /// Create N synthetic pods (netns + veth + IPv6 address) while tracing, stop when they
        /// settled, and remove them.
        #[arg(long, value_name = "N")]
        synthetic_pods: Option<usize>,
        /// Name prefix of synthetic pod namespaces.
        #[arg(long, default_value = "dt-pod-", value_name = "PREFIX")]
        synthetic_prefix: String,
        /// Do not print a line per address.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run as a node agent: trace until stopped and expose Prometheus metrics (root).
    Serve {
        #[command(flatten)]
        trace: TraceArgs,
        /// Where to serve /metrics. Loopback by default: expose it deliberately.
        #[arg(long, default_value = "127.0.0.1:9797", value_name = "ADDR:PORT", value_parser = parse_listen)]
        listen: std::net::SocketAddr,
        /// Label metrics by pod too (one time series per pod: mind the cardinality).
        #[arg(long)]
        per_pod_labels: bool,
        /// Also keep every address and save the session here when stopped (grows with the
        /// number of addresses traced).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Show which kernel hook each backend uses for each DAD phase on this kernel, and why.
    Probes {
        /// Also load every program through the verifier (root; nothing is attached).
        #[arg(long)]
        verify: bool,
    },
    /// Reproduce slow IPv6 pod start on this node: pods set up by a real CNI plugin under
    /// three sysctl phases (defaults, naive tuning, + `devconf_inherit_init_net`), traced by
    /// dad-trace, with ADD times beside the traced delays (root). Sysctls are restored after.
    Scenario {
        #[arg(long, default_value_t = 20)]
        pods: usize,
        /// CNI plugin; falls back to plain veth pairs (and says so) when it is not installed.
        #[arg(long, value_enum, default_value_t = Plugin::Ptp)]
        plugin: Plugin,
        #[arg(long, default_value = "/usr/lib/cni", value_name = "DIR")]
        cni_dir: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Phases to run, in order.
        #[arg(long, value_delimiter = ',', default_values = ["defaults", "naive-tuning", "inherit"])]
        phases: Vec<String>,
        /// Save each phase's session (PHASE.json) and the results (scenario.json) here.
        #[arg(short, long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// Audit this node's DAD settings: why DAD still runs where it does, what each pod pays,
    /// and the fix (Bottlerocket TOML, sysctl.d, kind). Root to look inside pod namespaces.
    Doctor {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Apply the doctor's fix to the running node (needs --yes), or revert it exactly.
    Tune {
        /// Apply: all/default `accept_dad=0` and `net.core.devconf_inherit_init_net=1`.
        #[arg(long, conflicts_with = "revert", requires = "yes")]
        apply: bool,
        /// Put back the values saved by --apply.
        #[arg(long)]
        revert: bool,
        /// Confirms --apply: DAD protects against duplicate addresses; only disable it in
        /// networks you control.
        #[arg(long)]
        yes: bool,
        #[arg(long, default_value = "/var/lib/dad-trace/tune-state.json", value_name = "FILE")]
        state: PathBuf,
    },
    /// Pass or fail a before/after pair of sessions (no root needed): the gate of the kind CI
    /// job and of the scenario. Exit code 1 when it fails.
    Gate {
        #[arg(value_name = "BEFORE")]
        before: PathBuf,
        #[arg(value_name = "AFTER")]
        after: PathBuf,
        /// Before tuning, pod addresses' tentative p50 must be above this.
        #[arg(long, default_value_t = gate::POD_START.before_min_p50_ms, value_name = "MS")]
        before_min_p50_ms: u64,
        /// After tuning, pod addresses' tentative p99 must be below this.
        #[arg(long, default_value_t = gate::POD_START.after_max_p99_ms, value_name = "MS")]
        after_max_p99_ms: u64,
        /// text and markdown are the same table.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the kernel facts (struct offsets, DAD functions) read from BTF, as JSON: run by
    /// `record` in a child process so its own memory stays small.
    #[command(hide = true)]
    KernelFacts {
        #[arg(long, default_value = VMLINUX_BTF)]
        btf: PathBuf,
    },
    /// Summarize a saved session (no root needed).
    ///
    /// One file: its histograms. Several: side by side (before/after, or nodes), with the
    /// ratio last/first and the host settings that changed. `--merge` makes one of several.
    Report {
        #[arg(value_name = "SESSION", required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        per_pod: bool,
        /// Merge the sessions (e.g. one per node) into one before reporting.
        #[arg(long)]
        merge: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write the report here instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// `ADDR:PORT`, also with an unbracketed IPv6 address (`fd00::1:9797`), as a Kubernetes
/// manifest gets from `$(POD_IP):9797` on either family.
fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let bad = || format!("{text:?} is not ADDR:PORT (e.g. 127.0.0.1:9797, [::1]:9797, fd00::1:9797)");
    let (ip, port) = text.rsplit_once(':').ok_or_else(bad)?;
    Ok(std::net::SocketAddr::new(
        ip.parse().map_err(|_| bad())?,
        port.parse().map_err(|_| bad())?,
    ))
}

/// The process exit code for an error: scripts and Jobs can tell the causes apart.
#[must_use]
pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<record::PrivilegeError>() {
            return EXIT_PRIVILEGES;
        }
        if cause.is::<record::UnsupportedKernel>() || cause.is::<crate::offsets::BtfError>() {
            return EXIT_KERNEL;
        }
    }
    EXIT_FAILURE
}

/// Any other error (bad input, I/O, a failed scenario gate).
pub const EXIT_FAILURE: u8 = 1;
/// clap's code for a command line it cannot parse.
pub const EXIT_USAGE: u8 = 2;
/// Not allowed to trace: not root, or a capability missing.
pub const EXIT_PRIVILEGES: u8 = 3;
/// The kernel lacks what tracing needs: BTF, the DAD functions, any attachable backend.
pub const EXIT_KERNEL: u8 = 4;

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

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Record {
            trace,
            duration,
            count,
            output,
            per_pod,
            synthetic_pods,
            synthetic_prefix,
            quiet,
        } => {
            let opts = RecordOptions {
                duration: duration.map(|d| seconds(d, "--duration")).transpose()?,
                count,
                output,
                synthetic_pods,
                synthetic_prefix,
                lines: !quiet,
                ..trace.options(cli.verbose > 0)?
            };
            let session = record::record(opts).await?;
            print!("{}", report::render_text(&session, per_pod));
            Ok(())
        }
        Command::Serve {
            trace,
            listen,
            per_pod_labels,
            output,
        } => {
            let opts = RecordOptions {
                keep_events: output.is_some(),
                output,
                ..trace.options(cli.verbose > 0)?
            };
            let opts = RecordOptions {
                serve: Some(record::ServeOptions { listen, per_pod_labels }),
                ..opts
            };
            let session = record::record(opts).await?;
            eprintln!("Stopped; {} events lost in all.", session.lost_events);
            Ok(())
        }
        Command::Probes { verify } => probes_command(verify),
        Command::Doctor { format } => doctor_command(format),
        Command::Tune {
            apply,
            revert,
            yes: _,
            state,
        } => tune_command(apply, revert, &state),
        Command::Scenario {
            pods,
            plugin,
            cni_dir,
            backend,
            phases,
            output,
        } => scenario_command(pods, plugin, cni_dir, backend, &phases, output.as_deref()).await,
        Command::Gate {
            before,
            after,
            before_min_p50_ms,
            after_max_p99_ms,
            format,
        } => gate_command(
            &before,
            &after,
            gate::BeforeAfter {
                before_min_p50_ms,
                after_max_p99_ms,
            },
            format,
        ),
        Command::KernelFacts { btf } => {
            println!("{}", serde_json::to_string(&KernelTypes::load(&btf)?.facts()?)?);
            Ok(())
        }
        Command::Report {
            files,
            per_pod,
            merge,
            format,
            output,
        } => {
            let text = report_command(&files, per_pod, merge, format)?;
            if let Some(path) = output {
                std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
            } else {
                print!("{text}");
                Ok(())
            }
        }
    }
}

fn doctor_command(format: Format) -> anyhow::Result<()> {
    let audit = doctor::audit(std::path::Path::new(crate::synthetic::NETNS_DIR));
    let diagnosis = doctor::diagnose(&audit);
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&(&audit, &diagnosis))?),
        Format::Text | Format::Markdown | Format::Html => print!("{}", doctor::render(&audit, &diagnosis)),
    }
    Ok(())
}

fn tune_command(apply: bool, revert: bool, state: &std::path::Path) -> anyhow::Result<()> {
    let (verb, tune) = if apply {
        ("applied; previous values saved in", doctor::apply(state)?)
    } else if revert {
        ("reverted from", doctor::revert(state)?)
    } else {
        anyhow::bail!("say --apply --yes to apply the fix, or --revert to undo it");
    };
    for (name, value) in &tune.previous {
        println!("{name}: was {value}");
    }
    println!("{verb} {}", state.display());
    Ok(())
}

fn gate_command(
    before: &std::path::Path,
    after: &std::path::Path,
    gate: gate::BeforeAfter,
    format: Format,
) -> anyhow::Result<()> {
    let verdict = gate.check(&Session::load(before)?, &Session::load(after)?);
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&verdict)?),
        Format::Text | Format::Markdown | Format::Html => print!("{}", verdict.render()),
    }
    if verdict.passed() {
        Ok(())
    } else {
        anyhow::bail!("the before/after gate failed")
    }
}

fn report_command(files: &[PathBuf], per_pod: bool, merge: bool, format: Format) -> anyhow::Result<String> {
    let mut sessions = Vec::new();
    for file in files {
        let label = file
            .file_stem()
            .map_or_else(|| file.display().to_string(), |s| s.to_string_lossy().into_owned());
        sessions.push((label, Session::load(file)?));
    }
    if merge || sessions.len() == 1 {
        let label = sessions
            .iter()
            .map(|(label, _)| label.as_str())
            .collect::<Vec<_>>()
            .join("+");
        let session = compare::merge(sessions.into_iter().map(|(_, session)| session).collect())?;
        return Ok(match format {
            Format::Text => report::render_text(&session, per_pod),
            Format::Markdown => compare::render_markdown(&compare::compare(&[(label, session)])),
            Format::Html => crate::html::render(&compare::compare(&[(label, session)])),
            Format::Json => serde_json::to_string_pretty(&report::summarize(&session))? + "\n",
        });
    }
    let comparison = compare::compare(&sessions);
    Ok(match format {
        Format::Text => compare::render_text(&comparison),
        Format::Markdown => compare::render_markdown(&comparison),
        Format::Html => crate::html::render(&comparison),
        Format::Json => serde_json::to_string_pretty(&comparison)? + "\n",
    })
}

async fn scenario_command(
    pods: usize,
    mut plugin: Plugin,
    cni_dir: PathBuf,
    backend: BackendChoice,
    phase_names: &[String],
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let phases = phase_names
        .iter()
        .map(|name| {
            scenario::PHASES
                .iter()
                .find(|phase| phase.name == name)
                .with_context(|| {
                    let known: Vec<_> = scenario::PHASES.iter().map(|phase| phase.name).collect();
                    format!("unknown phase {name:?}; phases are {known:?}")
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !plugin.available(&cni_dir) {
        eprintln!(
            "CNI plugin {plugin:?} not found in {} (install containernetworking-plugins): using plain veth pairs",
            cni_dir.display()
        );
        plugin = Plugin::Veth;
    }
    let opts = ScenarioOptions {
        plugin,
        cni_dir,
        pods,
        backend,
        phases,
        prefix: "dts-".into(),
        extra_slack_ms: 0,
    };
    let results = scenario::run(&opts).await?;
    if let Some(dir) = output {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        for result in &results {
            result.session.save(&dir.join(format!("{}.json", result.phase)))?;
        }
        std::fs::write(dir.join("scenario.json"), serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("write {}", dir.join("scenario.json").display()))?;
    }
    for result in &results {
        println!("\n== {} ({})", result.phase, result.plugin_label());
        print!("{}", report::render_text(&result.session, false));
    }
    // The before/after view: the phases side by side, as `report` shows saved sessions.
    let phases: Vec<(String, Session)> = results
        .iter()
        .map(|result| (result.phase.to_string(), result.session.clone()))
        .collect();
    let comparison = compare::compare(&phases);
    println!("\n== before/after");
    print!("{}", compare::render_text(&comparison));
    if let Some(dir) = output {
        std::fs::write(dir.join("report.md"), compare::render_markdown(&comparison))?;
        std::fs::write(dir.join("report.html"), crate::html::render(&comparison))?;
    }
    print!("{}", scenario::render(&results));
    let failed: Vec<_> = results
        .iter()
        .filter(|result| !result.problems.is_empty())
        .map(|r| r.phase)
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("phases {failed:?} did not pass their gates")
    }
}

fn probes_command(verify: bool) -> anyhow::Result<()> {
    let types = KernelTypes::load(std::path::Path::new(VMLINUX_BTF))?;
    let support = KernelSupport::read(
        std::path::Path::new("/proc/kallsyms"),
        std::path::Path::new("/sys/bus/event_source/devices/kprobe"),
        Some(&types),
    )
    .context("read /proc/kallsyms")?;
    println!(
        "kernel {}, BTF {}",
        nix::sys::utsname::uname()?.release().to_string_lossy(),
        types.path().display()
    );
    print!("{}", probes::render(&support));
    if verify {
        record::check_privileges()?;
        let dad_work = support.symbols.get(probes::DAD_WORK_FN).copied().unwrap_or(0);
        let config = types.config(dad_work)?;
        let mut ebpf = crate::loader::load(&config, dad_trace_common::DEFAULT_RING_BYTES, false)?;
        for backend in [Backend::Kprobe, Backend::Tracepoint] {
            for spec in probes::table(backend) {
                for hook in spec.hooks {
                    let verdict = match crate::loader::load_program(&mut ebpf, hook) {
                        Ok(()) => "verifier OK".to_string(),
                        Err(crate::loader::AttachError::Program {
                            source: aya::programs::ProgramError::AlreadyLoaded,
                            ..
                        }) => continue,
                        Err(e) => format!("FAILED: {:#}", anyhow::Error::from(e)),
                    };
                    println!("{backend:<10} {:<18} {verdict}", hook.program);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_accepts_both_families_bracketed_or_not() {
        assert_eq!(
            parse_listen("127.0.0.1:9797"),
            Ok("127.0.0.1:9797".parse().expect("v4"))
        );
        assert_eq!(parse_listen("[::1]:9797"), Ok("[::1]:9797".parse().expect("v6")));
        assert_eq!(parse_listen("fd00::1:9797"), Ok("[fd00::1]:9797".parse().expect("v6")));
        assert!(parse_listen("localhost:9797").is_err_and(|e| e.contains("ADDR:PORT")));
        assert!(parse_listen("127.0.0.1").is_err());
    }

    #[test]
    fn exit_codes_tell_causes_apart() {
        let privileges = anyhow::Error::from(record::PrivilegeError("no".into())).context("record");
        assert_eq!(exit_code(&privileges), EXIT_PRIVILEGES);
        let kernel = anyhow::Error::from(record::UnsupportedKernel("old".into()));
        assert_eq!(exit_code(&kernel), EXIT_KERNEL);
        let btf = KernelTypes::load(std::path::Path::new("/nonexistent/vmlinux"))
            .err()
            .map(anyhow::Error::from)
            .expect("no BTF there");
        assert_eq!(exit_code(&btf), EXIT_KERNEL);
        assert_eq!(exit_code(&anyhow::anyhow!("bad file")), EXIT_FAILURE);
        let usage = Cli::try_parse_from(["dad-trace", "record", "--no-such-flag"])
            .err()
            .expect("rejected");
        assert_eq!(usage.exit_code(), i32::from(EXIT_USAGE));
    }
}
