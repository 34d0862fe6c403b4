//! `dad-trace man`: manual pages made from the parser's own definitions (`clap_mangen`), so
//! they cannot drift from it, with the sections a manual page has and clap has not: EXAMPLES
//! (the help's), EXIT STATUS, ENVIRONMENT, FILES and, for `record` and `report`, OUTPUT.
use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory as _;
use roff::{Roff, bold, roman};

use super::Cli;
use crate::{
    error::{EXIT_FAILURE, EXIT_KERNEL, EXIT_PRIVILEGES, EXIT_USAGE},
    kernel::{KALLSYMS, VMLINUX_BTF, probes::DEFAULT_CNI_BIN_DIRS},
    node::{host::HOST_ROOT_ENV, netns::NETNS_DIR, sysctl::JOURNAL_ENV, tune::TUNE_STATE},
    record::enrich::cri::DEFAULT_SOCKETS,
};

/// Write the manual pages (roff): dad-trace(1) and one per subcommand, dad-trace-SUB(1).
#[derive(clap::Args)]
#[command(after_help = "EXAMPLES:\n    \
    dad-trace man -o /usr/local/share/man/man1   # every page\n    \
    dad-trace man | man -l -                     # read dad-trace(1) now")]
pub struct Man {
    /// Write every page into this directory; without it, print dad-trace(1).
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
}

impl Man {
    pub fn run(self) -> anyhow::Result<()> {
        let mut command = Cli::command().disable_help_subcommand(true);
        command.build();
        let Some(dir) = self.output else {
            return super::out(&page(&command, None));
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut pages = vec![(&command, None)];
        pages.extend(
            command
                .get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .map(|sub| (sub, Some(sub.get_name()))),
        );
        for (command, sub) in pages {
            let path = dir.join(clap_mangen::Man::new(command.clone()).get_filename());
            std::fs::write(&path, page(command, sub)).with_context(|| format!("write {}", path.display()))?;
        }
        Ok(())
    }
}

/// One page: `clap_mangen`'s sections, then ours, then the version.
fn page(command: &clap::Command, sub: Option<&str>) -> String {
    let man = clap_mangen::Man::new(command.clone());
    let mut out = Vec::new();
    let mut render = |section: fn(&clap_mangen::Man, &mut dyn std::io::Write) -> std::io::Result<()>| {
        // Writing to a Vec cannot fail.
        let _ = section(&man, &mut out);
    };
    render(clap_mangen::Man::render_title);
    render(clap_mangen::Man::render_name_section);
    render(clap_mangen::Man::render_synopsis_section);
    render(clap_mangen::Man::render_description_section);
    if command.get_arguments().any(|arg| !arg.is_hide_set()) {
        render(clap_mangen::Man::render_options_section);
    }
    if command.get_subcommands().any(|sub| !sub.is_hide_set()) {
        render(clap_mangen::Man::render_subcommands_section);
    }
    let mut roff = Roff::new();
    if let Some(help) = command.get_after_help() {
        examples(&mut roff, &help.to_string());
    }
    let sections = Sections::of(sub);
    for (title, items) in [
        ("OUTPUT", sections.output),
        ("EXIT STATUS", sections.exit_status),
        ("ENVIRONMENT", sections.environment),
        ("FILES", sections.files),
    ] {
        listed(&mut roff, title, &items);
    }
    let mut text = String::from_utf8_lossy(&out).into_owned();
    text.push_str(&roff.to_roff());
    let mut version = Vec::new();
    if command.get_version().is_some() {
        let _ = man.render_version_section(&mut version);
    }
    text + &String::from_utf8_lossy(&version)
}

/// The help's `EXAMPLES:` lines, as typed (no filling).
fn examples(roff: &mut Roff, after_help: &str) {
    let Some(lines) = after_help.strip_prefix("EXAMPLES:\n") else {
        return;
    };
    roff.control("SH", ["EXAMPLES"]).control("nf", []);
    for line in lines.lines() {
        roff.text([roman(line.trim_start())]);
    }
    roff.control("fi", []);
}

fn listed(roff: &mut Roff, title: &str, items: &[(String, String)]) {
    if items.is_empty() {
        return;
    }
    roff.control("SH", [title]);
    for (term, text) in items {
        roff.control("TP", [])
            .text([bold(term.as_str())])
            .text([roman(text.as_str())]);
    }
}

/// What one page says beyond the parser: each list is (term, what it means).
#[derive(Default)]
struct Sections {
    output: Vec<(String, String)>,
    exit_status: Vec<(String, String)>,
    environment: Vec<(String, String)>,
    files: Vec<(String, String)>,
}

fn items(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(term, text)| ((*term).to_string(), (*text).to_string()))
        .collect()
}

const OTEL: &[(&str, &str)] = &[
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "The collector to send pod start to as traces, without --otlp-endpoint.",
    ),
    (
        "OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_EXPORTER_OTLP_CERTIFICATE",
        "Headers, request timeout and CA file of the exporter.",
    ),
    (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "Only http/protobuf; another protocol is refused.",
    ),
    (
        "OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_SDK_DISABLED",
        "The traces' service name and resource; true turns the exporter off.",
    ),
    ("K8S_NODE_NAME", "The node's name in the traces (k8s.node.name)."),
];

impl Sections {
    fn of(sub: Option<&str>) -> Self {
        let traces = matches!(sub, Some("record" | "serve" | "probes" | "scenario"));
        let reads_node = matches!(sub, Some("record" | "serve" | "doctor" | "tune"));
        let mut exit_status = vec![
            ("0".to_string(), "Success.".to_string()),
            (
                EXIT_FAILURE.to_string(),
                match sub {
                    Some("gate") => "The gate failed, or an input could not be read.",
                    Some("scenario") => "A phase did not meet its expectation, or an error.",
                    _ => "An error: bad input, I/O, anything below.",
                }
                .to_string(),
            ),
            (
                EXIT_USAGE.to_string(),
                "A command line that cannot be used.".to_string(),
            ),
        ];
        if traces {
            exit_status.push((
                EXIT_PRIVILEGES.to_string(),
                "Not allowed to trace: not root, or a capability is missing.".to_string(),
            ));
            exit_status.push((
                EXIT_KERNEL.to_string(),
                "The kernel lacks what tracing needs: BTF, the DAD functions, a backend.".to_string(),
            ));
        }
        let mut environment = Vec::new();
        if reads_node {
            environment.push((
                HOST_ROOT_ENV.to_string(),
                "As --host-root: where the node's root file system is mounted.".to_string(),
            ));
        }
        if matches!(sub, Some("record" | "serve" | "scenario")) {
            environment.extend(items(OTEL));
        }
        if matches!(sub, Some("scenario")) {
            environment.push((
                JOURNAL_ENV.to_string(),
                "A file that notes the sysctls to restore, for a run killed before it restored them.".to_string(),
            ));
        }
        environment.push((
            "RUST_LOG".to_string(),
            "Log filter (env_logger), as -v and -vv set it.".to_string(),
        ));
        let mut files = Vec::new();
        if traces {
            files.push((VMLINUX_BTF.to_string(), "The kernel's BTF (or --btf).".to_string()));
            files.push((
                KALLSYMS.to_string(),
                "Which kernel functions kprobes can attach to.".to_string(),
            ));
        }
        if reads_node || matches!(sub, Some("scenario")) {
            files.push((
                NETNS_DIR.to_string(),
                "Named network namespaces (pods' cni-*).".to_string(),
            ));
            files.push((
                "/proc/sys/net".to_string(),
                "The DAD sysctls, per namespace.".to_string(),
            ));
        }
        if matches!(sub, Some("record" | "serve")) {
            files.push((
                DEFAULT_SOCKETS.join(", "),
                "Container runtime sockets that name pods (--cri-socket).".to_string(),
            ));
            files.push((
                DEFAULT_CNI_BIN_DIRS.join(", "),
                "Where the CNI plugins followed run from (--cni-bin-dir adds more).".to_string(),
            ));
        }
        if matches!(sub, Some("tune")) {
            files.push((
                TUNE_STATE.to_string(),
                "The values --apply replaced (--state).".to_string(),
            ));
        }
        Self {
            output: output_fields(sub),
            exit_status,
            environment,
            files,
        }
    }
}

/// The fields of `record`'s and `report`'s output.
fn output_fields(sub: Option<&str>) -> Vec<(String, String)> {
    match sub {
        Some("record") => items(&[
            (
                "TIME",
                "When the address left the tentative state, in the zone the header names.",
            ),
            (
                "POD",
                "namespace/pod from the runtime, else the netns name, host, or netns:INODE.",
            ),
            ("IFACE, ADDRESS", "The interface and the IPv6 address."),
            ("TENTATIVE", "Created tentative until usable (or failed, or removed)."),
            ("DAD", "Duplicate Address Detection's own part of it; - when none ran."),
            (
                "OUTCOME",
                "settled, failed (a duplicate answered) or aborted (removed first).",
            ),
            (
                "--format jsonl",
                "One object per line; type is address (the session's event: tentative_ns, dad_ns, \
                 link_wait_ns, delay_ns, probing_ns, outcome, duplicate_of, pod), pod, cni_call, \
                 socket_error, stuck or interval.",
            ),
        ]),
        Some("report") => items(&[
            (
                "histograms",
                "bcc style: a power-of-two range of delays, the count in it, a bar.",
            ),
            (
                "last/first",
                "With several sessions: the last one's value over the first's, in words.",
            ),
            (
                "KS test",
                "Whether two sessions' delays differ beyond chance (two-sample Kolmogorov-Smirnov p).",
            ),
            (
                "POD ADDRS DELAY FAILED ABORTED",
                "With --per-pod: each pod's addresses and longest wait.",
            ),
            ("--format json", "The same, for machines: summary, pods[], comparisons."),
        ]),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(sub: Option<&str>) -> String {
        let mut command = Cli::command().disable_help_subcommand(true);
        command.build();
        let command = match sub {
            Some(name) => command.find_subcommand(name).expect("subcommand").clone(),
            None => command,
        };
        page(&command, sub)
    }

    #[test]
    fn record_has_every_section_a_manual_page_has() {
        let page = rendered(Some("record"));
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "EXAMPLES",
            "OUTPUT",
            "EXIT STATUS",
            "ENVIRONMENT",
            "FILES",
        ] {
            assert!(
                page.contains(&format!(".SH \"{section}\"")) || page.contains(&format!(".SH {section}\n")),
                "{section}:\n{page}"
            );
        }
        assert!(
            page.contains("sudo dad\\-trace record \\-o before.json"),
            "the help's examples"
        );
        assert!(page.contains(HOST_ROOT_ENV) && page.contains("/sys/kernel/btf/vmlinux"));
    }

    #[test]
    fn each_page_says_only_what_applies_to_it() {
        let report = rendered(Some("report"));
        assert!(report.contains("KS test"));
        let code = |code: u8| format!("\\fB{code}\\fR");
        assert!(report.contains(&code(EXIT_USAGE)), "{report}");
        assert!(!report.contains(&code(EXIT_PRIVILEGES)), "report needs no privileges");
        assert!(!report.contains("FILES"), "report reads only the sessions it is given");
        let tune = rendered(Some("tune"));
        assert!(
            tune.contains(&TUNE_STATE.replace('-', "\\-")) && !tune.contains("OUTPUT"),
            "{tune}"
        );
        let main = rendered(None);
        assert!(main.contains("SUBCOMMANDS") && main.contains("EXAMPLES") && main.contains("VERSION"));
    }
}
