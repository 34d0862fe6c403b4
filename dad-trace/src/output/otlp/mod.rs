//! Pod start as OpenTelemetry traces: [`join`] puts CNI calls and addresses in their traces
//! (the runtime's, when the plugin's environment carried it), [`spans`] writes each span,
//! [`export`] sends them to a collector without ever holding up the recording, [`config`]
//! reads `--otlp-endpoint` and the standard `OTEL_*` variables.
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use self::config::{OtlpConfig, OtlpFlags};
use self::{
    export::{ExportStats, Exporter, Finisher},
    join::Joiner,
};
use crate::{
    record::cni::TracedCall,
    session::{AddressEvent, SocketError},
};

pub mod config;
pub mod export;
pub mod join;
pub mod spans;

/// How long the end of a recording waits for the last spans to be sent.
pub const FINISH_DEADLINE: Duration = Duration::from_secs(5);

/// The node's name: the `DaemonSet`'s `K8S_NODE_NAME` (from `spec.nodeName`), else the host name.
#[must_use]
pub fn node_name() -> String {
    std::env::var("K8S_NODE_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(crate::node::hostname)
}

/// Spans of what the recording sees, on their way to a collector.
pub struct Otlp {
    joiner: Joiner,
    exporter: Exporter,
}

impl Otlp {
    /// Starts the exporter (on the current tokio runtime) with the resource of this node.
    /// Dropping the result closes the queue; the [`Finisher`] waits for the last spans.
    pub fn start(config: &OtlpConfig) -> Result<(Self, Finisher), export::SetupError> {
        let node = node_name();
        let resource = [
            ("service.version", env!("CARGO_PKG_VERSION").to_owned()),
            ("host.name", crate::node::hostname()),
            ("host.arch", host_arch(std::env::consts::ARCH).to_owned()),
            ("k8s.node.name", node.clone()),
        ];
        let (exporter, finisher) = Exporter::start(config, &resource)?;
        let otlp = Self {
            joiner: Joiner::seeded(Some(node)),
            exporter,
        };
        Ok((otlp, finisher))
    }

    pub fn call(&mut self, traced: &TracedCall) {
        for span in self.joiner.call(traced, Utc::now()) {
            self.exporter.offer(span);
        }
    }

    pub fn address(&mut self, event: &AddressEvent) {
        for span in self.joiner.address(event.clone(), Utc::now()) {
            self.exporter.offer(span);
        }
    }

    pub fn socket_error(&mut self, error: &SocketError) {
        self.joiner.socket_error(error);
    }

    pub fn sweep(&mut self, now: DateTime<Utc>) {
        for span in self.joiner.sweep(now) {
            self.exporter.offer(span);
        }
    }

    /// The recording ended: what waited for a call goes as it is.
    pub fn close(&mut self) {
        for span in self.joiner.close() {
            self.exporter.offer(span);
        }
    }

    #[must_use]
    pub fn stats(&self) -> &ExportStats {
        self.exporter.stats()
    }
}

/// The end report's line: what reached the collector, what did not and why.
#[must_use]
pub fn report(stats: &ExportStats, url: &hyper::Uri) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let (exported, dropped) = (stats.exported.load(Relaxed), stats.dropped.load(Relaxed));
    let why = stats
        .last_error()
        .filter(|_| dropped > 0)
        .map(|why| format!(" (last: {})", crate::text::terminal(&why)))
        .unwrap_or_default();
    format!("Spans: {exported} sent to {url}, {dropped} dropped{why}.")
}

/// `host.arch` as the semantic conventions spell it.
fn host_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn architectures_are_named_as_the_conventions_say() {
        assert_eq!(super::host_arch("x86_64"), "amd64");
        assert_eq!(super::host_arch("aarch64"), "arm64");
        assert_eq!(super::host_arch("riscv64"), "riscv64");
    }
}
