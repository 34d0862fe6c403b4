//! Reading and changing sysctls, with a guard that restores what it changed.
use std::path::PathBuf;

use anyhow::Context as _;

/// `/proc/sys` path of a dotted sysctl name (`net.ipv6.conf.all.accept_dad`).
#[must_use]
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

pub fn read(name: &str) -> anyhow::Result<String> {
    let value = std::fs::read_to_string(path(name)).with_context(|| format!("read sysctl {name}"))?;
    Ok(value.trim().to_string())
}

pub fn write(name: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(path(name), value).with_context(|| format!("set sysctl {name}={value}"))
}

/// Sets sysctls and puts the previous values back when dropped, also on error or panic.
#[derive(Default)]
pub struct SysctlGuard {
    saved: Vec<(String, String)>,
}

impl SysctlGuard {
    /// Sets `name` to `value`, remembering the old value first.
    pub fn set(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        let old = read(name)?;
        // Remember before writing: a failed write must not lose the value to restore.
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
        first_error.map_or(Ok(()), Err)
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
    fn dotted_names_map_to_proc_sys() {
        assert_eq!(
            super::path("net.ipv6.conf.all.accept_dad").to_str(),
            Some("/proc/sys/net/ipv6/conf/all/accept_dad")
        );
    }
}
