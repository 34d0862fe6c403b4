//! `dad-trace probes`, and the hidden `kernel-facts` that `record` runs in a child.
use std::{fmt::Write as _, path::PathBuf};

use crate::kernel::{self, Kernel, VMLINUX_BTF, btf, release, support};

/// Show which kernel hook each backend uses for each DAD phase on this kernel, and why.
#[derive(clap::Args)]
#[command(after_help = "EXAMPLES:\n    \
    dad-trace probes                # what this kernel offers, per phase and backend\n    \
    sudo dad-trace probes --verify  # + load every program through the verifier")]
pub struct Probes {
    /// Also load every program through the verifier (root; nothing is attached).
    #[arg(long)]
    verify: bool,
    /// The kernel's BTF, for kernels that do not publish /sys/kernel/btf/vmlinux.
    #[arg(long, default_value = VMLINUX_BTF, value_name = "FILE")]
    btf: PathBuf,
}

impl Probes {
    pub fn run(self) -> anyhow::Result<()> {
        let kernel = Kernel::discover(&self.btf, None)?;
        let mut text = format!(
            "kernel {}, BTF {}\n{}",
            kernel.release,
            kernel.btf.display(),
            support::render(&kernel.support)
        );
        text.push_str(&kernel::sockets::render(&kernel.facts));
        if self.verify {
            kernel::check_privileges()?;
            for verdict in kernel::verify_programs(&kernel)? {
                let result = match verdict.result {
                    Ok(()) => "verifier OK".to_string(),
                    Err(e) => format!("FAILED: {:#}", anyhow::Error::from(e)),
                };
                let user = verdict
                    .backend
                    .map_or_else(|| "both".to_string(), |backend| backend.to_string());
                let _ = writeln!(text, "{user:<10} {:<20} {result}", verdict.program);
            }
        }
        super::out(&text)
    }
}

/// Print the kernel facts (struct offsets, DAD functions) read from BTF, as JSON: run by
/// `record` in a child process so its own memory stays small.
#[derive(clap::Args)]
#[command(hide = true)]
pub struct KernelFactsCommand {
    #[arg(long, default_value = VMLINUX_BTF)]
    btf: PathBuf,
}

impl KernelFactsCommand {
    pub fn run(self) -> anyhow::Result<()> {
        super::out(&(serde_json::to_string(&btf::read_facts(&self.btf)?)? + "\n"))
    }
}

/// Print what decides whether this kernel is supported (release, ring buffer), as JSON: how
/// the recorded kernels in tests/fixtures/kernels were taken.
#[derive(clap::Args)]
#[command(hide = true)]
pub struct KernelDescription;

impl KernelDescription {
    pub fn run(self) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string(&release::Description::running())?);
        Ok(())
    }
}
