//! Statistics over repeated runs.

use serde::{Deserialize, Serialize};

/// Mean, spread and range of one figure over runs, with the values
/// themselves so anyone can recompute them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (divides by n - 1); 0 for fewer than two values.
    pub stddev: f64,
    /// Coefficient of variation, `stddev / mean` (a fraction, not a percent);
    /// 0 when the mean is 0.
    pub cv: f64,
    pub min: f64,
    pub max: f64,
    pub values: Vec<f64>,
}

impl Stat {
    /// Describes `values` (all zeros for none).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Self {
                n: 0,
                mean: 0.0,
                stddev: 0.0,
                cv: 0.0,
                min: 0.0,
                max: 0.0,
                values: Vec::new(),
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let stddev = if n < 2 {
            0.0
        } else {
            let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
            (ss / (n - 1) as f64).sqrt()
        };
        let cv = if mean != 0.0 { stddev / mean } else { 0.0 };
        Self {
            n,
            mean,
            stddev,
            cv,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            values: values.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_statistics() {
        let s = Stat::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(s.n, 8);
        assert_eq!(s.mean, 5.0);
        // Sum of squares 32 over 7.
        assert!((s.stddev - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert!((s.cv - s.stddev / 5.0).abs() < 1e-12);
        assert_eq!((s.min, s.max), (2.0, 9.0));

        let one = Stat::of(&[3.5]);
        assert_eq!((one.mean, one.stddev, one.cv), (3.5, 0.0, 0.0));
        let none = Stat::of(&[]);
        assert_eq!((none.n, none.mean), (0, 0.0));
        assert_eq!(Stat::of(&[0.0, 0.0]).cv, 0.0);
    }
}
