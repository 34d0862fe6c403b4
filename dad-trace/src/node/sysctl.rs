//! Reading and changing sysctls, with a guard that restores what it changed.
use std::path::PathBuf;

use anyhow::Context as _;

/// `/proc/sys` path of a dotted sysctl name (`net.ipv6.conf.all.accept_dad`). Only names of
/// that shape are accepted: never a path (`/tmp/x`, `..`), so no input can point a write
/// elsewhere than /proc/sys.
pub fn path(name: &str) -> anyhow::Result<PathBuf> {
    let well_formed = !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    anyhow::ensure!(
        well_formed,
        "{name:?} is not a sysctl name (dotted words, like net.core.somaxconn)"
    );
    Ok(root().join(name.replace('.', "/")))
}

/// Where this node's sysctls are (under `--host-root`).
#[must_use]
pub fn root() -> PathBuf {
    super::host::path("/proc/sys")
}

pub fn read(name: &str) -> anyhow::Result<String> {
    let value = std::fs::read_to_string(path(name)?).with_context(|| format!("read sysctl {name}"))?;
    Ok(value.trim().to_string())
}

pub fn write(name: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(path(name)?, value).with_context(|| format!("set sysctl {name}={value}"))
}

/// Where guards also note the values to restore, when set: a run killed before its guards
/// restored anything (SIGKILL, a timeout) leaves the file for the next run to restore from
/// (`cargo xtask test` does, at its start).
pub const JOURNAL_ENV: &str = "DAD_TRACE_SYSCTL_JOURNAL";

/// Sets sysctls and puts the previous values back when dropped, also on error or panic.
pub struct SysctlGuard {
    saved: Vec<(String, String)>,
    /// Names this guard added to the journal (a name already there belongs to an outer guard).
    journaled: Vec<String>,
    journal: Option<PathBuf>,
}

impl Default for SysctlGuard {
    /// A guard that journals where [`JOURNAL_ENV`] says.
    fn default() -> Self {
        Self {
            saved: Vec::new(),
            journaled: Vec::new(),
            journal: std::env::var_os(JOURNAL_ENV).map(PathBuf::from),
        }
    }
}

impl SysctlGuard {
    /// Sets `name` to `value`, remembering the old value first.
    pub fn set(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        let old = read(name)?;
        // Remember before writing: a failed write must not lose the value to restore.
        if let Some(journal) = &self.journal
            && journal::remember(journal, name, &old)?
        {
            self.journaled.push(name.to_string());
        }
        self.saved.push((name.to_string(), old));
        write(name, value)
    }

    /// Restores everything now, reporting the first failure.
    pub fn restore(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some((name, value)) = self.saved.pop() {
            if let Err(e) = write(&name, &value) {
                first_error.get_or_insert(e);
            }
        }
        if first_error.is_none()
            && let Some(journal) = &self.journal
            && let Err(e) = journal::forget(journal, &std::mem::take(&mut self.journaled))
        {
            first_error = Some(e);
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The journal of values to restore: a JSON object of sysctl name to original value.
mod journal {
    use std::{collections::BTreeMap, path::Path};

    use anyhow::Context as _;

    pub fn load(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    fn store(path: &Path, entries: &BTreeMap<String, String>) -> anyhow::Result<()> {
        if entries.is_empty() {
            return std::fs::remove_file(path)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .with_context(|| format!("remove {}", path.display()));
        }
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, serde_json::to_vec_pretty(entries)?)
            .with_context(|| format!("write {}", temp.display()))?;
        std::fs::rename(&temp, path).with_context(|| format!("rename to {}", path.display()))
    }

    /// Notes `name`'s original value unless already noted; whether this call noted it.
    pub fn remember(path: &Path, name: &str, value: &str) -> anyhow::Result<bool> {
        let mut entries = load(path)?;
        if entries.contains_key(name) {
            return Ok(false);
        }
        entries.insert(name.to_string(), value.to_string());
        store(path, &entries)?;
        Ok(true)
    }

    pub fn forget(path: &Path, names: &[String]) -> anyhow::Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let mut entries = load(path)?;
        for name in names {
            entries.remove(name);
        }
        store(path, &entries)
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!("dad-trace: could not restore sysctls: {e:#}");
        }
    }
}

/// The host-namespace settings that decide whether and how long DAD runs in new pods.
pub const DAD_SETTINGS: &[&str] = &[
    "net.core.devconf_inherit_init_net",
    "net.ipv6.conf.all.accept_dad",
    "net.ipv6.conf.default.accept_dad",
    "net.ipv6.conf.all.dad_transmits",
    "net.ipv6.conf.default.dad_transmits",
    "net.ipv6.conf.all.optimistic_dad",
    "net.ipv6.conf.default.optimistic_dad",
    "net.ipv6.conf.all.use_optimistic",
    "net.ipv6.conf.default.use_optimistic",
    "net.ipv6.conf.all.enhanced_dad",
    "net.ipv6.conf.default.enhanced_dad",
    "net.ipv6.conf.default.router_solicitation_delay",
    // Optimistic DAD is off wherever `all.forwarding` is on.
    "net.ipv6.conf.all.forwarding",
    "net.ipv6.neigh.default.retrans_time_ms",
];

/// Current values of [`DAD_SETTINGS`]; settings this kernel lacks are left out.
#[must_use]
pub fn snapshot() -> std::collections::BTreeMap<String, String> {
    DAD_SETTINGS
        .iter()
        .filter_map(|name| read(name).ok().map(|value| ((*name).to_string(), value)))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_journal_keeps_the_first_original_until_its_owner_forgets_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.json");
        assert!(super::journal::remember(&path, "net.a", "1").expect("noted"));
        // An inner guard changing the same sysctl does not own the original.
        assert!(!super::journal::remember(&path, "net.a", "0").expect("seen"));
        assert!(super::journal::remember(&path, "net.b", "7").expect("noted"));
        super::journal::forget(&path, &["net.b".into()]).expect("forget");
        let left = super::journal::load(&path).expect("load");
        assert_eq!(
            left.into_iter().collect::<Vec<_>>(),
            [("net.a".to_string(), "1".to_string())]
        );
        super::journal::forget(&path, &["net.a".into()]).expect("forget");
        assert!(!path.exists(), "an empty journal is removed");
    }

    #[test]
    fn dotted_names_map_to_proc_sys() {
        assert_eq!(
            super::path("net.ipv6.conf.all.accept_dad").expect("a name").to_str(),
            Some("/proc/sys/net/ipv6/conf/all/accept_dad")
        );
    }

    #[test]
    fn paths_are_not_names() {
        for bad in [
            "/tmp/x",
            "../../etc/passwd",
            "net..x",
            "",
            "net.ipv6/../../x",
            "net. x",
            ".net",
        ] {
            let error = super::path(bad).expect_err(bad);
            assert!(error.to_string().contains("is not a sysctl name"), "{error}");
        }
    }
}
