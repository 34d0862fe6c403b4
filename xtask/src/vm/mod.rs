//! `cargo xtask vm-test`: boots Debian kernels that have kprobes under qemu (TCG), x86-64
//! and arm64, each with an initramfs holding busybox, the VM test binary and dad-trace
//! (static, of the guest's architecture), the CNI plugins and the veth module, and reads the
//! tests' own output on the serial console.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use self::verdict::Verdict;
use crate::{
    Arch,
    apt::{Apt, Deb},
    setup, workspace_root,
};

mod initramfs;
mod verdict;

/// A Debian kernel package family; the newest available version is used. Adding a kernel is
/// one line here.
pub struct Kernel {
    pub name: &'static str,
    pub arch: Arch,
    prefix: &'static str,
    suffix: &'static str,
    /// Synthetic pods per scenario: emulating arm64 costs more per pod.
    pods: usize,
}

pub const KERNELS: &[Kernel] = &[
    // bullseye: BPF memory still charged to RLIMIT_MEMLOCK (before 5.11). The signed image
    // (the same kernel): bullseye-security does not serve the -unsigned one.
    Kernel {
        name: "5.10",
        arch: Arch::Amd64,
        prefix: "linux-image-5.10.0-",
        suffix: "-cloud-amd64",
        pods: 20,
    },
    Kernel {
        name: "6.1",
        arch: Arch::Amd64,
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64-unsigned",
        pods: 20,
    },
    Kernel {
        name: "6.12",
        arch: Arch::Amd64,
        prefix: "linux-image-6.12.",
        suffix: "+deb12-cloud-amd64-unsigned",
        pods: 20,
    },
    Kernel {
        name: "6.1",
        arch: Arch::Arm64,
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-arm64-unsigned",
        pods: 10,
    },
    Kernel {
        name: "6.12",
        arch: Arch::Arm64,
        prefix: "linux-image-6.12.",
        suffix: "+deb12-cloud-arm64-unsigned",
        pods: 10,
    },
];

const GUEST_TIMEOUT: Duration = Duration::from_mins(20);

/// The newest package of a family the lists offer.
fn newest_package(apt: &Apt, kernel: &Kernel) -> anyhow::Result<String> {
    apt.names(kernel.prefix)?
        .into_iter()
        .filter_map(|name| {
            let middle = name.strip_prefix(kernel.prefix)?.strip_suffix(kernel.suffix)?;
            Some((middle.parse::<u32>().ok()?, name.clone()))
        })
        .max()
        .map(|(_, name)| name)
        .with_context(|| format!("no {}*{} package in the apt lists", kernel.prefix, kernel.suffix))
}

/// Downloads (once) and unpacks a kernel package; returns the unpacked root.
fn fetch_kernel(apt: &Apt, kernel: &Kernel) -> anyhow::Result<PathBuf> {
    let package = newest_package(apt, kernel)?;
    apt.unpacked(&Deb {
        name: &package,
        arch: kernel.arch.debian(),
        version: None,
    })
}

/// Builds the guest test binary and dad-trace for `arch`, both static; returns their paths.
/// Cargo's messages go to `log`.
fn build_guest_binaries(arch: Arch, log: Option<&fs::File>) -> anyhow::Result<(PathBuf, PathBuf)> {
    if arch != Arch::Amd64 {
        setup::ensure_cross()?;
    }
    let tests = arch.build_logged(
        &[
            "test",
            "--package",
            "integration-tests",
            "--test",
            "vm_kernel",
            "--no-run",
        ],
        "vm_kernel",
        log,
    )?;
    let dad_trace = arch.build_logged(&["build", "--package", "dad-trace"], "dad-trace", log)?;
    Ok((tests, dad_trace))
}

/// What in a guest's console means it will never print a verdict.
const FATAL_MARKS: &[&str] = &["Kernel panic", "soft lockup", "BUG: ", "Oops: "];

impl Kernel {
    /// `6.1-arm64`: how the summary and `--only` name a guest.
    pub fn label(&self) -> String {
        format!("{}-{}", self.name, self.arch.debian())
    }
}

/// qemu for `arch`: TCG (KVM does not work on our machines), 2 vCPUs, no network.
fn qemu(arch: Arch) -> Command {
    let (program, machine, console): (&str, &[&str], &str) = match arch {
        Arch::Amd64 => ("qemu-system-x86_64", &["-cpu", "max"], "ttyS0"),
        // pauth-impdef: the same pointer authentication, with qemu's cheap hash instead of
        // emulating QARMA, which dominates TCG time otherwise.
        Arch::Arm64 => (
            "qemu-system-aarch64",
            &["-M", "virt", "-cpu", "max,pauth-impdef=on"],
            "ttyAMA0",
        ),
    };
    let mut command = Command::new(program);
    command
        .args(["-accel", "tcg"])
        .args(machine)
        .args(["-m", "2048", "-smp", "2", "-nographic", "-no-reboot", "-nic", "none"])
        .arg("-append")
        .arg(format!("console={console} panic=-1 quiet loglevel=3"));
    command
}

/// Boots one kernel and streams its serial console: every line goes to `log` and, prefixed
/// with the guest's label, to stderr. Returns the console text once the guest powers off,
/// or as soon as it prints a panic or lockup marker (the guest is then stopped).
fn boot(kernel: &Kernel, vmlinuz: &Path, initrd: &Path, log: &Path) -> anyhow::Result<String> {
    let name = kernel.label();
    let mut child = qemu(kernel.arch)
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start qemu for {name}"))?;
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

/// One guest ready to boot: its kernel, the initramfs built for it, where its console goes.
pub struct Guest {
    kernel: &'static Kernel,
    vmlinuz: PathBuf,
    initrd: PathBuf,
    log: PathBuf,
}

/// The guests of a run, with their binaries built and initramfs written.
pub struct Prepared {
    guests: Vec<Guest>,
    started: Instant,
}

/// How many guests boot at once. A guest's tests mostly wait for DAD's timers, so two share
/// the machine's cores with little loss of either's pace.
const PARALLEL_GUESTS: usize = 2;

/// Runs the guests (all, or those `only` names by label) and prints one summary line each.
pub fn vm_test(only: &[String]) -> anyhow::Result<()> {
    run(prepare(only, None)?)
}

/// Fetches the kernels, builds both architectures' binaries and each guest's initramfs.
/// Cargo's messages go to `log`.
pub fn prepare(only: &[String], log: Option<&fs::File>) -> anyhow::Result<Prepared> {
    let kernels: Vec<&'static Kernel> = KERNELS
        .iter()
        .filter(|kernel| only.is_empty() || only.contains(&kernel.label()))
        .collect();
    if kernels.is_empty() {
        let labels: Vec<String> = KERNELS.iter().map(Kernel::label).collect();
        bail!("no guest is named {only:?}; the guests are {labels:?}");
    }
    let started = Instant::now();
    let apt = Apt::local()?;
    let out_dir = workspace_root().join("target/vm");
    fs::create_dir_all(&out_dir)?;
    let mut binaries = Vec::new();
    for arch in Arch::ALL {
        if kernels.iter().any(|kernel| kernel.arch == arch) {
            binaries.push((arch, build_guest_binaries(arch, log)?));
        }
    }
    let mut guests = Vec::new();
    for kernel in kernels {
        let (tests, dad_trace) = binaries
            .iter()
            .find_map(|(arch, paths)| (*arch == kernel.arch).then_some(paths))
            .context("guest binaries built")?;
        let root = fetch_kernel(&apt, kernel)?;
        let vmlinuz =
            initramfs::find_file(&root.join("boot"), &|name| name.starts_with("vmlinuz-")).context("no vmlinuz")?;
        let initrd = out_dir.join(format!("initramfs-{}.cpio", kernel.label()));
        initramfs::build(
            &initramfs::Contents {
                arch: kernel.arch,
                kernel_root: &root,
                tests,
                dad_trace,
                pods: kernel.pods,
            },
            &initrd,
        )?;
        let log = out_dir.join(format!("guest-{}.log", kernel.label()));
        guests.push(Guest {
            kernel,
            vmlinuz,
            initrd,
            log,
        });
    }
    Ok(Prepared { guests, started })
}

/// Boots the prepared guests, [`PARALLEL_GUESTS`] at a time, and prints one summary line
/// each, in the matrix's order.
pub fn run(prepared: Prepared) -> anyhow::Result<()> {
    let Prepared { guests, started } = prepared;
    // Popped from the end: reversed, so guests boot in the matrix's order.
    let queue = std::sync::Mutex::new(guests.iter().enumerate().rev().collect::<Vec<_>>());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_GUESTS.min(guests.len()) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().ok().and_then(|mut queue| queue.pop());
                    let Some((index, guest)) = next else { break };
                    let line = boot_and_judge(guest);
                    if let Ok(mut results) = results.lock() {
                        results.push((index, line));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(index, _)| *index);
    let mut summary = format!(
        "\nVM kernel matrix ({PARALLEL_GUESTS} guests at a time):\n  {:<30} {:<6} {:>4} {:>8}  {:<8} {:>8}\n",
        "kernel", "arch", "ran", "skipped", "verdict", "time"
    );
    let mut failed = Vec::new();
    for (index, (line, passed)) in &results {
        summary.push_str(line);
        if !passed {
            failed.push(guests[*index].kernel.label());
        }
    }
    let _ = writeln!(
        summary,
        "  whole matrix, builds included: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    eprintln!("{summary}");
    anyhow::ensure!(results.len() == guests.len(), "a guest runner died");
    if !failed.is_empty() {
        bail!("VM tests failed on {failed:?}");
    }
    Ok(())
}

/// Boots one guest (once more if it died before its init ran) and returns its summary line
/// and whether it passed.
fn boot_and_judge(guest: &Guest) -> (String, bool) {
    let Guest {
        kernel,
        vmlinuz,
        initrd,
        log: log_path,
    } = guest;
    let started = Instant::now();
    eprintln!(
        "booting {} ({}, {} pods per scenario) under qemu TCG; serial log in {}",
        kernel.label(),
        vmlinuz.display(),
        kernel.pods,
        log_path.display()
    );
    let mut log = boot(kernel, vmlinuz, initrd, log_path);
    if let Err(e) = &log
        && !fs::read_to_string(log_path).is_ok_and(|console| console.contains(initramfs::INIT_STARTED))
    {
        // The kernel died booting, before any test (an "Oops: int3" under TCG was seen
        // once in 6.12): the emulator's fault, not dad-trace's. One more boot, said.
        eprintln!(
            "{e:#}\n{} failed before its init ran: booting it once more",
            kernel.label()
        );
        let _ = fs::copy(log_path, log_path.with_extension("first-boot.log"));
        log = boot(kernel, vmlinuz, initrd, log_path);
    }
    let log = log.unwrap_or_else(|e| {
        eprintln!("{e:#}");
        String::new()
    });
    let verdict = Verdict::parse(&log);
    let status = verdict.status();
    let release = vmlinuz
        .file_name()
        .map(|n| n.to_string_lossy().trim_start_matches("vmlinuz-").to_string())
        .unwrap_or_default();
    let line = format!(
        "  {release:<30} {:<6} {:>4} {:>8}  {:<8} {:>6.1} s{}\n",
        kernel.arch.debian(),
        verdict.ran(),
        verdict.skipped.len(),
        if status.is_ok() { "PASS" } else { "FAIL" },
        started.elapsed().as_secs_f64(),
        status
            .as_ref()
            .err()
            .map(|why| format!("  ({why})"))
            .unwrap_or_default()
    );
    (line, status.is_ok())
}
