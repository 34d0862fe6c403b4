//! `dad-trace tune`: apply the doctor's fix to the running node (explicitly) and revert it
//! exactly from the values saved before anything changed.
use std::{io::Write as _, path::Path};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::sysctl;
use crate::files;

/// Where `tune --apply` keeps what it replaced, on the node.
pub const TUNE_STATE: &str = "/var/lib/dad-trace/tune-state.json";

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

/// The largest state file `--revert` reads: it holds three names and values.
const MAX_STATE_BYTES: u64 = 64 * 1024;

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
    // Saved (atomically, synced) before anything changes: a failure half-way can still be
    // reverted, and a crash never leaves half a state file.
    let bytes = serde_json::to_vec_pretty(&state)?;
    files::write_atomically(state_file, |file| file.write_all(&bytes))
        .with_context(|| format!("write {}", state_file.display()))?;
    for (name, value) in RECOMMENDED {
        sysctl::write(name, value)?;
    }
    Ok(state)
}

/// Puts back the values `apply` saved, all or nothing: the state file may only name the
/// settings `apply` manages, with values a sysctl can hold; anything else is refused before
/// a single write, and a write that fails half-way undoes the ones before it.
pub fn revert(state_file: &Path) -> anyhow::Result<TuneState> {
    let state = read_state(state_file)?;
    let current = state
        .previous
        .iter()
        .map(|(name, _)| Ok((name.clone(), sysctl::read(name)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (index, (name, value)) in state.previous.iter().enumerate() {
        if let Err(e) = sysctl::write(name, value) {
            for (name, value) in current[..index].iter().rev() {
                if let Err(undo) = sysctl::write(name, value) {
                    log::error!("could not undo {name}: {undo:#}");
                }
            }
            return Err(e.context("nothing was reverted (the settings written before were put back)"));
        }
    }
    std::fs::remove_file(state_file).with_context(|| format!("remove {}", state_file.display()))?;
    Ok(state)
}

/// Reads and checks a state file before it is trusted with root writes.
fn read_state(state_file: &Path) -> anyhow::Result<TuneState> {
    let context = || {
        format!(
            "read {} (nothing was applied with `tune --apply`?)",
            state_file.display()
        )
    };
    let (file, _) = files::open_regular(state_file, MAX_STATE_BYTES).with_context(context)?;
    let state: TuneState = serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| format!("parse {}", state_file.display()))?;
    validate(&state).with_context(|| {
        format!(
            "{} is not a state file `tune --apply` wrote; nothing was changed",
            state_file.display()
        )
    })?;
    Ok(state)
}

/// Only the settings `apply` manages, each once, with a plain integer value.
fn validate(state: &TuneState) -> anyhow::Result<()> {
    let mut seen = Vec::new();
    for (name, value) in &state.previous {
        anyhow::ensure!(
            RECOMMENDED.iter().any(|(managed, _)| managed == name),
            "{name:?} is not a setting tune manages ({})",
            RECOMMENDED.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
        );
        anyhow::ensure!(!seen.contains(&name), "{name} appears twice");
        anyhow::ensure!(
            !value.is_empty() && value.len() <= 20 && value.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit()),
            "{name}={value:?} is not an integer"
        );
        seen.push(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(entries: &[(&str, &str)]) -> TuneState {
        TuneState {
            previous: entries
                .iter()
                .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
                .collect(),
        }
    }

    #[test]
    fn only_managed_settings_with_integer_values_pass() {
        assert!(
            validate(&state(&[
                ("net.ipv6.conf.all.accept_dad", "1"),
                ("net.core.devconf_inherit_init_net", "0")
            ]))
            .is_ok()
        );
        for (entries, expected) in [
            (vec![("/tmp/x", "1")], "not a setting tune manages"),
            (vec![("kernel.core_pattern", "|/tmp/x")], "not a setting tune manages"),
            (
                vec![("net.ipv6.conf.all.accept_dad", "1\nnet.core.x=1")],
                "not an integer",
            ),
            (vec![("net.ipv6.conf.all.accept_dad", "")], "not an integer"),
            (
                vec![
                    ("net.ipv6.conf.all.accept_dad", "1"),
                    ("net.ipv6.conf.all.accept_dad", "0"),
                ],
                "appears twice",
            ),
        ] {
            let error = validate(&state(&entries)).expect_err("refused");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    /// A hostile state file (an absolute path as a name) is refused before anything is
    /// written: neither the path nor the valid entry before it.
    #[test]
    fn a_path_in_the_state_file_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("x");
        let state_file = dir.path().join("state.json");
        let hostile = format!(
            r#"{{"previous": [["net.ipv6.conf.all.accept_dad", "1"], ["{}", "owned"]]}}"#,
            target.display()
        );
        std::fs::write(&state_file, hostile).expect("write");
        let error = revert(&state_file).expect_err("refused");
        let message = format!("{error:#}");
        assert!(
            message.contains("not a setting tune manages") && message.contains("nothing was changed"),
            "{message}"
        );
        assert!(!target.exists(), "no file was created");
        assert!(state_file.exists(), "the state file is kept for inspection");
    }

    #[test]
    fn a_fifo_as_state_file_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("state.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let error = revert(&fifo).expect_err("refused");
        assert!(
            format!("{error:#}").contains("not a regular file (a FIFO)"),
            "{error:#}"
        );
    }
}
