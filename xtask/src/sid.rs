//! Debian sid's containerd (2.x), unpacked into the cache for the runtime test that puts its
//! OTLP spans next to dad-trace's (tests/src/containerd/v2.rs finds it through [`LINK`]).
//! Never installed: the machine keeps Debian 12's 1.6, which the other runtime tests run.
//! sid has a sources list and lists of its own, so that apt.rs's newest-version picks
//! (kernels, arm64 busybox) never start taking sid's.
use std::{fs, os::unix::fs::symlink, path::Path};

use anyhow::Context as _;

use crate::{
    apt::{self, Apt, Deb},
    is_root,
};

/// The version whose spans the test was written against (see the test), and its sha256 as
/// deb.debian.org's pool serves it.
const VERSION: &str = "2.1.9+ds1-5";
const SHA256: &str = "2dda86ce7033fd612fc50e136679d8174ccad680eb29cd4611e0d2a1b84cf591";
const SOURCES: &str =
    "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main\n";
/// In the cache: a link to the unpacked package (its binaries in `usr/bin`).
const LINK: &str = "containerd-sid";

/// sid's containerd unpacked in the cache, [`VERSION`] or, once sid has dropped it, the one sid
/// has (said so). Nothing is fetched when it is there already. Root only, as the test: its
/// cache is /var/cache/dad-trace.
pub fn ensure_containerd() -> anyhow::Result<()> {
    let pinned = Deb {
        name: "containerd",
        arch: "amd64",
        version: Some(VERSION),
    };
    let root = if pinned.is_unpacked() {
        pinned.root()
    } else if !is_root() {
        eprintln!("setup: sid's containerd {VERSION} not fetched (root only; the runtime test that runs it skips)");
        return Ok(());
    } else {
        let apt = Apt::with_sources("apt-sid", SOURCES)?;
        if apt.knows(pinned.name, VERSION) {
            apt.unpacked_checked(&pinned, Some(SHA256))?
        } else {
            let version = apt.candidate(pinned.name)?;
            eprintln!(
                "setup: sid no longer has containerd {VERSION}: using sid's {version} instead (the runtime \
                 test's expectations were checked against {VERSION})"
            );
            apt.unpacked(&Deb {
                version: Some(&version),
                ..pinned
            })?
        }
    };
    point_link(&root)?;
    eprintln!("setup: sid's containerd ready in {}", root.display());
    Ok(())
}

/// Points [`LINK`] at `root`, replacing it in one rename.
fn point_link(root: &Path) -> anyhow::Result<()> {
    let link = apt::cache_dir().join(LINK);
    if fs::read_link(&link).is_ok_and(|target| target == root) {
        return Ok(());
    }
    let new = apt::cache_dir().join(format!("{LINK}.new"));
    let _ = fs::remove_file(&new);
    symlink(root, &new).with_context(|| format!("link {}", new.display()))?;
    fs::rename(&new, &link).with_context(|| format!("rename to {}", link.display()))?;
    Ok(())
}
