//! `dad-trace scenario`.
use std::path::PathBuf;

use anyhow::Context as _;

use crate::{
    kernel::BackendChoice,
    output::otlp,
    scenario::{self, ScenarioOptions, gates, phases, plugin::Plugin, render},
};

/// Reproduce slow IPv6 pod start on this node: pods set up by a real CNI plugin under
/// three sysctl phases (defaults, naive tuning, + `devconf_inherit_init_net`), traced by
/// dad-trace, with ADD times beside the traced delays (root). Sysctls are restored after.
#[derive(clap::Args)]
#[command(after_help = "EXAMPLES:\n    \
    sudo dad-trace scenario                            # 20 pods per phase, ptp\n    \
    sudo dad-trace scenario --plugin bridge-dad --pods 5 --phases defaults\n    \
    sudo dad-trace scenario -o results/                # sessions, report.md, report.html\n    \
    dad-trace scenario --list                          # the phases, as JSON")]
pub struct Scenario {
    /// Pods set up per phase.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pods: u16,
    /// CNI plugin; falls back to plain veth pairs (and says so) when it is not installed.
    #[arg(long, value_enum, default_value_t = Plugin::Ptp)]
    plugin: Plugin,
    /// Where the CNI plugins are (ptp, bridge, host-local; Debian's containernetworking-plugins
    /// puts them here).
    #[arg(long = "cni-bin-dir", default_value = "/usr/lib/cni", value_name = "DIR")]
    cni_dir: PathBuf,
    /// kprobe, tracepoint, or auto (as `record --backend`).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Phases to run, in order.
    #[arg(long, value_delimiter = ',', default_values = ["defaults", "naive-tuning", "inherit"])]
    phases: Vec<String>,
    /// Save each phase's session (PHASE.json) and the results (scenario.json) here.
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Print the phases (names, sysctls, and which two the before/after gate compares) as
    /// JSON and exit.
    #[arg(long)]
    list: bool,
    /// Send each phase's pod start as OpenTelemetry traces to this collector (OTLP/HTTP; see
    /// `record --otlp-endpoint`).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

impl Scenario {
    pub async fn run(self) -> anyhow::Result<()> {
        if self.list {
            return super::out(&(serde_json::to_string_pretty(&phases::listing())? + "\n"));
        }
        let phases = self
            .phases
            .iter()
            .map(|name| {
                phases::by_name(name).with_context(|| {
                    let known: Vec<_> = phases::PHASES.iter().map(|phase| phase.name).collect();
                    format!("unknown phase {name:?}; phases are {known:?}")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut plugin = self.plugin;
        if !plugin.available(&self.cni_dir) {
            eprintln!(
                "CNI plugin {plugin:?} not found in {} (install containernetworking-plugins): using plain veth pairs",
                self.cni_dir.display()
            );
            plugin = Plugin::Veth;
        }
        let opts = ScenarioOptions {
            plugin,
            cni_dir: self.cni_dir,
            pods: usize::from(self.pods),
            backend: self.backend,
            phases,
            prefix: "dts-".into(),
            slack: gates::Slack::default(),
            otlp: otlp::config::resolve(
                &otlp::OtlpFlags {
                    endpoint: self.otlp_endpoint,
                    ca_file: None,
                },
                &|name| std::env::var(name).ok(),
            )?,
        };
        let results = scenario::run(&opts).await?;
        if let Some(dir) = &self.output {
            render::write_outputs(&results, dir)?;
        }
        super::out(&render::report(&results))?;
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
}
