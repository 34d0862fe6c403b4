//! `cargo xtask vm-test`: boots Debian kernels that have kprobes under qemu (TCG) with an
//! initramfs holding busybox, the VM test binary and the veth module, and reads the verdict
//! the guest prints on its serial console.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cargo, run, workspace_root};

/// A Debian kernel package family; the newest available version is used. Adding a kernel is
/// one line here.
pub struct Kernel {
    pub name: &'static str,
    prefix: &'static str,
    suffix: &'static str,
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64-unsigned",
    },
    Kernel {
        name: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-cloud-amd64-unsigned",
    },
];

const CNI_PLUGINS: &[&str] = &["ptp", "bridge", "host-local", "loopback"];
const RESULT_MARK: &str = "DAD-TRACE-VM-RESULT:";
const GUEST_TIMEOUT: Duration = Duration::from_mins(20);

fn cache_dir() -> PathBuf {
    std::env::var_os("DAD_TRACE_CACHE").map_or_else(|| PathBuf::from("/var/cache/dad-trace"), PathBuf::from)
}

/// The newest package of a family the apt lists offer.
fn newest_package(kernel: &Kernel) -> anyhow::Result<String> {
    let output = Command::new("apt-cache")
        .args(["pkgnames", kernel.prefix])
        .output()
        .context("apt-cache pkgnames")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|name| {
            let middle = name.strip_prefix(kernel.prefix)?.strip_suffix(kernel.suffix)?;
            Some((middle.parse::<u32>().ok()?, name.to_string()))
        })
        .max()
        .map(|(_, name)| name)
        .with_context(|| {
            format!(
                "no {}*{} package in the apt lists (apt-get update?)",
                kernel.prefix, kernel.suffix
            )
        })
}

/// Downloads (once) and unpacks a kernel package; returns the unpacked root.
fn fetch_kernel(kernel: &Kernel) -> anyhow::Result<PathBuf> {
    let package = newest_package(kernel)?;
    let dir = cache_dir().join("kernels");
    let root = dir.join("unpacked").join(&package);
    if root.join("boot").exists() {
        return Ok(root);
    }
    fs::create_dir_all(&dir)?;
    let has_deb = |dir: &Path| {
        fs::read_dir(dir).ok().and_then(|entries| {
            entries.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
            })
        })
    };
    if has_deb(&dir).is_none() {
        run(Command::new("apt-get").args(["download", &package]).current_dir(&dir))?;
    }
    let deb = has_deb(&dir).context("downloaded kernel package not found")?;
    fs::create_dir_all(&root)?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    Ok(root)
}

fn find_file(dir: &Path, wanted: &dyn Fn(&str) -> bool) -> Option<PathBuf> {
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

/// Builds the test binary for the guest; returns its path.
fn build_guest_tests() -> anyhow::Result<PathBuf> {
    let output = cargo()
        .args([
            "test",
            "--release",
            "--package",
            "integration-tests",
            "--test",
            "vm_kernel",
            "--no-run",
        ])
        .args(["--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("build VM tests")?;
    if !output.status.success() {
        bail!("building the VM tests failed");
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "vm_kernel")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo did not report the vm_kernel test executable")
}

/// Shared libraries a dynamically linked binary needs, per ldd.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let output = Command::new("ldd").arg(binary).output().context("ldd")?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .find(|word| word.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect())
}

fn copy_into(root: &Path, source: &Path, target: &Path) -> anyhow::Result<()> {
    let destination = root.join(target.strip_prefix("/").unwrap_or(target));
    if let Some(parent) = destination.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(source, &destination).with_context(|| format!("copy {}", source.display()))?;
    Ok(())
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns
insmod /lib/modules/veth.ko || echo "insmod veth failed"
ip link set lo up
echo "== guest kernel $(uname -r), kprobe PMU: $(ls /sys/bus/event_source/devices/ | tr '\n' ' ')"
cd /tmp
DAD_TRACE_VM=1 /bin/vm-tests --test-threads=1 --nocapture
rc=$?
if [ "$rc" -eq 0 ]; then echo "DAD-TRACE-VM-RESULT: PASS"; else echo "DAD-TRACE-VM-RESULT: FAIL (tests exit $rc)"; fi
poweroff -f
"#;

/// Assembles the initramfs for one kernel.
fn initramfs(kernel_root: &Path, tests: &Path, out: &Path) -> anyhow::Result<()> {
    let staging = out.with_extension("d");
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir_all(&staging)?;
    copy_into(&staging, Path::new("/bin/busybox"), Path::new("/bin/busybox"))?;
    copy_into(&staging, tests, Path::new("/bin/vm-tests"))?;
    for library in shared_libraries(tests)? {
        copy_into(&staging, &library, &library)?;
    }
    // Debian's CNI plugins, as the pod-start scenario calls them.
    for plugin in CNI_PLUGINS {
        let binary = Path::new("/usr/lib/cni").join(plugin);
        copy_into(&staging, &binary, &binary)?;
        for library in shared_libraries(&binary)? {
            copy_into(&staging, &library, &library)?;
        }
    }
    let veth =
        find_file(kernel_root, &|name| name.starts_with("veth.ko")).context("veth module not in the kernel package")?;
    let module = staging.join("lib/modules/veth.ko");
    fs::create_dir_all(module.parent().context("module path")?)?;
    if veth.extension().is_some_and(|e| e == "xz") {
        let plain = Command::new("xz").arg("-dc").arg(&veth).output().context("xz")?;
        fs::write(&module, plain.stdout)?;
    } else {
        fs::copy(&veth, &module)?;
    }
    let init = staging.join("init");
    fs::write(&init, INIT)?;
    run(Command::new("chmod").arg("755").arg(&init))?;
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("find . | cpio --quiet -o -H newc > '{}'", out.display()))
        .current_dir(&staging))?;
    fs::remove_dir_all(&staging)?;
    Ok(())
}

/// What in a guest's console means it will never print a verdict.
const FATAL_MARKS: &[&str] = &["Kernel panic", "soft lockup", "BUG: ", "Oops: "];

/// Boots one kernel and streams its serial console: every line goes to `log` and, prefixed
/// with the kernel's name, to stderr. Returns the console text once the guest powers off,
/// or as soon as it prints a panic or lockup marker (the guest is then stopped).
fn boot(name: &str, vmlinuz: &Path, initrd: &Path, log: &Path) -> anyhow::Result<String> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu's console")?;
    let (lines, console) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut log_file = fs::File::create(log)?;
    let mut text = String::new();
    let progress = crate::progress::Progress::spinner(&format!("guest {name}"));
    let mut passed = 0;
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match console.recv_timeout(left) {
            Ok(line) => {
                use std::io::Write as _;
                let line = line.trim_end_matches('\r');
                writeln!(log_file, "{line}")?;
                progress.line(&format!("  [{name}] {line}"));
                // libtest's "test NAME ... ok" lines.
                if line.starts_with("test ") && line.ends_with(" ok") {
                    passed += 1;
                    progress.message(format!("{passed} tests passed"));
                }
                text.push_str(line);
                text.push('\n');
                if let Some(mark) = FATAL_MARKS.iter().find(|mark| line.contains(*mark)) {
                    break Err(anyhow::anyhow!("the guest printed {mark:?}"));
                }
            }
            // The console closed: the guest powered off.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                break Err(anyhow::anyhow!("the guest did not power off within {GUEST_TIMEOUT:?}"));
            }
        }
    };
    if outcome.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    outcome.with_context(|| format!("log: {}", log.display()))?;
    Ok(text)
}

pub fn vm_test() -> anyhow::Result<()> {
    let tests = build_guest_tests()?;
    let out_dir = workspace_root().join("target/vm");
    fs::create_dir_all(&out_dir)?;
    let mut summary = String::from("\nVM kernel matrix:\n");
    let mut failed = Vec::new();
    for kernel in KERNELS {
        let started = Instant::now();
        let root = fetch_kernel(kernel)?;
        let vmlinuz = find_file(&root.join("boot"), &|name| name.starts_with("vmlinuz-")).context("no vmlinuz")?;
        let initrd = out_dir.join(format!("initramfs-{}.cpio", kernel.name));
        initramfs(&root, &tests, &initrd)?;
        let log_path = out_dir.join(format!("guest-{}.log", kernel.name));
        eprintln!(
            "booting {} ({}) under qemu TCG; serial log in {}",
            kernel.name,
            vmlinuz.display(),
            log_path.display()
        );
        let log = boot(kernel.name, &vmlinuz, &initrd, &log_path).unwrap_or_else(|e| {
            eprintln!("{e:#}");
            String::new()
        });
        let verdict = log
            .lines()
            .find_map(|line| line.split(RESULT_MARK).nth(1))
            .map(str::trim);
        let passed = verdict == Some("PASS");
        let release = vmlinuz
            .file_name()
            .map(|n| n.to_string_lossy().trim_start_matches("vmlinuz-").to_string());
        let _ = writeln!(
            summary,
            "  {:<28} {:<40} {:>6.1} s",
            release.unwrap_or_default(),
            verdict.unwrap_or("NO VERDICT (panic or crash?)"),
            started.elapsed().as_secs_f64()
        );
        if !passed {
            failed.push(kernel.name);
        }
    }
    eprintln!("{summary}");
    if !failed.is_empty() {
        bail!("VM tests failed on kernels {failed:?}");
    }
    Ok(())
}
