//! Partial generation options: a persona's defaults and per-agent
//! `KEY=VALUE` overrides, named like [`Options`] fields.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::engine::Options;

/// The option names `KEY=VALUE` and persona files accept.
pub const KEYS: [&str; 10] = [
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "seed",
    "num_predict",
    "num_ctx",
    "stop",
];

/// Options a persona or a flag sets; unset fields leave the value below
/// them alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_last_n: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
}

fn number<T: std::str::FromStr>(key: &str, value: &str, what: &str) -> Result<T> {
    match value.trim().parse() {
        Ok(v) => Ok(v),
        Err(_) => bail!("`{key}` takes {what}, not `{value}`"),
    }
}

impl OptionOverrides {
    /// Sets one option from text. `stop` adds a stop string each time.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        const WHOLE: &str = "a whole number";
        const REAL: &str = "a number";
        match key {
            "temperature" => self.temperature = Some(number(key, value, REAL)?),
            "top_k" => self.top_k = Some(number(key, value, WHOLE)?),
            "top_p" => self.top_p = Some(number(key, value, REAL)?),
            "min_p" => self.min_p = Some(number(key, value, REAL)?),
            "repeat_penalty" => self.repeat_penalty = Some(number(key, value, REAL)?),
            "repeat_last_n" => self.repeat_last_n = Some(number(key, value, WHOLE)?),
            "seed" => self.seed = Some(number(key, value, WHOLE)?),
            "num_predict" => self.num_predict = Some(number(key, value, WHOLE)?),
            "num_ctx" => self.num_ctx = Some(number(key, value, WHOLE)?),
            "stop" => self
                .stop
                .get_or_insert_with(Vec::new)
                .push(value.to_string()),
            _ => bail!(
                "unknown option `{key}` (expected one of {})",
                KEYS.join(", ")
            ),
        }
        Ok(())
    }

    /// Parses `KEY=VALUE` assignments given to `flag` (for the messages).
    pub fn parse_assignments(flag: &str, assignments: &[String]) -> Result<Self> {
        let mut o = Self::default();
        for a in assignments {
            let Some((key, value)) = a.split_once('=') else {
                bail!("invalid {flag} `{a}`: expected KEY=VALUE, e.g. {flag} temperature=0.2");
            };
            o.set(key.trim(), value)
                .map_err(|e| anyhow::anyhow!("invalid {flag} `{a}`: {e}"))?;
        }
        Ok(o)
    }

    /// Overrides the fields of `o` this set gives.
    pub fn apply(&self, o: &mut Options) {
        macro_rules! set {
            ($($f:ident),*) => {$( if let Some(v) = self.$f { o.$f = v; } )*};
        }
        set!(
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n,
            num_ctx
        );
        if self.seed.is_some() {
            o.seed = self.seed;
        }
        if self.num_predict.is_some() {
            o.num_predict = self.num_predict;
        }
        if let Some(s) = &self.stop {
            o.stop = s.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments() {
        let o = OptionOverrides::parse_assignments(
            "--insight",
            &[
                "temperature=0.2".into(),
                "top_k=5".into(),
                "seed=7".into(),
                "stop=###".into(),
                "stop=a=b".into(),
                " num_ctx =1024".into(),
            ],
        )
        .unwrap();
        let mut opts = Options::default();
        o.apply(&mut opts);
        assert_eq!(opts.temperature, 0.2);
        assert_eq!(opts.top_k, 5);
        assert_eq!(opts.seed, Some(7));
        assert_eq!(opts.stop, ["###", "a=b"]);
        assert_eq!(opts.num_ctx, 1024);
        assert_eq!(opts.top_p, 0.9, "untouched");
        assert_eq!(opts.num_predict, None);
    }

    #[test]
    fn bad_assignments_are_one_line_each() {
        for (a, want) in [
            (
                "temperature",
                "invalid --collector `temperature`: expected KEY=VALUE",
            ),
            (
                "top_k=abc",
                "invalid --collector `top_k=abc`: `top_k` takes a whole number, not `abc`",
            ),
            ("top_k=-1", "`top_k` takes a whole number, not `-1`"),
            (
                "foo=1",
                "unknown option `foo` (expected one of temperature, top_k,",
            ),
            ("temperature=hot", "`temperature` takes a number, not `hot`"),
        ] {
            let e = OptionOverrides::parse_assignments("--collector", &[a.into()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{a}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn toml_rejects_unknown_keys() {
        let o: OptionOverrides = toml::from_str("temperature = 0.5\nnum_ctx = 4096").unwrap();
        assert_eq!((o.temperature, o.num_ctx), (Some(0.5), Some(4096)));
        assert!(toml::from_str::<OptionOverrides>("temprature = 0.5").is_err());
    }
}
