//! Generation options, with Ollama's names, defaults and meanings.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Every option in force for one generation. Serialized as-is into
/// `generate --format json` (`options`) and the reports' `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Softmax temperature; 0 selects greedy decoding (the most likely token,
    /// with no penalty or randomness).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: f32,
    /// Penalty for tokens among the last `repeat_last_n` (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at (0 = off).
    pub repeat_last_n: usize,
    /// Random seed; `None` draws one (the JSON output records the one used).
    pub seed: Option<u64>,
    /// Most tokens to generate (`None` = until a stop or the context is full).
    pub num_predict: Option<usize>,
    /// Strings that end generation; the text stops before them.
    pub stop: Vec<String>,
    /// Context length in tokens: prompt plus generation.
    pub num_ctx: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: None,
            num_predict: None,
            stop: Vec::new(),
            num_ctx: 2048,
        }
    }
}

impl Options {
    /// Refuses values that have no meaning, in one line naming the flag.
    /// `max_ctx` is the context the model was trained for.
    pub fn validate(&self, max_ctx: usize) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            bail!(
                "invalid temperature {}: must be 0 or more",
                self.temperature
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("invalid top_p {}: must be in (0, 1]", self.top_p);
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            bail!("invalid min_p {}: must be in [0, 1]", self.min_p);
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            bail!(
                "invalid repeat_penalty {}: must be positive",
                self.repeat_penalty
            );
        }
        if self.num_ctx == 0 {
            bail!("invalid num_ctx 0: must be at least 1");
        }
        if self.num_ctx > max_ctx {
            bail!(
                "invalid num_ctx {}: the model was trained for at most {max_ctx} tokens",
                self.num_ctx
            );
        }
        if self.num_predict == Some(0) {
            bail!("invalid num_predict 0: must be at least 1 (omit it for no limit)");
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            bail!("invalid stop: stop strings must not be empty");
        }
        Ok(())
    }

    /// Tokens kept free for generation when a long prompt is truncated:
    /// `num_predict` when set, else a quarter of the context, never more
    /// than half of it.
    pub fn generation_reserve(&self) -> usize {
        let half = (self.num_ctx / 2).max(1);
        self.num_predict.unwrap_or(self.num_ctx / 4).clamp(1, half)
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_ollamas() {
        let o = Options::default();
        assert_eq!(
            (o.temperature, o.top_k, o.top_p, o.min_p),
            (0.8, 40, 0.9, 0.0)
        );
        assert_eq!(
            (o.repeat_penalty, o.repeat_last_n, o.num_ctx),
            (1.1, 64, 2048)
        );
        assert!(o.seed.is_none() && o.num_predict.is_none());
        o.validate(32768).unwrap();
    }

    #[test]
    fn invalid_values_are_refused_with_their_name() {
        let cases: Vec<(Options, &str)> = vec![
            (
                Options {
                    temperature: -0.1,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                Options {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                Options {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                Options {
                    top_p: 1.5,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                Options {
                    min_p: -1.0,
                    ..Default::default()
                },
                "min_p",
            ),
            (
                Options {
                    repeat_penalty: 0.0,
                    ..Default::default()
                },
                "repeat_penalty",
            ),
            (
                Options {
                    num_ctx: 0,
                    ..Default::default()
                },
                "num_ctx",
            ),
            (
                Options {
                    num_ctx: 40000,
                    ..Default::default()
                },
                "num_ctx",
            ),
            (
                Options {
                    num_predict: Some(0),
                    ..Default::default()
                },
                "num_predict",
            ),
            (
                Options {
                    stop: vec![String::new()],
                    ..Default::default()
                },
                "stop",
            ),
        ];
        for (o, name) in cases {
            let err = o.validate(32768).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn reserve_is_bounded() {
        let o = Options {
            num_ctx: 100,
            num_predict: Some(500),
            ..Default::default()
        };
        assert_eq!(o.generation_reserve(), 50);
        let o = Options {
            num_ctx: 100,
            num_predict: None,
            ..Default::default()
        };
        assert_eq!(o.generation_reserve(), 25);
        let o = Options {
            num_ctx: 100,
            num_predict: Some(10),
            ..Default::default()
        };
        assert_eq!(o.generation_reserve(), 10);
    }
}
