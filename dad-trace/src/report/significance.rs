//! Is a before/after difference real, or noise? The two-sample Kolmogorov–Smirnov test on
//! per-pod delays, as Kubernetes' `ClusterLoader2` compares latency distributions.
//!
//! Why this test: it compares whole distributions and assumes no shape (a DAD wait is a
//! random 0..1 s start delay plus whole probe intervals; a tuned pod's is sub-millisecond),
//! and it needs nothing but the two samples. The p-value is the asymptotic Kolmogorov
//! distribution with Stephens' small-sample correction of the statistic (as Numerical
//! Recipes' `kstwo`): close to the exact value from about four pods a side, and on the
//! cautious side (a larger p) below that, so a handful of pods cannot claim a change.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::f64::consts::PI;

use serde::Serialize;

/// The significance level under which a change is called real: 1 %, stricter than the
/// usual 5 % because a CI gate that cries wolf one run in twenty gets switched off.
pub const ALPHA: f64 = 0.01;

/// Which way the distribution moved, from the larger of the two one-sided distances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The second sample's delays are shorter.
    Faster,
    /// The second sample's delays are longer.
    Slower,
    /// Neither side dominates (equal one-sided distances, e.g. identical samples).
    Mixed,
}

/// The outcome of comparing two samples of delays.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ChangeTest {
    /// Test used, for machines reading the JSON.
    pub test: &'static str,
    pub before_count: usize,
    pub after_count: usize,
    /// The largest distance between the two empirical distribution functions, 0..=1.
    pub statistic: f64,
    /// How likely a distance this large is when both samples come from one distribution.
    pub p_value: f64,
    pub direction: Direction,
    pub alpha: f64,
    /// `p_value < alpha`: the change is real, not noise.
    pub significant: bool,
}

impl ChangeTest {
    /// Compares `before` with `after` (delays in any unit); `None` when a side is empty.
    #[must_use]
    pub fn of(before: &[u64], after: &[u64], alpha: f64) -> Option<Self> {
        if before.is_empty() || after.is_empty() {
            return None;
        }
        let (faster, slower) = one_sided_distances(before, after);
        let statistic = faster.max(slower);
        let p_value = p_value(statistic, before.len(), after.len());
        let direction = if faster > slower {
            Direction::Faster
        } else if slower > faster {
            Direction::Slower
        } else {
            Direction::Mixed
        };
        Some(Self {
            test: "kolmogorov-smirnov",
            before_count: before.len(),
            after_count: after.len(),
            statistic,
            p_value,
            direction,
            alpha,
            significant: p_value < alpha,
        })
    }

    /// One sentence for every format: the verdict, then the numbers it rests on.
    #[must_use]
    pub fn sentence(&self) -> String {
        let verdict = match (self.significant, self.direction) {
            (true, Direction::Faster) => "a real change: faster",
            (true, Direction::Slower) => "a real change: slower",
            (true, Direction::Mixed) => "a real change in shape",
            (false, _) => "no real change: the difference could be noise",
        };
        format!(
            "{verdict} (Kolmogorov–Smirnov D {:.2}, p {}, {} vs {} pods; real when p < {})",
            self.statistic,
            format_p(self.p_value),
            self.before_count,
            self.after_count,
            self.alpha
        )
    }
}

/// A p-value as people read it: two significant digits, in exponent form below 0.001.
#[must_use]
pub fn format_p(p: f64) -> String {
    if p >= 0.1 {
        format!("{p:.2}")
    } else if p >= 0.01 {
        format!("{p:.3}")
    } else if p >= 0.001 {
        format!("{p:.4}")
    } else {
        format!("{p:.1e}")
    }
}

/// The two one-sided distances between the empirical distribution functions of `before`
/// (F) and `after` (G): `max(G - F)` (after's delays are shorter: its CDF runs above) and
/// `max(F - G)`. Equal values are stepped over together, so ties count once.
#[must_use]
pub fn one_sided_distances(before: &[u64], after: &[u64]) -> (f64, f64) {
    // Both samples in one sorted walk, each value marked with its side. A `for` over the
    // runs of equal values, not index arithmetic: the walk ends whatever its body does.
    let mut values: Vec<(u64, bool)> = before
        .iter()
        .map(|&value| (value, false))
        .chain(after.iter().map(|&value| (value, true)))
        .collect();
    values.sort_unstable();
    let (before_len, after_len) = (before.len() as f64, after.len() as f64);
    let (mut below_before, mut below_after) = (0_usize, 0_usize);
    let (mut faster, mut slower) = (0.0_f64, 0.0_f64);
    for tied in values.chunk_by(|a, b| a.0 == b.0) {
        let in_after = tied.iter().filter(|(_, in_after)| *in_after).count();
        below_after += in_after;
        below_before += tied.len() - in_after;
        let (before_cdf, after_cdf) = (below_before as f64 / before_len, below_after as f64 / after_len);
        faster = faster.max(after_cdf - before_cdf);
        slower = slower.max(before_cdf - after_cdf);
    }
    (faster, slower)
}

/// The asymptotic p-value of a two-sample statistic `d` with sample sizes `n` and `m`.
#[must_use]
pub fn p_value(d: f64, n: usize, m: usize) -> f64 {
    let effective = (n as f64 * m as f64 / (n + m) as f64).sqrt();
    kolmogorov_survival((effective + 0.12 + 0.11 / effective) * d)
}

/// `P(K > x)` for the Kolmogorov distribution. Two series, each where it converges in a few
/// terms: the theta-function form below 1.18, the alternating one above (as scipy's
/// `kolmogorov`); both agree to 1e-15 where they meet.
#[must_use]
pub fn kolmogorov_survival(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let survival = if x < 1.18 {
        // 1 - sqrt(2 pi) / x * sum exp(-(2k-1)^2 pi^2 / (8 x^2))
        let base = -PI * PI / (8.0 * x * x);
        let sum: f64 = (1..=20_u32).map(|k| (f64::from(2 * k - 1).powi(2) * base).exp()).sum();
        1.0 - (2.0 * PI).sqrt() / x * sum
    } else {
        // 2 sum (-1)^(k-1) exp(-2 k^2 x^2)
        let sum: f64 = (1..=20_u32)
            .map(|k| {
                let term = (-2.0 * f64::from(k * k) * x * x).exp();
                if k % 2 == 1 { term } else { -term }
            })
            .sum();
        2.0 * sum
    };
    survival.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of `scipy.special.kolmogorov` and `kolmogi` (scipy 1.16, an independent
    /// implementation), which include the textbook critical values 1.2238 (10 %), 1.3581 (5 %),
    /// 1.6276 (1 %) and 1.9495 (0.1 %).
    #[test]
    fn the_kolmogorov_distribution_matches_known_values() {
        let close = |x: f64, expected: f64| {
            let got = kolmogorov_survival(x);
            assert!(
                (got - expected).abs() <= 1e-13_f64.max(expected * 1e-9),
                "Q({x}) = {got}, expected {expected}"
            );
        };
        close(0.2, 0.999_999_999_999_495);
        close(0.5, 0.963_945_243_664_875_1);
        close(1.0, 0.269_999_671_677_354_56);
        close(1.5, 0.022_217_962_616_525_127);
        close(2.0, 0.000_670_925_255_779_695_3);
        close(3.0, 3.045_995_948_942_526e-8);
        close(1.223_847_870_217_082_3, 0.10);
        close(1.358_098_639_322_550_7, 0.05);
        close(1.627_623_611_518_950_4, 0.01);
        close(1.949_474_603_504_375_3, 0.001);
        close(0.0, 1.0);
        close(-1.0, 1.0);
        // Where the alternating series would still be 2e-4 off after its 20 terms.
        close(0.1, 1.0);
        assert!(kolmogorov_survival(10.0) < 1e-80);
    }

    /// Each series, summed here to 100 terms, against the function across the switch point:
    /// a wrong term in either shows up on its side.
    #[test]
    fn both_series_agree_where_they_meet() {
        let theta = |x: f64| {
            let sum: f64 = (1..=100_i32)
                .map(|k| (-f64::from(2 * k - 1).powi(2) * PI * PI / (8.0 * x * x)).exp())
                .sum();
            1.0 - (2.0 * PI).sqrt() / x * sum
        };
        let alternating = |x: f64| {
            let sum: f64 = (1..=100_i32)
                .map(|k| f64::from(if k % 2 == 1 { 1 } else { -1 }) * (-2.0 * f64::from(k * k) * x * x).exp())
                .sum();
            2.0 * sum
        };
        for x in [0.9, 1.0, 1.1, 1.17, 1.18, 1.2, 1.3, 1.5] {
            let (t, a) = (theta(x), alternating(x));
            assert!((t - a).abs() < 1e-14, "the series disagree at {x}: {t} {a}");
            assert!((kolmogorov_survival(x) - t).abs() < 1e-14, "{x}");
        }
    }

    #[test]
    fn distances_step_over_ties_together() {
        // F: 1 -> 2/3, 2 -> 1; G: 1 -> 1/3, 2 -> 1. One distance of 1/3, not 2/3.
        let (faster, slower) = one_sided_distances(&[1, 1, 2], &[1, 2, 2]);
        assert!(
            (slower - 1.0 / 3.0).abs() < 1e-12 && faster.abs() < 1e-12,
            "{faster} {slower}"
        );
        let (faster, slower) = one_sided_distances(&[5, 6, 7, 8], &[1, 2, 3, 4]);
        assert!((faster - 1.0).abs() < 1e-12 && slower.abs() < 1e-12);
        // Interleaved: before 1 3 5 7, after 2 4 6 8: F leads by 1/4 at most.
        let (faster, slower) = one_sided_distances(&[1, 3, 5, 7], &[2, 4, 6, 8]);
        assert!(
            faster.abs() < 1e-12 && (slower - 0.25).abs() < 1e-12,
            "{faster} {slower}"
        );
        // Order of the input does not matter.
        assert_eq!(
            one_sided_distances(&[7, 1, 5, 3], &[8, 2, 6, 4]),
            one_sided_distances(&[1, 3, 5, 7], &[2, 4, 6, 8])
        );
    }

    /// Hand-computed: n = m = 4 fully separated: D = 1, effective size sqrt(2),
    /// x = 1.41421 + 0.12 + 0.11 / 1.41421 = 1.61200; scipy's Q(1.61200) = 0.0110656.
    #[test]
    fn separated_samples_are_a_real_change() {
        let test = ChangeTest::of(&[1500, 1600, 1700, 1800], &[1, 2, 3, 4], 0.05).expect("both sides");
        assert_eq!((test.before_count, test.after_count), (4, 4));
        assert!((test.statistic - 1.0).abs() < 1e-12);
        assert!((test.p_value - 0.011_065_637).abs() < 1e-8, "{test:?}");
        assert_eq!(test.direction, Direction::Faster);
        assert!(test.significant);
        assert!(
            test.sentence()
                .starts_with("a real change: faster (Kolmogorov–Smirnov D 1.00, p 0.011, 4 vs 4 pods")
        );
        // At 1 % four pods a side are not enough: the verdict is about evidence, not size.
        let strict = ChangeTest::of(&[1500, 1600, 1700, 1800], &[1, 2, 3, 4], ALPHA).expect("both sides");
        assert!(!strict.significant && strict.sentence().starts_with("no real change"));
        let slower = ChangeTest::of(&[1, 2, 3, 4], &[1500, 1600, 1700, 1800], 0.05).expect("both sides");
        assert_eq!(slower.direction, Direction::Slower);
        assert!(slower.sentence().starts_with("a real change: slower"));
    }

    #[test]
    fn twenty_pods_each_way_and_noise() {
        let before: Vec<u64> = (0..20).map(|i| 1_000 + i * 50).collect();
        let after: Vec<u64> = (0..20).map(|i| 1 + i).collect();
        let test = ChangeTest::of(&before, &after, ALPHA).expect("both sides");
        // x = sqrt(10) + 0.12 + 0.11 / sqrt(10) = 3.31706; scipy's Q(x) = 5.5466e-10.
        assert!((test.p_value / 5.546_616e-10 - 1.0).abs() < 1e-5, "{test:?}");
        assert!(test.significant);
        // The same distribution twice, shuffled: nothing to see.
        let shuffled: Vec<u64> = before.iter().rev().copied().collect();
        let same = ChangeTest::of(&before, &shuffled, ALPHA).expect("both sides");
        assert!(same.statistic.abs() < 1e-12 && (same.p_value - 1.0).abs() < 1e-12);
        assert_eq!(same.direction, Direction::Mixed);
        assert!(!same.significant);
        // Interleaved samples of one process: D = 0.05, p = 1.
        let odd: Vec<u64> = (0..20).map(|i| 2 * i + 1).collect();
        let even: Vec<u64> = (0..20).map(|i| 2 * i).collect();
        let noise = ChangeTest::of(&odd, &even, ALPHA).expect("both sides");
        assert!(
            (noise.statistic - 0.05).abs() < 1e-12 && noise.p_value > 0.99,
            "{noise:?}"
        );
        assert!(ChangeTest::of(&[], &after, ALPHA).is_none());
        assert!(ChangeTest::of(&before, &[], ALPHA).is_none());
    }

    #[test]
    fn p_values_read_well() {
        assert_eq!(format_p(1.0), "1.00");
        assert_eq!(format_p(0.1), "0.10");
        assert_eq!(format_p(0.0123), "0.012");
        assert_eq!(format_p(0.01), "0.010");
        assert_eq!(format_p(0.0099), "0.0099");
        assert_eq!(format_p(0.001), "0.0010");
        assert_eq!(format_p(5.44e-10), "5.4e-10");
    }

    /// `significant` is `p < alpha`, strictly: a p-value equal to alpha is not evidence.
    #[test]
    fn significance_is_strictly_below_alpha() {
        let (before, after) = ([1500, 1600, 1700, 1800], [1, 2, 3, 4]);
        let p = ChangeTest::of(&before, &after, 1.0).expect("both sides").p_value;
        assert!(!ChangeTest::of(&before, &after, p).expect("both sides").significant);
        assert!(
            ChangeTest::of(&before, &after, p * 1.000_001)
                .expect("both sides")
                .significant
        );
        let mixed = ChangeTest {
            direction: Direction::Mixed,
            significant: true,
            ..ChangeTest::of(&before, &after, 1.0).expect("both sides")
        };
        assert!(
            mixed
                .sentence()
                .starts_with("a real change in shape (Kolmogorov–Smirnov D 1.00")
        );
        assert_eq!(ChangeTest::of(&before, &after, 0.5).map(|test| test.alpha), Some(0.5));
        assert_eq!(
            ChangeTest::of(&before, &after, 0.5).map(|test| test.test),
            Some("kolmogorov-smirnov")
        );
    }

    /// Unequal sizes with ties across the samples: before 1 2 2 3 3 3, after 2 3 4.
    /// F: 1 -> 1/6, 2 -> 1/2, 3 -> 1, 4 -> 1; G: 1 -> 0, 2 -> 1/3, 3 -> 2/3, 4 -> 1.
    #[test]
    fn distances_of_unequal_samples() {
        let (faster, slower) = one_sided_distances(&[3, 2, 1, 3, 2, 3], &[4, 2, 3]);
        assert!(faster.abs() < 1e-12, "{faster}");
        assert!((slower - 1.0 / 3.0).abs() < 1e-12, "{slower}");
        let (faster, slower) = one_sided_distances(&[4, 2, 3], &[3, 2, 1, 3, 2, 3]);
        assert!(
            (faster - 1.0 / 3.0).abs() < 1e-12 && slower.abs() < 1e-12,
            "{faster} {slower}"
        );
        // p for D = 1/3, n = 6, m = 3: effective sqrt(2), x = (1.41421 + 0.12 + 0.07778) / 3.
        let x = (2.0_f64.sqrt() + 0.12 + 0.11 / 2.0_f64.sqrt()) / 3.0;
        assert!((p_value(1.0 / 3.0, 6, 3) - kolmogorov_survival(x)).abs() < 1e-15);
        assert!((p_value(1.0 / 3.0, 3, 6) - kolmogorov_survival(x)).abs() < 1e-15);
    }
}
