//! `RLIMIT_MEMLOCK`: kernels before 5.11 charge BPF maps and programs to it (later ones to
//! the memory cgroup), and its default (64 KiB or 8 MiB) can be too small for the ring
//! buffer. dad-trace raises it to unlimited before loading; raising needs
//! `CAP_SYS_RESOURCE`, so when that is missing on such a kernel and loading is refused,
//! the refusal says so instead of a bare "operation not permitted".
use std::io;

use super::release::charges_memlock;
use crate::error::Refusal;

/// The limit as it stands: `None` is unlimited.
fn current() -> io::Result<Option<u64>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur))
}

fn kib(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".into(), |bytes| format!("{} KiB", bytes / 1024))
}

/// Raises the limit to unlimited. A failure only matters on kernels that charge it; there
/// it is a warning now and, if loading is then refused, the refusal ([`explain`]).
pub fn raise(release: &str) {
    let before = current().ok().flatten();
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) } == 0 {
        if before.is_some() {
            log::debug!("RLIMIT_MEMLOCK raised from {} to unlimited", kib(before));
        }
        return;
    }
    let error = io::Error::last_os_error();
    if charges_memlock(release) && before.is_some() {
        log::warn!(
            "RLIMIT_MEMLOCK is {} and cannot be raised ({error}); kernel {release} charges BPF memory to it",
            kib(before),
        );
    } else {
        log::debug!("setrlimit(RLIMIT_MEMLOCK) failed ({error}); this kernel does not charge it");
    }
}

/// The refusal for a load that failed because of the limit: the kernel charges it, the
/// limit is finite, and the kernel answered `EPERM` somewhere in `error`'s chain.
#[must_use]
pub fn explain(release: &str, error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let limit = current().ok().flatten()?;
    if !charges_memlock(release) || !chain_has_eperm(error) {
        return None;
    }
    Some(Refusal::Privileges(format!(
        "kernel {release} (before 5.11) charges BPF maps and programs to RLIMIT_MEMLOCK, which is {} here, \
         and raising it was refused: dad-trace needs CAP_SYS_RESOURCE (root has it; in a pod, add it \
         to the capabilities, as deploy/daemonset.yaml does), or start it under `ulimit -l unlimited`",
        kib(Some(limit))
    )))
}

fn chain_has_eperm(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.raw_os_error() == Some(libc::EPERM))
        {
            return true;
        }
        cause = current.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("map create failed")]
    struct Wrapped(#[source] io::Error);

    #[test]
    fn eperm_is_found_anywhere_in_the_chain() {
        assert!(chain_has_eperm(&Wrapped(io::Error::from_raw_os_error(libc::EPERM))));
        assert!(!chain_has_eperm(&Wrapped(io::Error::from_raw_os_error(libc::EINVAL))));
    }
}
