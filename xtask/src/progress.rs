//! Progress of guest boots on the terminal: per guest, the kernel, the time spent and the
//! tests passed so far on one line redrawn in place, with the consoles printed above. Off a
//! terminal (CI logs, pipes) only the console lines.
use std::{io::IsTerminal as _, sync::OnceLock, time::Duration};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// One set of lines for every guest booting at once.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

pub struct Progress(Option<ProgressBar>);

impl Progress {
    #[must_use]
    pub fn spinner(prefix: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = bars().add(ProgressBar::new_spinner().with_prefix(prefix.to_string()));
        if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} [{elapsed_precise}] {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(250));
        Self(Some(bar))
    }

    /// A line of output, above the progress line when there is one.
    pub fn line(&self, text: &str) {
        match &self.0 {
            Some(_) => {
                let _ = bars().println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    pub fn message(&self, text: String) {
        if let Some(bar) = &self.0 {
            bar.set_message(text);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
