//! Why dad-trace refuses to trace, and the exit code each cause gets: scripts and Jobs can
//! tell "run me as root" from "this kernel cannot do it" from anything else.
//!
//! Pure: mutation-tested (cargo xtask mutants).

/// A refusal with what to do about it, from the layers that talk to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not allowed to load tracing programs or read what they need (exit code 3).
    #[error("{0}")]
    Privileges(String),
    /// This kernel lacks what tracing needs (exit code 4).
    #[error("{0}")]
    Kernel(String),
}

/// Any other error (bad input, I/O, a failed gate or scenario).
pub const EXIT_FAILURE: u8 = 1;
/// clap's code for a command line it cannot parse.
pub const EXIT_USAGE: u8 = 2;
/// Not allowed to trace: not root, or a capability missing.
pub const EXIT_PRIVILEGES: u8 = 3;
/// The kernel lacks what tracing needs: BTF, the DAD functions, any attachable backend.
pub const EXIT_KERNEL: u8 = 4;

/// The process exit code for an error, from the first cause that has one.
#[must_use]
pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        match cause.downcast_ref::<Refusal>() {
            Some(Refusal::Privileges(_)) => return EXIT_PRIVILEGES,
            Some(Refusal::Kernel(_)) => return EXIT_KERNEL,
            None => {}
        }
    }
    EXIT_FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_tell_causes_apart() {
        let privileges = anyhow::Error::from(Refusal::Privileges("no".into())).context("record");
        assert_eq!(exit_code(&privileges), EXIT_PRIVILEGES);
        let kernel = anyhow::Error::from(Refusal::Kernel("old".into()));
        assert_eq!(exit_code(&kernel), EXIT_KERNEL);
        let btf = crate::kernel::btf::read_facts(std::path::Path::new("/nonexistent/vmlinux"))
            .err()
            .map(anyhow::Error::from)
            .expect("no BTF there");
        assert!(format!("{btf:#}").contains("CONFIG_DEBUG_INFO_BTF"), "{btf:#}");
        assert_eq!(exit_code(&btf), EXIT_KERNEL);
        assert_eq!(exit_code(&anyhow::anyhow!("bad file")), EXIT_FAILURE);
    }
}
