//! Helpers for the kernel test tiers.
use std::{path::PathBuf, time::Duration};

use dad_trace::{
    record::{BackendChoice, RecordOptions},
    session::Session,
};

/// True when the test may touch the kernel; otherwise prints why it skips.
#[must_use]
pub fn kernel_tests_allowed(test: &str) -> bool {
    if let Err(e) = dad_trace::record::check_privileges() {
        println!("SKIP {test}: needs root ({e:#})");
        return false;
    }
    true
}

/// Records while `pods` synthetic pods come up, and returns the session.
pub fn record_synthetic(prefix: &str, pods: usize, backend: BackendChoice) -> anyhow::Result<Session> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(dad_trace::record::record(RecordOptions {
        backend,
        duration: Some(Duration::from_secs(90)),
        count: None,
        output: None::<PathBuf>,
        per_pod: true,
        synthetic_pods: Some(pods),
        synthetic_prefix: prefix.to_string(),
        ring_bytes: 256 * 1024,
        verbose: false,
        stale_after: Duration::from_secs(3),
        lines: true,
    }))
}
