//! `dad-trace serve`.
use std::{net::SocketAddr, path::PathBuf};

use super::TraceArgs;
use crate::{
    output::ServeOptions,
    tracer::{self, RecordOptions},
};

/// Run as a node agent: trace until stopped and expose Prometheus metrics (root).
#[derive(clap::Args)]
#[command(after_help = "EXAMPLES:\n    \
    sudo dad-trace serve                                # metrics on http://127.0.0.1:9797/metrics\n    \
    sudo dad-trace serve --listen '[::]:9797'           # on every address of the node\n    \
    sudo dad-trace serve --per-pod-labels -o agent.json # label by pod, keep the session")]
pub struct Serve {
    #[command(flatten)]
    trace: TraceArgs,
    /// Where to serve /metrics. Loopback by default: expose it deliberately.
    #[arg(long, default_value = "127.0.0.1:9797", value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Label metrics by pod too (one time series per pod: mind the cardinality).
    #[arg(long)]
    per_pod_labels: bool,
    /// Also keep every address and save the session here when stopped (grows with the
    /// number of addresses traced).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

impl Serve {
    /// What `serve` records with: events are kept only for a session file.
    fn options(self, verbose: bool) -> anyhow::Result<RecordOptions> {
        Ok(RecordOptions {
            keep_events: self.output.is_some(),
            output: self.output,
            serve: Some(ServeOptions {
                listen: self.listen,
                per_pod_labels: self.per_pod_labels,
            }),
            ..self.trace.options(verbose)?
        })
    }

    pub async fn run(self, verbose: bool) -> anyhow::Result<()> {
        if let Some(path) = &self.output {
            super::warn_if_format_name(path);
        }
        let session = tracer::record(self.options(verbose)?).await?;
        eprintln!("Stopped; {} events lost in all.", session.lost_events);
        Ok(())
    }
}

/// `ADDR:PORT`, also with an unbracketed IPv6 address (`fd00::1:9797`), as a Kubernetes
/// manifest gets from `$(POD_IP):9797` on either family.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let bad = || format!("{text:?} is not ADDR:PORT (e.g. 127.0.0.1:9797, [::1]:9797, fd00::1:9797)");
    let (ip, port) = text.rsplit_once(':').ok_or_else(bad)?;
    Ok(SocketAddr::new(
        ip.parse().map_err(|_| bad())?,
        port.parse().map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn serve(args: &[&str]) -> Serve {
        let cli = Cli::try_parse_from(["dad-trace", "serve"].iter().chain(args)).expect("parses");
        let Command::Serve(serve) = cli.command else {
            panic!("serve parsed as another command")
        };
        serve
    }

    #[test]
    fn the_agent_keeps_events_only_for_a_session_file() {
        assert!(!serve(&[]).options(false).expect("options").keep_events);
        let with_file = serve(&["-o", "agent.json"]).options(false).expect("options");
        assert!(with_file.keep_events);
        assert_eq!(with_file.output.as_deref(), Some(std::path::Path::new("agent.json")));
    }

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
}
