//! `dad-trace tune`: apply the doctor's fix to the running node (explicitly) and revert it
//! exactly from the values saved before anything changed.
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::sysctl;

/// The settings `tune` applies, and doctor recommends.
pub const RECOMMENDED: &[(&str, &str)] = &[
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.core.devconf_inherit_init_net", "1"),
];

/// What `tune --apply` changed, so `tune --revert` can put it back exactly.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TuneState {
    pub previous: Vec<(String, String)>,
}

pub fn apply(state_file: &Path) -> anyhow::Result<TuneState> {
    anyhow::ensure!(
        !state_file.exists(),
        "{} exists: settings were already applied; run `dad-trace tune --revert` first",
        state_file.display()
    );
    let previous = RECOMMENDED
        .iter()
        .map(|(name, _)| Ok(((*name).to_string(), sysctl::read(name)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let state = TuneState { previous };
    if let Some(dir) = state_file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    // Saved before anything changes: a failure half-way can still be reverted.
    std::fs::write(state_file, serde_json::to_vec_pretty(&state)?)
        .with_context(|| format!("write {}", state_file.display()))?;
    for (name, value) in RECOMMENDED {
        sysctl::write(name, value)?;
    }
    Ok(state)
}

pub fn revert(state_file: &Path) -> anyhow::Result<TuneState> {
    let bytes = std::fs::read(state_file).with_context(|| {
        format!(
            "read {} (nothing was applied with `tune --apply`?)",
            state_file.display()
        )
    })?;
    let state: TuneState = serde_json::from_slice(&bytes).with_context(|| format!("parse {}", state_file.display()))?;
    for (name, value) in &state.previous {
        sysctl::write(name, value)?;
    }
    std::fs::remove_file(state_file).with_context(|| format!("remove {}", state_file.display()))?;
    Ok(state)
}
