//! Where finished addresses and CNI calls go: the live view on the terminal ([`live`], drawn
//! by [`display`]), Prometheus metrics ([`metrics`], served by [`serve`]) and the session's
//! events, all behind one [`sinks::Sinks`] that the recorder feeds through
//! [`crate::record::recorder::Output`]. [`filter`] decides what is shown, counted and kept.
//!
//! Pure, not mutation-tested: module declarations and option types, no logic.
pub mod display;
pub mod filter;
pub mod live;
pub mod metrics;
pub mod otlp;
mod pod_wait;
pub mod serve;
pub mod sinks;

/// What `record` shows on standard output while it runs, besides the lines.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveView {
    pub format: live::LiveFormat,
    /// Histograms (or a JSON summary) every this long.
    pub interval: Option<std::time::Duration>,
    /// Stop after this many intervals (bcc's count).
    pub intervals: Option<usize>,
    /// The histograms' unit (`-m`); chosen per histogram when `None`.
    pub unit: Option<crate::hist::Unit>,
}

/// Where and how `serve` exposes metrics.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    pub listen: std::net::SocketAddr,
    pub per_pod_labels: bool,
}
