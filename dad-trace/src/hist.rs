//! Delay distributions: exact percentiles from an HDR histogram, printed as the log2
//! histograms people know from bcc's tools.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Values are nanoseconds, 3 significant digits; the range grows with the values, so a
/// delay of any length is shown as it is (sessions refuse what is not a time at all).
fn new_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is valid")
}

/// A distribution of delays in nanoseconds.
#[derive(Clone)]
pub struct Delays {
    histogram: Histogram<u64>,
}

impl Default for Delays {
    fn default() -> Self {
        Self {
            histogram: new_histogram(),
        }
    }
}

/// The summary rows printed under every histogram and stored in JSON reports.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Delays {
    pub fn record(&mut self, ns: u64) {
        // Zero delays (DAD disabled) are real data: HDR's lowest bucket holds them. Beyond
        // 2^63 ns (292 years) HDR cannot grow: the top it holds.
        if self.histogram.record(ns.max(1)).is_err() {
            self.histogram.saturating_record(ns);
        }
    }

    #[must_use]
    pub fn from_values(values: impl IntoIterator<Item = u64>) -> Self {
        let mut delays = Self::default();
        for value in values {
            delays.record(value);
        }
        delays
    }

    #[must_use]
    pub fn summary(&self) -> Option<Summary> {
        (!self.histogram.is_empty()).then(|| Summary {
            count: self.histogram.len(),
            p50_ns: self.histogram.value_at_quantile(0.50),
            p90_ns: self.histogram.value_at_quantile(0.90),
            p99_ns: self.histogram.value_at_quantile(0.99),
            max_ns: self.histogram.max(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Usecs,
    Msecs,
}

impl Unit {
    fn divisor(self) -> u64 {
        match self {
            Unit::Usecs => 1_000,
            Unit::Msecs => 1_000_000,
        }
    }

    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Unit::Usecs => "usecs",
            Unit::Msecs => "msecs",
        }
    }

    /// Milliseconds unless everything is under 10 ms (then microseconds show the shape).
    #[must_use]
    pub fn for_values(values: &[u64]) -> Unit {
        if values.iter().all(|&v| v < 10_000_000) {
            Unit::Usecs
        } else {
            Unit::Msecs
        }
    }
}

/// bcc's slot: 0 and 1 share slot 0, then one slot per power of two.
fn slot(value: u64) -> usize {
    if value < 2 { 0 } else { value.ilog2() as usize }
}

const BAR_WIDTH: u64 = 40;

/// Counts per bcc slot of `values` (nanoseconds) in `unit`.
#[must_use]
pub fn log2_counts(values: &[u64], unit: Unit) -> [u64; 64] {
    let mut slots = [0u64; 64];
    for &value in values {
        slots[slot(value / unit.divisor())] += 1;
    }
    slots
}

/// The `low -> high` range of a slot.
#[must_use]
pub fn slot_bounds(index: usize) -> (u64, u64) {
    let high = (1u64 << (index + 1)) - 1;
    let low = if index == 0 { 0 } else { 1u64 << index };
    (low, high)
}

/// Renders `values` (nanoseconds) as a bcc-style log2 histogram.
#[must_use]
pub fn render_log2(values: &[u64], unit: Unit) -> String {
    let slots = log2_counts(values, unit);
    let mut out = String::new();
    let Some(last) = slots.iter().rposition(|&count| count > 0) else {
        return out;
    };
    let peak = slots.iter().copied().max().unwrap_or(0).max(1);
    let _ = writeln!(out, "{:>10}{:15}: count    distribution", unit.label(), "");
    for (index, &count) in slots.iter().enumerate().take(last + 1) {
        let (low, high) = slot_bounds(index);
        let stars = usize::try_from(count * BAR_WIDTH / peak).unwrap_or(0);
        let _ = writeln!(
            out,
            "{low:>10} -> {high:<10} : {count:<8} |{:<width$}|",
            "*".repeat(stars),
            width = BAR_WIDTH as usize
        );
    }
    out
}

/// [`human`] of a number of milliseconds (drawings and timelines keep them as `f64`; a
/// negative one shows as 0).
#[must_use]
#[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)] // clamped at 0 first
pub fn human_ms(ms: f64) -> String {
    human((ms.max(0.0) * 1e6) as u64)
}

/// A delay for people: `850 us`, `12.3 ms`, `1.52 s`.
#[must_use]
pub fn human(ns: u64) -> String {
    let value = ns as f64;
    if ns < 1_000_000 {
        format!("{:.0} us", value / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1} ms", value / 1e6)
    } else {
        format!("{:.2} s", value / 1e9)
    }
}

/// The percentile rows printed under a histogram.
#[must_use]
pub fn render_summary(summary: &Summary) -> String {
    format!(
        "  count {}   p50 {}   p90 {}   p99 {}   max {}\n",
        summary.count,
        human(summary.p50_ns),
        human(summary.p90_ns),
        human(summary.p99_ns),
        human(summary.max_ns)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_bcc() {
        assert_eq!(
            [slot(0), slot(1), slot(2), slot(3), slot(4), slot(1023), slot(1024)],
            [0, 0, 1, 1, 2, 9, 10]
        );
    }

    #[test]
    fn renders_bcc_rows() {
        let ms = 1_000_000;
        let text = render_log2(&[0, 3 * ms, 3 * ms, 1500 * ms], Unit::Msecs);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("msecs") && lines[0].contains("distribution"));
        assert!(lines[1].starts_with("         0 -> 1"), "{text}");
        assert!(lines[2].contains("2 -> 3") && lines[2].contains(": 2 ") && lines[2].contains(&"*".repeat(40)));
        assert!(lines.last().expect("rows").contains("1024 -> 2047"));
        assert_eq!(lines.len(), 1 + 11);
        // Bars scale to the peak: a slot with half the peak's count has half its bar.
        assert!(
            lines[11].ends_with(&format!(": 1        |{:<40}|", "*".repeat(20))),
            "{text}"
        );
        assert_eq!(render_log2(&[], Unit::Msecs), "");
    }

    #[test]
    fn percentiles_are_exact_enough() {
        let ms = 1_000_000;
        let delays = Delays::from_values((1..=100).map(|i| i * 10 * ms));
        let summary = delays.summary().expect("not empty");
        assert_eq!(summary.count, 100);
        let within = |value: u64, expected: u64| value.abs_diff(expected) <= expected / 500;
        assert!(within(summary.p50_ns, 500 * ms), "{summary:?}");
        assert!(within(summary.p90_ns, 900 * ms), "{summary:?}");
        assert!(within(summary.p99_ns, 990 * ms), "{summary:?}");
        assert!(within(summary.max_ns, 1000 * ms), "{summary:?}");
        assert!(Delays::default().summary().is_none());
    }

    /// A delay of days is shown as days, not clamped to a bound (it was an hour).
    #[test]
    fn long_delays_are_kept() {
        let week = 7 * 24 * 3_600 * 1_000_000_000_u64;
        let summary = Delays::from_values([1_000_000, week]).summary().expect("not empty");
        assert!(summary.max_ns.abs_diff(week) <= week / 1000, "{summary:?}");
        assert_eq!(human(week), "604800.00 s");
    }

    #[test]
    fn unit_and_human() {
        assert_eq!(Unit::for_values(&[5_000, 9_000_000]), Unit::Usecs);
        assert_eq!(Unit::for_values(&[5_000, 1_000_000_000]), Unit::Msecs);
        // 10 ms is where milliseconds start.
        assert_eq!(Unit::for_values(&[9_999_999]), Unit::Usecs);
        assert_eq!(Unit::for_values(&[10_000_000]), Unit::Msecs);
        assert_eq!(human(850_000), "850 us");
        assert_eq!(human(12_340_000), "12.3 ms");
        assert_eq!(human(1_520_000_000), "1.52 s");
        // Each unit starts at its first whole one.
        assert_eq!(human(1_000_000), "1.0 ms");
        assert_eq!(human(1_000_000_000), "1.00 s");
    }
}
