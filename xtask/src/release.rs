//! What ships: the container image (`cargo xtask image`) and the release files (`cargo xtask
//! dist`): a tarball per architecture, the image as an OCI archive, and their checksums.
//! Packed deterministically (sorted names, fixed times, owners and modes, gzip without a
//! time stamp), so the same binaries give the same bytes.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{Arch, run, static_binary, workspace_root};

/// Where `cargo xtask image` leaves the image; deploy/Containerfile copies the same binary.
const IMAGE_ARCHIVE: &str = "target/dad-trace-image.tar";
/// The manifests' `dad-trace:latest`, as the runtime normalizes it (what `ctr images import`
/// must name it for the kubelet to find it without pulling).
const IMAGE_REF: &str = "docker.io/library/dad-trace:latest";
/// Where `cargo xtask dist` leaves the release files.
const DIST_DIR: &str = "target/dist";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// What every tarball carries besides the binary and `share/`, into `share/doc/dad-trace/`.
const DOCS: [&str; 3] = ["README.md", "LICENSE-MIT", "LICENSE-APACHE"];

/// One image for both architectures: the runtime picks its platform's manifest.
pub(crate) fn image() -> anyhow::Result<PathBuf> {
    let archive = workspace_root().join(IMAGE_ARCHIVE);
    oci_archive(&archive, IMAGE_REF)?;
    eprintln!("image {IMAGE_REF} (linux/amd64, linux/arm64): {}", archive.display());
    Ok(archive)
}

/// The image of both architectures, named `reference`, as an OCI archive at `archive`.
fn oci_archive(archive: &Path, reference: &str) -> anyhow::Result<()> {
    let root = workspace_root().join("target/image-rootfs");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    // Completions and manual pages are the same for both: written by the binary that runs here.
    let share = shell_files(&static_binary(Arch::Amd64)?)?;
    let mut platforms = Vec::new();
    for arch in Arch::ALL {
        let binary = static_binary(arch)?;
        let rootfs = root.join(arch.debian());
        // Session files of the ad-hoc Job are written to a hostPath mounted here.
        std::fs::create_dir_all(rootfs.join("var/lib/dad-trace"))?;
        std::fs::create_dir_all(rootfs.join("tmp"))?;
        std::fs::copy(&binary, rootfs.join("dad-trace")).with_context(|| format!("copy {}", binary.display()))?;
        copy_tree(&share, &rootfs.join("usr/share"))?;
        eprintln!("{} binary: {}", arch.debian(), binary.display());
        platforms.push(format!("{}={}", arch.debian(), rootfs.display()));
    }
    run(Command::new("sh")
        .arg(workspace_root().join("deploy/oci-archive.sh"))
        .arg(archive)
        .args([reference, r#"["/dad-trace"]"#, r#"["serve"]"#])
        .args(&platforms))?;
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

/// The release files in target/dist: `dad-trace-VERSION-ARCH-linux.tar.gz` per architecture,
/// `dad-trace-VERSION-oci.tar` (the image, named `dad-trace:VERSION`) and `SHA256SUMS`.
pub(crate) fn dist() -> anyhow::Result<PathBuf> {
    let dist = workspace_root().join(DIST_DIR);
    if dist.exists() {
        std::fs::remove_dir_all(&dist)?;
    }
    let stage = dist.join("stage");
    let share = shell_files(&static_binary(Arch::Amd64)?)?;
    let mut files = Vec::new();
    for arch in Arch::ALL {
        let name = format!("dad-trace-{VERSION}-{}-linux", arch.uname());
        let top = stage.join(&name);
        std::fs::create_dir_all(top.join("bin"))?;
        std::fs::copy(static_binary(arch)?, top.join("bin/dad-trace"))?;
        copy_tree(&share, &top.join("share"))?;
        let doc = top.join("share/doc/dad-trace");
        std::fs::create_dir_all(&doc)?;
        for file in DOCS {
            std::fs::copy(workspace_root().join(file), doc.join(file)).with_context(|| format!("copy {file}"))?;
        }
        let tarball = format!("{name}.tar.gz");
        pack(&stage, &name, &dist.join(&tarball))?;
        files.push(tarball);
    }
    std::fs::remove_dir_all(&stage)?;
    let oci = format!("dad-trace-{VERSION}-oci.tar");
    oci_archive(&dist.join(&oci), &format!("docker.io/library/dad-trace:{VERSION}"))?;
    files.push(oci);
    let sums = Command::new("sha256sum")
        .args(&files)
        .current_dir(&dist)
        .output()
        .context("sha256sum")?;
    if !sums.status.success() {
        bail!("sha256sum: {}", String::from_utf8_lossy(&sums.stderr));
    }
    std::fs::write(dist.join("SHA256SUMS"), &sums.stdout)?;
    eprintln!("{}", String::from_utf8_lossy(&sums.stdout).trim_end());
    eprintln!("release files: {}", dist.display());
    Ok(dist)
}

/// `dir` (under `parent`) as a gzipped tarball that depends on the files' contents only.
fn pack(parent: &Path, dir: &str, tarball: &Path) -> anyhow::Result<()> {
    let epoch = source_date_epoch();
    let script = format!(
        "tar --sort=name --mtime=@{epoch} --owner=0 --group=0 --numeric-owner \
         --mode=u+rw,go+r,go-w --format=gnu -C \"$1\" -cf - \"$2\" | gzip -9 -n > \"$3\""
    );
    run(Command::new("bash")
        .args(["-euc", &format!("set -o pipefail; {script}"), "pack"])
        .arg(parent)
        .arg(dir)
        .arg(tarball))
}

/// The files' time in the tarballs: `SOURCE_DATE_EPOCH` when set, else the commit's time
/// (the same for every build of one commit), else 0.
fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|epoch| epoch.parse().ok())
        .or_else(|| {
            let output = Command::new("git")
                .args(["log", "-1", "--format=%ct"])
                .current_dir(workspace_root())
                .output()
                .ok()?;
            String::from_utf8_lossy(&output.stdout).trim().parse().ok()
        })
        .unwrap_or(0)
}

/// Shell completions and manual pages, written by the binary itself into target/share (the
/// layout of /usr/share, which deploy/Containerfile copies).
fn shell_files(binary: &Path) -> anyhow::Result<PathBuf> {
    let share = workspace_root().join("target/share");
    if share.exists() {
        std::fs::remove_dir_all(&share)?;
    }
    let completions = [
        ("bash", "bash-completion/completions/dad-trace"),
        ("zsh", "zsh/vendor-completions/_dad-trace"),
        ("fish", "fish/vendor_completions.d/dad-trace.fish"),
    ];
    for (shell, path) in completions {
        let output = Command::new(binary).args(["completions", shell]).output()?;
        if !output.status.success() {
            bail!(
                "{} completions {shell}: {}",
                binary.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let path = share.join(path);
        std::fs::create_dir_all(path.parent().context("completion directory")?)?;
        std::fs::write(&path, output.stdout)?;
    }
    run(Command::new(binary).arg("man").arg("-o").arg(share.join("man/man1")))?;
    Ok(share)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
