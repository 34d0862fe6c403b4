//! The guest's initramfs: busybox, the static test binary and dad-trace binary of the guest's
//! architecture, Debian's CNI plugins and iproute2's `ip` with their shared libraries, and the
//! kernel's veth and bridge modules. arm64 pieces come from arm64 packages unpacked into the
//! cache.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{
    Arch,
    apt::{self, Apt, Deb},
    run,
};

const CNI_PLUGINS: &[&str] = &["ptp", "bridge", "host-local", "loopback"];

/// iproute2 and the packages of the libraries its `ip` links (Debian bookworm): the fault
/// tests' namespaces, veths and bridges are made with it, as on the host; busybox's `ip`
/// knows neither namespaces nor veths.
const IPROUTE2_PACKAGES: &[&str] = &[
    "iproute2", "libbpf1", "libelf1", "libmnl0", "libbsd0", "libcap2", "zlib1g", "libmd0",
];

/// Where iproute2's `ip` goes in the guest: first on the init's `PATH`, before busybox's.
const GUEST_IP: &str = "/usr/local/sbin/ip";

/// The kernel modules the guest loads, in dependency order (all `=m` in Debian's cloud
/// kernels): veth for every test, the bridge (and the STP and LLC it needs) for the
/// duplicate-address tests.
const MODULES: &[&str] = &["veth", "llc", "stp", "bridge"];

/// What goes into one guest.
pub struct Contents<'a> {
    pub arch: Arch,
    pub kernel_root: &'a Path,
    pub tests: &'a Path,
    pub dad_trace: &'a Path,
    /// Synthetic pods per scenario in this guest.
    pub pods: usize,
}

/// Where an architecture's programs and libraries come from.
struct Userland {
    busybox: PathBuf,
    /// Root of the CNI plugins' file tree (`usr/lib/cni` below it).
    cni_root: PathBuf,
    /// iproute2's `ip`.
    ip: PathBuf,
    /// Where shared libraries are looked up, and where they go in the guest.
    library_dirs: Vec<PathBuf>,
    guest_library_dir: &'static str,
}

impl Userland {
    fn of(arch: Arch) -> anyhow::Result<Self> {
        Ok(match arch {
            Arch::Amd64 => Self {
                busybox: "/bin/busybox".into(),
                cni_root: "/".into(),
                ip: "/bin/ip".into(),
                library_dirs: vec!["/lib/x86_64-linux-gnu".into(), "/usr/lib/x86_64-linux-gnu".into()],
                guest_library_dir: "/lib/x86_64-linux-gnu",
            },
            Arch::Arm64 => {
                let apt = Apt::local()?;
                // The same versions as the machine's own, for the same behaviour.
                let unpack = |name: &str| -> anyhow::Result<PathBuf> {
                    let version = apt::installed_version(name)?;
                    apt.unpacked(&Deb {
                        name,
                        arch: "arm64",
                        version: Some(&version),
                    })
                };
                // Debian's cross C library, the same files as libc6:arm64; then iproute2's
                // libraries, each from its arm64 package.
                let mut library_dirs = vec![PathBuf::from("/usr/aarch64-linux-gnu/lib")];
                let mut ip = None;
                for package in IPROUTE2_PACKAGES {
                    let root = if *package == "iproute2" {
                        let root = unpack(package)?;
                        ip = Some(root.join("bin/ip"));
                        root
                    } else {
                        // The newest: a library's version may carry a binary rebuild suffix
                        // of the machine's architecture only (libcap2 `+b2` on amd64).
                        apt.unpacked(&Deb {
                            name: package,
                            arch: "arm64",
                            version: None,
                        })?
                    };
                    library_dirs.push(root.join("lib/aarch64-linux-gnu"));
                    library_dirs.push(root.join("usr/lib/aarch64-linux-gnu"));
                }
                Self {
                    busybox: unpack("busybox-static")?.join("bin/busybox"),
                    cni_root: unpack("containernetworking-plugins")?,
                    ip: ip.context("iproute2 unpacked")?,
                    library_dirs,
                    guest_library_dir: "/lib/aarch64-linux-gnu",
                }
            }
        })
    }

    /// The shared libraries and the program interpreter an ELF file needs, recursively:
    /// (file here, path in the guest).
    fn libraries(&self, binary: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
        let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut pending = vec![binary.to_path_buf()];
        while let Some(file) = pending.pop() {
            let (interpreter, needed) = dynamic_section(&file)?;
            if let Some(interpreter) = interpreter {
                let name = interpreter.file_name().context("interpreter name")?;
                let here = self.find(&name.to_string_lossy())?;
                if !found.iter().any(|(_, guest)| *guest == interpreter) {
                    found.push((here, interpreter));
                }
            }
            for name in needed {
                let guest = Path::new(self.guest_library_dir).join(&name);
                if found.iter().any(|(_, known)| *known == guest) {
                    continue;
                }
                let here = self.find(&name)?;
                pending.push(here.clone());
                found.push((here, guest));
            }
        }
        Ok(found)
    }

    fn find(&self, name: &str) -> anyhow::Result<PathBuf> {
        self.library_dirs
            .iter()
            .map(|dir| dir.join(name))
            .find(|path| path.exists())
            .with_context(|| format!("{name} not found in {:?}", self.library_dirs))
    }
}

/// The program interpreter and `NEEDED` entries of an ELF file (readelf reads any
/// architecture; ldd only the machine's own).
fn dynamic_section(binary: &Path) -> anyhow::Result<(Option<PathBuf>, Vec<String>)> {
    let output = Command::new("readelf")
        .args(["--wide", "--program-headers", "--dynamic"])
        .arg(binary)
        .output()
        .context("readelf")?;
    if !output.status.success() {
        bail!("readelf {} failed", binary.display());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let bracketed = |line: &str, label: &str| -> Option<String> {
        let rest = line.split(label).nth(1)?;
        Some(rest.split(']').next()?.trim().to_string())
    };
    let interpreter = text
        .lines()
        .find_map(|line| bracketed(line, "Requesting program interpreter:"))
        .map(PathBuf::from);
    let needed = text
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| bracketed(line, "Shared library: ["))
        .collect();
    Ok((interpreter, needed))
}

fn copy_into(root: &Path, source: &Path, target: &Path) -> anyhow::Result<()> {
    let destination = root.join(target.strip_prefix("/").unwrap_or(target));
    if let Some(parent) = destination.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(source, &destination).with_context(|| format!("copy {}", source.display()))?;
    Ok(())
}

pub fn find_file(dir: &Path, wanted: &dyn Fn(&str) -> bool) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, wanted) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| wanted(&n.to_string_lossy())) {
            return Some(path);
        }
    }
    None
}

/// The first line the guest's init prints: a guest that fails before it never ran a test.
pub const INIT_STARTED: &str = "== guest kernel";

/// The guest's init: mount, load the modules, run the tests, print the verdict, power off.
fn init_script(pods: usize) -> String {
    let modules = MODULES.iter().fold(String::new(), |mut lines, name| {
        let _ = writeln!(lines, "insmod /lib/modules/{name}.ko || echo \"insmod {name} failed\"");
        lines
    });
    format!(
        r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
# iproute2's ip before busybox's, for the tests' commands (this shell runs its own applets).
export PATH={guest_ip_dir}:/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns
{modules}ip link set lo up
echo "{INIT_STARTED} $(uname -r) $(uname -m), kprobe PMU: $(ls /sys/bus/event_source/devices/ | tr '\n' ' ')"
cd /tmp
DAD_TRACE_VM=1 DAD_TRACE_PODS={pods} DAD_TRACE_BIN=/bin/dad-trace /bin/vm-tests --test-threads=1 --nocapture
rc=$?
if [ "$rc" -eq 0 ]; then echo "DAD-TRACE-VM-RESULT: PASS"; else echo "DAD-TRACE-VM-RESULT: FAIL (tests exit $rc)"; fi
poweroff -f
"#,
        guest_ip_dir = GUEST_IP.rsplit_once('/').map_or("/", |(dir, _)| dir),
    )
}

/// Assembles the initramfs at `out`.
pub fn build(contents: &Contents, out: &Path) -> anyhow::Result<()> {
    let userland = Userland::of(contents.arch)?;
    let staging = out.with_extension("d");
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir_all(&staging)?;
    copy_into(&staging, &userland.busybox, Path::new("/bin/busybox"))?;
    // Both are static: no libraries to bring.
    copy_into(&staging, contents.tests, Path::new("/bin/vm-tests"))?;
    copy_into(&staging, contents.dad_trace, Path::new("/bin/dad-trace"))?;
    // Debian's CNI plugins, as the pod-start scenario calls them.
    for plugin in CNI_PLUGINS {
        let guest = Path::new("/usr/lib/cni").join(plugin);
        let binary = userland.cni_root.join(guest.strip_prefix("/")?);
        copy_into(&staging, &binary, &guest)?;
        for (here, guest) in userland.libraries(&binary)? {
            copy_into(&staging, &here, &guest)?;
        }
    }
    copy_into(&staging, &userland.ip, Path::new(GUEST_IP))?;
    for (here, guest) in userland.libraries(&userland.ip)? {
        copy_into(&staging, &here, &guest)?;
    }
    for name in MODULES {
        let file = format!("{name}.ko");
        let found = find_file(contents.kernel_root, &|candidate| {
            candidate == file || candidate.strip_prefix(file.as_str()).is_some_and(|ext| ext == ".xz")
        })
        .with_context(|| format!("{file} not in the kernel package"))?;
        let module = staging.join("lib/modules").join(&file);
        fs::create_dir_all(module.parent().context("module path")?)?;
        if found.extension().is_some_and(|e| e == "xz") {
            let plain = Command::new("xz").arg("-dc").arg(&found).output().context("xz")?;
            fs::write(&module, plain.stdout)?;
        } else {
            fs::copy(&found, &module)?;
        }
    }
    let init = staging.join("init");
    fs::write(&init, init_script(contents.pods))?;
    run(Command::new("chmod").arg("755").arg(&init))?;
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("find . | cpio --quiet -o -H newc > '{}'", out.display()))
        .current_dir(&staging))?;
    fs::remove_dir_all(&staging)?;
    Ok(())
}
