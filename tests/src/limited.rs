//! dad-trace run as a child with a small `RLIMIT_MEMLOCK`, with or without the capability to
//! raise it, as on a node whose runtime grants a low limit.
use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The binary the guests carry (`DAD_TRACE_BIN`, static, of the guest's architecture).
#[must_use]
pub fn dad_trace_binary() -> Option<PathBuf> {
    std::env::var_os("DAD_TRACE_BIN").map(PathBuf::from)
}

/// A limit far below what the ring buffer alone needs (256 KiB): 64 KiB, the old default.
pub const SMALL_MEMLOCK: u64 = 64 * 1024;

/// `CAP_SYS_RESOURCE` from include/uapi/linux/capability.h.
const CAP_SYS_RESOURCE: libc::c_ulong = 24;

/// Runs `binary args` with `RLIMIT_MEMLOCK` at [`SMALL_MEMLOCK`] (soft and hard) and debug
/// logs; without `CAP_SYS_RESOURCE` when `can_raise` is false (dropped from the bounding
/// set, so root's exec does not grant it back).
pub fn run_with_small_memlock(binary: &Path, args: &[&str], can_raise: bool) -> Output {
    let mut command = Command::new(binary);
    command.args(args).env("RUST_LOG", "warn,dad_trace=debug");
    // SAFETY: between fork and exec only async-signal-safe syscalls, no allocation.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: SMALL_MEMLOCK,
                rlim_max: SMALL_MEMLOCK,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if !can_raise && libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_RESOURCE, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().expect("run dad-trace")
}
