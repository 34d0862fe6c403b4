//! dad-trace: per-pod IPv6 Duplicate Address Detection latency, from kernel probes.
//!
//! Recording (`record`, root) and processing (`report`, any user) are separate: recording
//! writes a [`session::Session`], everything else reads one.
pub mod cli;
pub mod compare;
pub mod cri;
pub mod doctor;
pub mod enrich;
pub mod events;
pub mod gate;
pub mod hist;
pub mod html;
pub mod loader;
pub mod metrics;
pub mod offsets;
pub mod probes;
pub mod record;
pub mod report;
pub mod scenario;
pub mod session;
pub mod synthetic;
pub mod sysctl;
pub mod track;
