//! Medians with their spread: a benchmark figure is a median over repeats, shown with the
//! smallest and largest repeat so the reader sees its noise.

#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut values: Vec<f64> = values.into_iter().filter(|value| value.is_finite()).collect();
        values.sort_by(f64::total_cmp);
        let median = match values.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => values[n / 2],
            n => f64::midpoint(values[n / 2 - 1], values[n / 2]),
        };
        Self {
            median,
            min: values.first().copied().unwrap_or(f64::NAN),
            max: values.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// `median [min..max]` with `decimals`.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.decimals$} [{:.decimals$}..{:.decimals$}]",
            self.median, self.min, self.max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn median_of_odd_and_even_counts() {
        let odd = Spread::of([3.0, 1.0, 2.0]);
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        let even = Spread::of([4.0, 1.0, 2.0, 3.0]);
        assert!((even.median - 2.5).abs() < f64::EPSILON);
        assert!((Spread::of([f64::NAN, 5.0]).median - 5.0).abs() < f64::EPSILON);
        assert!(Spread::of([]).median.is_nan());
    }
}
