//! Kernel time to wall time, and what the process costs.
use chrono::{DateTime, Utc};
use nix::time::{ClockId, clock_gettime};

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`, so of every event.
#[must_use]
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

/// Maps kernel timestamps (`CLOCK_MONOTONIC`) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_at_zero: DateTime<Utc>,
}

impl Clock {
    /// Read now: both clocks side by side.
    #[must_use]
    pub fn now() -> Self {
        let mono = monotonic_ns();
        let wall = Utc::now();
        Self::at(wall - chrono::Duration::nanoseconds(i64::try_from(mono).unwrap_or(0)))
    }

    /// A clock whose monotonic zero was `wall_at_zero` (fixtures).
    #[must_use]
    pub fn at(wall_at_zero: DateTime<Utc>) -> Self {
        Self { wall_at_zero }
    }

    #[must_use]
    pub fn wall(self, mono_ns: u64) -> DateTime<Utc> {
        self.wall_at_zero + chrono::Duration::nanoseconds(i64::try_from(mono_ns).unwrap_or(0))
    }
}

/// This process's peak resident set (`VmHWM`), 0 where /proc does not say.
#[must_use]
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}
