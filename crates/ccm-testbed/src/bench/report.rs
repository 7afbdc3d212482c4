//! Figures shared by the sync benchmark and its peer.

use serde::Serialize;

/// Min, median and max of a series of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Smallest value.
    pub min: f64,
    /// Middle value (the mean of the two middle values of an even count).
    pub median: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// The summary of `values` (all zero when empty; non-finite values are left out). The
    /// median of an even count is the mean of the two middle values.
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self {
                min: 0.0,
                median: 0.0,
                max: 0.0,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Self {
            min: v[0],
            median,
            max: v[n - 1],
        }
    }

    /// Each figure rounded to milliseconds.
    pub(crate) fn rounded(self) -> Self {
        Self {
            min: round3(self.min),
            median: round3(self.median),
            max: round3(self.max),
        }
    }
}

/// Workers by service status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Statuses {
    /// Ready.
    pub ready: u64,
    /// Degraded.
    pub degraded: u64,
    /// Unavailable.
    pub unavailable: u64,
    /// Not synced (ccm only; always 0 after a completed cycle).
    pub unknown: u64,
}

/// `x` rounded to three decimals.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_should_take_the_middle_value_or_the_mean_of_the_two() {
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        assert_eq!(Summary::of(&[]).median, 0.0);
        assert_eq!(Summary::of(&[f64::NAN, 2.0]).median, 2.0);
    }

    #[test]
    fn rounding_should_keep_milliseconds() {
        let s = Summary::of(&[1.23456, 2.0004]).rounded();
        assert_eq!((s.min, s.max), (1.235, 2.0));
    }
}
