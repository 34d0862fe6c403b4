//! Where the node's own files are: under `/`, or under the directory the node's root is
//! mounted at when dad-trace runs in a debug pod (`kubectl debug node` mounts it at /host),
//! as `node_exporter`'s `--path.rootfs`. Set once, from `--host-root`, before anything reads
//! the node. Processes are read from our own /proc: that needs the host PID namespace.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::{
    path::{Component, Path, PathBuf},
    sync::OnceLock,
};

/// The environment variable that stands for `--host-root`.
pub const HOST_ROOT_ENV: &str = "DAD_TRACE_HOST_ROOT";

static ROOT: OnceLock<PathBuf> = OnceLock::new();

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostRootError {
    #[error("--host-root {0}: not an absolute path (the node's root is mounted at, e.g., /host)")]
    NotAbsolute(String),
    #[error(
        "--host-root {0}: no proc/sys/net/ipv6 under it: is the node's root mounted there, with its \
         submounts (kubectl debug node mounts it at /host)?"
    )]
    NotARoot(String),
    #[error("--host-root is already {0}")]
    AlreadySet(String),
}

/// Takes `root` as the node's root for the rest of the run, once it looks like one.
pub fn set_root(root: &Path) -> Result<(), HostRootError> {
    let shown = crate::text::terminal(&root.display().to_string()).into_owned();
    if !root.is_absolute() {
        return Err(HostRootError::NotAbsolute(shown));
    }
    if !root.join("proc/sys/net/ipv6").is_dir() {
        return Err(HostRootError::NotARoot(shown));
    }
    ROOT.set(root.to_path_buf())
        .map_err(|_| HostRootError::AlreadySet(shown))
}

/// The node's `path` (absolute, as the node names it) where this process can reach it.
#[must_use]
pub fn path(path: impl AsRef<Path>) -> PathBuf {
    match ROOT.get() {
        Some(root) => under(root, path.as_ref()),
        None => path.as_ref().to_path_buf(),
    }
}

/// `path` inside `root`: only its plain names are kept, so no `..` leaves the root.
#[must_use]
pub fn under(root: &Path, path: &Path) -> PathBuf {
    let mut inside = root.to_path_buf();
    for component in path.components() {
        if let Component::Normal(name) = component {
            inside.push(name);
        }
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_land_inside_the_root() {
        let root = Path::new("/host");
        assert_eq!(under(root, Path::new("/run/netns")), Path::new("/host/run/netns"));
        assert_eq!(under(root, Path::new("/")), Path::new("/host"));
        assert_eq!(under(root, Path::new("relative/x")), Path::new("/host/relative/x"));
        assert_eq!(
            under(root, Path::new("/a/../../etc/./passwd")),
            Path::new("/host/a/etc/passwd")
        );
    }

    #[test]
    fn a_root_must_be_absolute_and_look_like_one() {
        assert_eq!(
            set_root(Path::new("host")),
            Err(HostRootError::NotAbsolute("host".into()))
        );
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(matches!(set_root(empty.path()), Err(HostRootError::NotARoot(_))));
        assert_eq!(ROOT.get(), None, "a refused root is not taken");
        assert_eq!(path("/run/netns"), Path::new("/run/netns"));
    }
}
