//! Which kernels dad-trace supports, decided before anything else is read: 5.8 and later.
//! Older kernels lack the BPF ring buffer the programs write to (`BPF_MAP_TYPE_RINGBUF`,
//! 5.8) and the capabilities a pod is granted instead of root (`CAP_BPF`, `CAP_PERFMON`,
//! 5.8); dad-trace says so and exits 4 rather than failing somewhere in the loader.
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Refusal;

/// `major.minor` of a kernel release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    /// The oldest supported kernel: BPF ring buffer, `CAP_BPF` and `CAP_PERFMON`.
    pub const MINIMUM: Version = Version { major: 5, minor: 8 };
    /// From here BPF memory is charged to the memory cgroup, not to `RLIMIT_MEMLOCK`.
    pub const MEMCG_ACCOUNTING: Version = Version { major: 5, minor: 11 };

    /// Reads `5.10` from `5.10.0-32-cloud-amd64`, `6.12.117+deb12-cloud-arm64`,
    /// `4.18.0-513.el8.x86_64`, ...
    #[must_use]
    pub fn parse(release: &str) -> Option<Self> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self { major, minor })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What decides support, read from the running kernel or recorded from another one (the
/// tests' fixtures are such recordings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// `uname -r`.
    pub release: String,
    /// Whether creating a ring buffer map works, when it could be tried (it needs the
    /// privileges to create maps): a distribution kernel may have it backported.
    pub ring_buffer: Option<bool>,
}

impl Description {
    /// The running kernel. The ring buffer is probed with a one-page map, created and
    /// closed at once.
    #[must_use]
    pub fn running() -> Self {
        let ring_buffer = match aya::sys::is_map_supported(aya::maps::MapType::RingBuf) {
            Ok(supported) => Some(supported),
            Err(e) => {
                log::debug!("cannot probe for the BPF ring buffer ({e}); going by the release");
                None
            }
        };
        Self {
            release: super::release(),
            ring_buffer,
        }
    }

    /// Refuses a kernel that cannot run dad-trace, saying what it needs.
    pub fn check(&self) -> Result<(), Refusal> {
        let version = Version::parse(&self.release);
        let old = version.is_some_and(|v| v < Version::MINIMUM);
        let needs = format!(
            "dad-trace needs Linux {} or later: its programs write to a BPF ring buffer \
             (BPF_MAP_TYPE_RINGBUF, 5.8), and a pod runs it with CAP_BPF and CAP_PERFMON (5.8) \
             instead of full root",
            Version::MINIMUM
        );
        let reason = match (self.ring_buffer, old) {
            (Some(false), true) => format!("is older than {} and has no BPF ring buffer", Version::MINIMUM),
            (Some(false), false) => "has no BPF ring buffer (the kernel does not know the map type)".into(),
            (None, true) => format!("is older than {}", Version::MINIMUM),
            (Some(true), true) => {
                // A backport (some enterprise kernels): the maps work, CAP_BPF does not exist.
                log::warn!(
                    "kernel {} is older than {} but has the BPF ring buffer (backported); \
                     it needs root (CAP_SYS_ADMIN), as CAP_BPF and CAP_PERFMON do not exist there",
                    self.release,
                    Version::MINIMUM
                );
                return Ok(());
            }
            (Some(true) | None, false) => return Ok(()),
        };
        Err(Refusal::Kernel(format!("kernel {} {reason}: {needs}", self.release)))
    }
}

/// Whether BPF maps and programs count against `RLIMIT_MEMLOCK` (before 5.11); unknown
/// releases are assumed to.
#[must_use]
pub fn charges_memlock(release: &str) -> bool {
    Version::parse(release).is_none_or(|v| v < Version::MEMCG_ACCOUNTING)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{EXIT_KERNEL, exit_code};

    /// Kernel descriptions recorded from real kernels (tests/fixtures/kernels/).
    fn recorded(name: &str) -> Description {
        let path = format!("{}/tests/fixtures/kernels/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn releases_parse() {
        let v = |major, minor| Some(Version { major, minor });
        assert_eq!(Version::parse("5.10.0-32-cloud-amd64"), v(5, 10));
        assert_eq!(Version::parse("6.12.117+deb12-cloud-arm64"), v(6, 12));
        assert_eq!(Version::parse("4.18.0-513.el8.x86_64"), v(4, 18));
        assert_eq!(Version::parse("6.18.44-fc-v657"), v(6, 18));
        assert_eq!(Version::parse("5.8"), v(5, 8));
        assert_eq!(Version::parse("linux"), None);
    }

    #[test]
    fn kernels_before_5_8_are_refused_with_exit_code_4() {
        let old = recorded("ubuntu-5.4-amd64");
        let refusal = old.check().expect_err("5.4 is refused");
        let message = refusal.to_string();
        for needed in [old.release.as_str(), "5.8", "BPF ring buffer", "CAP_BPF"] {
            assert!(message.contains(needed), "{message}");
        }
        assert_eq!(exit_code(&anyhow::Error::from(refusal).context("record")), EXIT_KERNEL);
        // Without privileges to probe, the release alone decides.
        let unprobed = Description {
            ring_buffer: None,
            ..old
        };
        assert!(unprobed.check().is_err());
    }

    #[test]
    fn supported_kernels_pass_and_say_whether_memlock_is_charged() {
        let bullseye = recorded("debian-5.10-amd64");
        assert_eq!(bullseye.check().ok(), Some(()));
        assert!(charges_memlock(&bullseye.release));
        let bookworm = recorded("debian-6.1-arm64");
        assert_eq!(bookworm.check().ok(), Some(()));
        assert!(!charges_memlock(&bookworm.release));
        // A backported ring buffer is taken at its word; a missing one is refused at any age.
        let backport = Description {
            release: "4.18.0-513.el8.x86_64".into(),
            ring_buffer: Some(true),
        };
        assert_eq!(backport.check().ok(), Some(()));
        let stripped = Description {
            release: "6.1.0".into(),
            ring_buffer: Some(false),
        };
        assert!(
            stripped
                .check()
                .is_err_and(|r| r.to_string().contains("no BPF ring buffer"))
        );
    }
}
