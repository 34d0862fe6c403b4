//! Reading a pod namespace's own DAD settings. `/proc/sys/net` shows the namespace of the
//! thread that reads it, so a short-lived thread joins the namespace, reads, and ends. The
//! recorder waits for it at most [`READ_WAIT`], and no read starts while [`MAX_RUNNING`]
//! earlier ones still run: a namespace being torn down must never hold the recording up.
use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

use nix::sched::{CloneFlags, setns};

use crate::session::{
    PodSettings,
    settings::{ConfValues, MAX_INTERFACES, integer},
};

/// Where the calling thread's namespace shows its IPv6 settings.
const CONF: &str = "/proc/sys/net/ipv6/conf";
/// `all.forwarding`: no address is optimistic where it is on.
const ALL_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";
/// How long the recorder waits for a namespace's settings (a read takes well under 1 ms).
pub const READ_WAIT: Duration = Duration::from_millis(250);
/// Reads still running past their wait: while this many are, no new one starts.
const MAX_RUNNING: usize = 2;

static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Why a namespace's settings were not read (the session's `settings.unread`).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("no path opens the namespace")]
    NoHandle,
    #[error("the namespace was gone before its settings were read")]
    Gone,
    #[error("earlier reads of settings are still stuck")]
    Busy,
    #[error("could not start a reader: {0}")]
    Spawn(std::io::Error),
    #[error("could not enter the namespace: {0}")]
    Enter(nix::errno::Errno),
    #[error("no answer within {} ms", READ_WAIT.as_millis())]
    TimedOut,
    #[error("the reader ended without an answer")]
    NoAnswer,
}

/// Counts a running reader until dropped, also when its thread panics.
struct Running;

impl Running {
    fn start() -> Option<Self> {
        let before = RUNNING.fetch_add(1, Ordering::SeqCst);
        if before >= MAX_RUNNING {
            RUNNING.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Self)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The settings of namespace `inode`, opened through `handle`, waiting at most `wait`; what
/// could not be read is recorded with its reason, never an error.
#[must_use]
pub fn read(handle: Option<&Path>, inode: u32, wait: Duration) -> PodSettings {
    try_read(handle, inode, wait).unwrap_or_else(|e| {
        log::debug!("DAD settings of netns {inode}: {e}");
        PodSettings::unread(e.to_string())
    })
}

fn try_read(handle: Option<&Path>, inode: u32, wait: Duration) -> Result<PodSettings, SettingsError> {
    let file = File::open(handle.ok_or(SettingsError::NoHandle)?).map_err(|_| SettingsError::Gone)?;
    // The path may open another namespace by now (a process gone and its pid reused).
    let opened = file.metadata().map_err(|_| SettingsError::Gone)?.ino();
    if opened != u64::from(inode) {
        return Err(SettingsError::Gone);
    }
    let running = Running::start().ok_or(SettingsError::Busy)?;
    let (answer, answered) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("netns-settings".into())
        .spawn(move || {
            let read = setns(&file, CloneFlags::CLONE_NEWNET)
                .map(|()| here())
                .map_err(SettingsError::Enter);
            // Done before answering; a panic drops it too.
            drop(running);
            // The recorder may have stopped waiting.
            let _ = answer.send(read);
        })
        .map_err(SettingsError::Spawn)?;
    answered.recv_timeout(wait).map_err(|e| match e {
        mpsc::RecvTimeoutError::Timeout => SettingsError::TimedOut,
        mpsc::RecvTimeoutError::Disconnected => SettingsError::NoAnswer,
    })?
}

fn file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn directory(name: &str) -> ConfValues {
    let dir = Path::new(CONF).join(name);
    ConfValues::read(|value| file(&dir.join(value)))
}

/// The settings of the calling thread's namespace: a namespace with many interfaces costs
/// the reads of [`MAX_INTERFACES`] of them.
#[must_use]
pub fn here() -> PodSettings {
    let mut names: Vec<String> = std::fs::read_dir(CONF)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !["all", "default", "lo"].contains(&name.as_str()))
        .collect();
    names.sort();
    let truncated = names.len() > MAX_INTERFACES;
    names.truncate(MAX_INTERFACES);
    let interfaces = names
        .into_iter()
        .map(|name| {
            let values = directory(&name);
            (name, values)
        })
        .collect();
    let mut settings = PodSettings {
        all: directory("all"),
        default: directory("default"),
        all_forwarding: file(Path::new(ALL_FORWARDING)).as_deref().and_then(integer),
        ..PodSettings::default()
    }
    .with_interfaces(interfaces);
    settings.interfaces_truncated |= truncated;
    settings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{
        netns::{NamedNetns, in_netns},
        synthetic::SyntheticPod,
    };

    #[test]
    fn a_namespace_that_cannot_be_opened_is_recorded_with_why() {
        let none = read(None, 1, READ_WAIT);
        assert_eq!(none.unread.as_deref(), Some("no path opens the namespace"));
        // This process's namespace is not namespace 1: the path opens another one now.
        let other = read(Some(Path::new("/proc/self/ns/net")), 1, READ_WAIT);
        assert_eq!(other.unread.as_deref(), Some(SettingsError::Gone.to_string().as_str()));
        let missing = read(Some(Path::new("/proc/self/ns/no-such")), 1, READ_WAIT);
        assert_eq!(missing.unread, other.unread);
    }

    /// A new namespace's values come from inside it: a `default.dad_transmits` set there
    /// (never on the host) is read back, and copied by the interface made after it.
    #[test]
    fn a_namespace_shows_its_own_settings() {
        if !test_support::needs_root(crate::kernel::check_privileges()) {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        // Removed on drop, also when an assertion fails: the kernel then deletes its links.
        let netns = NamedNetns::create(dir.path(), "dts-settings").expect("a namespace");
        let host_value = file(&Path::new(CONF).join("default/dad_transmits")).and_then(|text| integer(&text));
        let mine: i64 = if host_value == Some(7) { 8 } else { 7 };
        in_netns(netns.path(), move || {
            Ok(std::fs::write(
                Path::new(CONF).join("default/dad_transmits"),
                mine.to_string(),
            )?)
        })
        .expect("set inside the namespace");
        let pod = SyntheticPod::create_in(netns, "dtset", 0).expect("eth0 in the namespace");
        let inode = u32::try_from(std::fs::metadata(pod.netns.path()).expect("stat").ino()).expect("32 bits");
        let settings = read(Some(pod.netns.path()), inode, READ_WAIT);
        assert_eq!(settings.unread, None, "{settings:?}");
        assert_eq!(settings.default.dad_transmits, Some(mine), "{settings:?}");
        let names: Vec<&str> = settings.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0"], "loopback left out: {settings:?}");
        let eth0 = &settings.interfaces[0];
        assert_eq!(eth0.values.dad_transmits, Some(mine), "copied from default");
        assert!(eth0.values.accept_dad.is_some() && settings.all.accept_dad.is_some());
        assert!(eth0.dad.is_some() && settings.all_forwarding.is_some(), "{settings:?}");
        assert_eq!(
            file(&Path::new(CONF).join("default/dad_transmits")).and_then(|text| integer(&text)),
            host_value,
            "the host's own value is untouched"
        );
        assert_eq!(RUNNING.load(Ordering::SeqCst), 0, "the reader ended");
    }
}
