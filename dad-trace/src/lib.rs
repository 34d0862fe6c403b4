//! dad-trace: per-pod IPv6 Duplicate Address Detection latency, from kernel probes.
//!
//! The flow, with dependencies pointing one way (each layer uses only those before it):
//!
//! - [`kernel`]: what the running kernel offers, the phase → hook table, BTF offsets,
//!   loading programs, decoding ring buffer records.
//! - [`node`]: network namespaces, sysctls, the doctor, synthetic pods.
//! - [`record`]: the pipeline: readings → phase tracker → enrichment (one owner) → an
//!   output, with CNI calls and pod start timelines beside it.
//! - [`output`]: what finished addresses become: live lines, JSON lines, Prometheus metrics
//!   and their endpoint, the session's events.
//! - [`tracer`]: one recording from attach to the saved session, in explicit stages.
//! - [`session`]: the file, the only meeting point of recording and processing.
//! - [`report`]: reads sessions only: summaries, histograms, comparisons, HTML, the gate.
//! - [`scenario`]: the CNI pod-start story in phases, built on all of the above.
//! - [`cli`]: one file per subcommand.
//!
//! [`hist`] (delay distributions), [`error`] (refusals and exit codes), [`files`] (hostile
//! input, atomic output) and [`text`] (names made safe to print) are leaves.
pub mod cli;
pub mod error;
pub mod files;
pub mod hist;
pub mod kernel;
pub mod node;
pub mod output;
pub mod record;
pub mod report;
pub mod scenario;
pub mod session;
pub mod text;
pub mod tracer;
