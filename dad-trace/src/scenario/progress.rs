//! Progress of a phase on the terminal: pods set up out of the phase's count and the time
//! spent, redrawn in place. Nothing when standard error is not a terminal (CI logs, pipes):
//! the phase's lines say the same at its end.
use std::{io::IsTerminal as _, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

pub struct PodProgress(Option<ProgressBar>);

impl PodProgress {
    #[must_use]
    pub fn new(phase: &str, pods: usize) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::new(pods as u64).with_prefix(phase.to_string());
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>12} [{elapsed_precise}] {bar:30} {pos}/{len} pods {msg}")
        {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Self(Some(bar))
    }

    pub fn pod_done(&self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }
}

impl Drop for PodProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
