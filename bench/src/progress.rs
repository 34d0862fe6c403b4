//! A stage of a long run (`cargo xtask bench`) on the terminal: its name and a ticking
//! elapsed time, cleared when the stage ends. On a pipe or in CI only the stage's header line.
use std::{io::IsTerminal as _, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Stage(Option<ProgressBar>);

/// Prints the stage's header, and ticks its elapsed time on a terminal until dropped.
#[must_use]
pub fn stage(header: &str) -> Stage {
    eprintln!("== {header}");
    if !std::io::stderr().is_terminal() {
        return Stage(None);
    }
    let bar = ProgressBar::new_spinner().with_message(header.to_string());
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(250));
    Stage(Some(bar))
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
