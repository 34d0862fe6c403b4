//! Decodes the process records (a followed exec, the last exit of a followed process) and
//! reads the CNI variables out of the environment the kernel copied. The environment belongs
//! to whoever ran the plugin: every value is bounded and nothing here trusts its shape.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use dad_trace_common::{
    ENV_MAX, EXEC_BY_PARENT, EXEC_BY_PREFIX, EXEC_BY_SELF, EXEC_ENV_TRUNCATED, EXEC_ENV_UNREAD, ExecRecord, ExitRecord,
    PATH_MAX, PROC_EXEC, PROC_EXIT,
};

use super::events::DecodeError;

/// The largest value kept of each variable; a longer one is dropped (a truncated netns path or
/// container id would name something else).
const BOUNDS: [(&str, usize); 7] = [
    ("CNI_COMMAND", 16),
    ("CNI_CONTAINERID", 256),
    ("CNI_NETNS", 4096),
    ("CNI_IFNAME", 16),
    ("CNI_ARGS", 4096),
    // The W3C trace context libcni passes on (a version-00 traceparent is 55 bytes).
    ("TRACEPARENT", 128),
    ("TRACESTATE", 512),
];

/// The CNI variables of one exec, as the runtime (or whoever ran the plugin) set them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    /// `CNI_ARGS`: `K=V;K=V`, where runtimes put `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ...
    pub args: Option<String>,
    /// The caller's trace context, unchecked (see `session::trace_context`).
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Variables present but longer than dad-trace keeps (and so left out).
    pub oversized: Vec<&'static str>,
}

impl CniEnv {
    /// Reads `K=V\0` strings. The first of a duplicated key wins, as for `getenv` and Go's
    /// `os.Getenv`. When `cut` (the kernel copied only part of it), the last string may be a
    /// fragment and is not read.
    #[must_use]
    pub fn parse(env: &[u8], cut: bool) -> Self {
        let mut strings: Vec<&[u8]> = env.split(|&byte| byte == 0).collect();
        // The part after the last NUL is a fragment when cut, and empty otherwise.
        if cut || env.last() == Some(&0) {
            strings.pop();
        }
        let mut parsed = Self::default();
        for string in strings {
            let Some(equals) = string.iter().position(|&byte| byte == b'=') else {
                continue;
            };
            let (key, value) = (&string[..equals], &string[equals + 1..]);
            let Some(&(name, bound)) = BOUNDS.iter().find(|(name, _)| name.as_bytes() == key) else {
                continue;
            };
            let slot = match name {
                "CNI_COMMAND" => &mut parsed.command,
                "CNI_CONTAINERID" => &mut parsed.container_id,
                "CNI_NETNS" => &mut parsed.netns,
                "CNI_IFNAME" => &mut parsed.ifname,
                "TRACEPARENT" => &mut parsed.traceparent,
                "TRACESTATE" => &mut parsed.tracestate,
                _ => &mut parsed.args,
            };
            if slot.is_some() || parsed.oversized.contains(&name) {
                continue;
            }
            if value.len() > bound {
                parsed.oversized.push(name);
            } else {
                *slot = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        parsed
    }

    /// The value of `key` in `CNI_ARGS` (`IgnoreUnknown=1;K8S_POD_NAMESPACE=a;...`).
    #[must_use]
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .as_deref()?
            .split(';')
            .find_map(|pair| pair.split_once('=').filter(|(name, _)| *name == key))
            .map(|(_, value)| value)
            .filter(|value| !value.is_empty())
    }
}

/// A followed exec.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // the record's flag bits, each its own fact
pub struct Exec {
    /// `CLOCK_MONOTONIC` ns of the exec, and of the fork that made the process.
    pub ts_ns: u64,
    pub forked_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// The caller's process (a runtime, or the plugin that delegated).
    pub ppid: u32,
    /// The path given to execve, as the caller wrote it (its mount namespace, maybe relative).
    pub path: String,
    pub env: CniEnv,
    /// Followed because the parent is (a delegated plugin, or a tool a plugin ran), or
    /// because it was followed already (a re-exec), rather than for its path.
    pub by_parent: bool,
    pub by_self: bool,
    pub by_prefix: bool,
    /// The environment was longer than dad-trace copies (variables past it are unseen), or
    /// could not be read at all.
    pub env_truncated: bool,
    pub env_unread: bool,
}

/// The last thread of a followed process exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub ts_ns: u64,
    pub exec_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// Wait status as the kernel keeps it in `task->exit_code`.
    pub wait_status: u32,
}

impl Exit {
    /// The exit status, when the process exited rather than died of a signal.
    #[must_use]
    pub fn status(&self) -> Option<i32> {
        self.signal()
            .is_none()
            .then_some(((self.wait_status >> 8) & 0xff).cast_signed())
    }

    /// The signal that killed it, if one did.
    #[must_use]
    pub fn signal(&self) -> Option<i32> {
        let signal = (self.wait_status & 0x7f).cast_signed();
        (signal != 0).then_some(signal)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant, reason = "one per plugin exec or exit: rare, moved once")]
pub enum ProcEvent {
    Exec(Exec),
    Exit(Exit),
}

impl ProcEvent {
    #[must_use]
    pub fn ts_ns(&self) -> u64 {
        match self {
            ProcEvent::Exec(exec) => exec.ts_ns,
            ProcEvent::Exit(exit) => exit.ts_ns,
        }
    }
}

fn kind(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Decodes one record of the process ring buffer.
pub fn decode(bytes: &[u8]) -> Result<ProcEvent, DecodeError> {
    match (kind(bytes), bytes.len()) {
        (Some(PROC_EXEC), len) if len == size_of::<ExecRecord>() => {
            // SAFETY: the length matches and ExecRecord is plain integers and bytes.
            let record: Box<ExecRecord> = Box::new(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) });
            Ok(ProcEvent::Exec(from_exec(&record)))
        }
        (Some(PROC_EXIT), len) if len == size_of::<ExitRecord>() => {
            // SAFETY: as above.
            let record: ExitRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            Ok(ProcEvent::Exit(Exit {
                ts_ns: record.ts_ns,
                exec_ns: record.exec_ns,
                tgid: record.tgid,
                tid: record.tid,
                wait_status: record.exit_code,
            }))
        }
        (Some(PROC_EXEC | PROC_EXIT), actual) => Err(DecodeError::Size {
            expected: if kind(bytes) == Some(PROC_EXEC) {
                size_of::<ExecRecord>()
            } else {
                size_of::<ExitRecord>()
            },
            actual,
        }),
        (kind, _) => Err(DecodeError::ProcKind(kind.unwrap_or(0))),
    }
}

#[must_use]
pub fn from_exec(record: &ExecRecord) -> Exec {
    let path_len = record.path.iter().position(|&byte| byte == 0).unwrap_or(PATH_MAX);
    let copied = (record.env_copied as usize).min(ENV_MAX);
    let truncated = record.flags & EXEC_ENV_TRUNCATED != 0;
    Exec {
        ts_ns: record.ts_ns,
        // A fork stamp after the exec would be a wrong offset: the exec is the fallback.
        forked_ns: if record.forked_ns == 0 || record.forked_ns > record.ts_ns {
            record.ts_ns
        } else {
            record.forked_ns
        },
        tgid: record.tgid,
        tid: record.tid,
        ppid: record.ppid,
        path: String::from_utf8_lossy(&record.path[..path_len]).into_owned(),
        env: CniEnv::parse(&record.env[..copied], truncated),
        by_parent: record.flags & EXEC_BY_PARENT != 0,
        by_self: record.flags & EXEC_BY_SELF != 0,
        by_prefix: record.flags & EXEC_BY_PREFIX != 0,
        env_truncated: truncated,
        env_unread: record.flags & EXEC_ENV_UNREAD != 0,
    }
}

/// An exec record as the kernel would write it (fixtures and the fake feed).
#[must_use]
pub fn exec_record(ts_ns: u64, tgid: u32, ppid: u32, path: &str, env: &[&str], flags: u32) -> Box<ExecRecord> {
    let mut record = Box::new(ExecRecord {
        kind: PROC_EXEC,
        flags,
        ts_ns,
        forked_ns: ts_ns.saturating_sub(1_000_000),
        tgid,
        tid: tgid,
        ppid,
        env_total: 0,
        env_copied: 0,
        reserved: 0,
        path: [0; PATH_MAX],
        env: [0; ENV_MAX],
    });
    let path = path.as_bytes();
    let len = path.len().min(PATH_MAX - 1);
    record.path[..len].copy_from_slice(&path[..len]);
    let mut at = 0;
    for string in env {
        let bytes = string.as_bytes();
        let end = (at + bytes.len()).min(ENV_MAX);
        record.env[at..end].copy_from_slice(&bytes[..end - at]);
        at = (end + 1).min(ENV_MAX);
        record.env_total += bytes.len() as u32 + 1;
    }
    record.env_copied = at as u32;
    record
}

/// Views a record as the bytes the ring buffer carries.
#[must_use]
pub fn bytes_of<T: Copy>(record: &T) -> Vec<u8> {
    // SAFETY: the records are repr(C) plain data without padding (asserted in the common crate).
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(record).cast::<u8>(), size_of::<T>()) }.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNTIME_ENV: &[&str] = &[
        "PATH=/usr/bin",
        "CNI_NETNS=/var/run/netns/cni-1",
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0;K8S_POD_UID=u1",
        "CNI_COMMAND=ADD",
        "CNI_IFNAME=eth0",
        "CNI_CONTAINERID=abc123",
        "CNI_PATH=/opt/cni/bin",
        "TRACEPARENT=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "TRACESTATE=rt=1",
    ];

    #[test]
    fn an_exec_record_round_trips_with_its_cni_variables() {
        let record = exec_record(5_000_000, 42, 7, "/opt/cni/bin/ptp", RUNTIME_ENV, EXEC_BY_PREFIX);
        let ProcEvent::Exec(exec) = decode(&bytes_of(&*record)).expect("decodes") else {
            panic!("an exec")
        };
        assert_eq!((exec.tgid, exec.ppid, exec.path.as_str()), (42, 7, "/opt/cni/bin/ptp"));
        assert_eq!(exec.forked_ns, 4_000_000);
        assert!(exec.by_prefix && !exec.by_parent && !exec.env_truncated);
        assert_eq!(exec.env.command.as_deref(), Some("ADD"));
        assert_eq!(exec.env.container_id.as_deref(), Some("abc123"));
        assert_eq!(exec.env.netns.as_deref(), Some("/var/run/netns/cni-1"));
        assert_eq!(exec.env.ifname.as_deref(), Some("eth0"));
        assert_eq!(exec.env.arg("K8S_POD_NAMESPACE"), Some("team-a"));
        assert_eq!(exec.env.arg("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(exec.env.arg("MISSING"), None);
        assert_eq!(
            exec.env.traceparent.as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(exec.env.tracestate.as_deref(), Some("rt=1"));
    }

    /// Each flag of the record reaches its own field, and only that one.
    #[test]
    fn exec_flags_are_read_one_by_one() {
        let flags_of = |flags| {
            let ProcEvent::Exec(exec) = decode(&bytes_of(&*exec_record(5, 1, 1, "/x", &[], flags))).expect("decodes")
            else {
                panic!("an exec")
            };
            [
                exec.by_parent,
                exec.by_self,
                exec.by_prefix,
                exec.env_truncated,
                exec.env_unread,
            ]
        };
        assert_eq!(flags_of(0), [false; 5]);
        let each = [
            EXEC_BY_PARENT,
            EXEC_BY_SELF,
            EXEC_BY_PREFIX,
            EXEC_ENV_TRUNCATED,
            EXEC_ENV_UNREAD,
        ];
        for (index, flag) in each.into_iter().enumerate() {
            let mut expected = [false; 5];
            expected[index] = true;
            assert_eq!(flags_of(flag), expected, "flag {flag:#x}");
        }
    }

    /// The fixture writes what the kernel would: a path cut to fit with its NUL, and the
    /// environment's total and copied sizes.
    #[test]
    fn the_exec_fixture_is_what_the_kernel_writes() {
        let long = "p".repeat(PATH_MAX + 10);
        let record = exec_record(5, 1, 1, &long, &["A=1", "BB=22"], 0);
        assert_eq!(record.path[PATH_MAX - 2..], [b'p', 0]);
        assert_eq!((record.env_total, record.env_copied), (10, 10));
        assert_eq!(&record.env[..10], b"A=1\0BB=22\0");
        let ProcEvent::Exec(exec) = decode(&bytes_of(&*record)).expect("decodes") else {
            panic!("an exec")
        };
        assert_eq!(exec.path.len(), PATH_MAX - 1);
    }

    #[test]
    fn exit_status_and_signal_come_from_the_wait_status() {
        let exit = |wait_status| Exit {
            ts_ns: 2,
            exec_ns: 1,
            tgid: 1,
            tid: 2,
            wait_status,
        };
        assert_eq!((exit(0).status(), exit(0).signal()), (Some(0), None));
        assert_eq!((exit(0x100).status(), exit(0x100).signal()), (Some(1), None));
        assert_eq!((exit(0x9).status(), exit(0x9).signal()), (None, Some(9)));
        let record = ExitRecord {
            kind: PROC_EXIT,
            exit_code: 0x100,
            ts_ns: 9,
            exec_ns: 3,
            tgid: 11,
            tid: 12,
        };
        assert_eq!(
            decode(&bytes_of(&record)),
            Ok(ProcEvent::Exit(Exit {
                ts_ns: 9,
                exec_ns: 3,
                tgid: 11,
                tid: 12,
                wait_status: 0x100
            }))
        );
        let ProcEvent::Exit(decoded) = decode(&bytes_of(&record)).expect("decodes") else {
            panic!("an exit")
        };
        assert_eq!(ProcEvent::Exit(decoded).ts_ns(), 9);
        // A record of a known kind but the wrong size is refused with the size its kind has,
        // never read past its end or as the other kind.
        let mut long_exit = bytes_of(&record);
        long_exit.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode(&long_exit),
            Err(DecodeError::Size {
                expected: size_of::<ExitRecord>(),
                actual: size_of::<ExitRecord>() + 8,
            })
        );
        let exec = exec_record(5_000_000, 42, 7, "/x", &[], 0);
        let mut long_exec = bytes_of(&*exec);
        long_exec.push(0);
        assert_eq!(
            decode(&long_exec),
            Err(DecodeError::Size {
                expected: size_of::<ExecRecord>(),
                actual: size_of::<ExecRecord>() + 1,
            })
        );
        let ProcEvent::Exec(exec) = decode(&bytes_of(&*exec)).expect("decodes") else {
            panic!("an exec")
        };
        assert_eq!(ProcEvent::Exec(exec).ts_ns(), 5_000_000);
    }

    /// A tenant controls the environment of a plugin it runs: oversized values, duplicates,
    /// bytes that are not UTF-8, a cut last string and garbage records are all survived.
    #[test]
    fn hostile_environments_are_bounded() {
        let long_id = format!("CNI_CONTAINERID={}", "x".repeat(300));
        let env: Vec<&str> = vec![
            &long_id,
            "CNI_CONTAINERID=second",
            "CNI_COMMAND=ADD",
            "CNI_COMMAND=DEL",
            "NOEQUALS",
            "CNI_IFNAME=e\u{1b}[2J",
            "=empty-key",
        ];
        let parsed = CniEnv::parse(&exec_record(1, 1, 1, "/x", &env, 0).env, false);
        assert_eq!(parsed.container_id, None, "oversized is dropped, not truncated");
        assert_eq!(parsed.oversized, ["CNI_CONTAINERID"]);
        assert_eq!(parsed.command.as_deref(), Some("ADD"), "the first wins");
        assert_eq!(
            parsed.ifname.as_deref(),
            Some("e\u{1b}[2J"),
            "kept as given; escaped when shown"
        );
        let bytes = b"CNI_NETNS=/run/netns/\xff\0CNI_COMMAND=AD";
        let cut = CniEnv::parse(bytes, true);
        assert_eq!(cut.netns.as_deref(), Some("/run/netns/\u{fffd}"));
        assert_eq!(cut.command, None, "a fragment is not read");
        assert!(CniEnv::parse(&[], false) == CniEnv::default());
        // A value as long as its bound is kept; one byte more is not.
        let at_bound = format!("CNI_IFNAME={}\0CNI_COMMAND={}\0", "i".repeat(16), "c".repeat(17));
        let bounded = CniEnv::parse(at_bound.as_bytes(), false);
        assert_eq!(bounded.ifname.map(|name| name.len()), Some(16));
        assert_eq!((bounded.command, bounded.oversized), (None, vec!["CNI_COMMAND"]));
        // Not cut, with no NUL at the end: the last string is whole and read.
        let whole = CniEnv::parse(b"CNI_IFNAME=eth0\0CNI_COMMAND=ADD", false);
        assert_eq!(
            (whole.ifname.as_deref(), whole.command.as_deref()),
            (Some("eth0"), Some("ADD"))
        );
        assert!(decode(&[1, 0, 0, 0, 9]).is_err(), "an exec kind of the wrong size");
        assert!(decode(&[7; 32]).is_err(), "an unknown kind");
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn a_fork_stamp_after_the_exec_is_not_believed() {
        let mut record = exec_record(5, 1, 1, "/x", &[], 0);
        record.forked_ns = 9;
        assert_eq!(from_exec(&record).forked_ns, 5);
    }
}
