//! Batch report runs: a TOML job file expanded into a deterministic list of
//! jobs, each a `chimera report` run into its own folder, with a manifest
//! for `--resume`, deterministic shards, an index and a merge of shards.
//!
//! # Job file
//!
//! ```toml
//! output_dir = "reports/batch"      # optional; --output-dir wins
//!
//! [defaults]                        # every job: any `chimera report` flag
//! input = "examples/artifacts"      # by its long name (num_ctx or num-ctx)
//! agent = "both"
//! runs = 3                          # N runs per job (report --runs)
//! num_predict = 256
//! seed = 42
//!
//! [grid]                            # every combination of these values
//! model = ["gemma3-270m-q4_k_m", "gemma3-1b-it-q4_k_m"]
//! scenario = ["report"]
//! num_ctx = [1024, 2048]
//! temperature = [0.2, 0.8]
//! ```
//!
//! `[[grid]]` (an array of tables) adds several grids, expanded one after
//! the other; a job that two grids both produce runs once. A scalar in a
//! grid is a one-value axis; an array inside a grid value's array (`stop =
//! [["\n\n"], ["###"]]`) is a repeated flag. Keys become flags (`num_ctx =
//! 2048` is `--num-ctx 2048`, `true` is the bare flag, `false` leaves it
//! out), checked against `chimera report`'s own parser before any job
//! runs, so a flag it does not know (a misspelt `num_gpus`) fails the
//! whole file at once. Two keys are chimera batch's own: `model` (default
//! the registry's default) and `scenario`: `report` is the plain report;
//! any other value (the scenarios `baseline_vs_chimera`, `chimera_hetero`,
//! `chimera_homo`) is passed on as `--scenario VALUE`. `output_dir` and
//! `overwrite` are set by the batch and refused in a job file. Relative
//! paths are relative to the working directory, as on the command line.
//!
//! # Jobs and their ids
//!
//! Each grid's axes are ordered `model`, `scenario`, then the other keys
//! alphabetically; the first varies slowest. A job's id is a readable slug
//! of its model, scenario and its grid's other values, then 8 hex digits of
//! the SHA-256 of all its settings (defaults included), e.g.
//! `gemma3-270m-q4_k_m_report_num_ctx-1024_temperature-0.2_3f9a1c2b`: the
//! same settings give the same id whatever the file's order, and changed
//! defaults give new ids (so `--resume` never mistakes them for done).
//!
//! # Shards
//!
//! `--shard I/N` runs the jobs whose 0-based index `k` (in expansion
//! order) has `k % N == I - 1`: the N shards of one job file cover every
//! job exactly once.

pub mod compare;
pub mod index;
pub mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A job's settings: flag names (underscored) to values.
pub type Settings = BTreeMap<String, Value>;

/// Keys the batch sets itself.
const RESERVED: [&str; 2] = ["output_dir", "overwrite"];

/// The scenario that is the plain `chimera report`.
pub const PLAIN_SCENARIO: &str = "report";

/// One expanded job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// 0-based position in the expansion (what shards slice by).
    pub index: usize,
    pub id: String,
    pub settings: Settings,
}

impl Job {
    pub fn model(&self) -> &str {
        self.settings
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn scenario(&self) -> &str {
        self.settings
            .get("scenario")
            .and_then(Value::as_str)
            .unwrap_or(PLAIN_SCENARIO)
    }
}

/// A job file, parsed and expanded.
#[derive(Debug, Clone)]
pub struct JobFile {
    pub path: PathBuf,
    pub output_dir: Option<PathBuf>,
    pub jobs: Vec<Job>,
    /// Names the whole expansion: a hash of every job id in order.
    pub grid_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    output_dir: Option<PathBuf>,
    #[serde(default)]
    defaults: toml::Table,
    grid: Option<Grids>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Grids {
    One(toml::Table),
    Many(Vec<toml::Table>),
}

/// A deterministic slice of the jobs: `I/N`, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid shard `{s}`: {why}");
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| bad("expected I/N, e.g. 1/4"))?;
        let i: usize = i
            .trim()
            .parse()
            .map_err(|_| bad("I is not a whole number"))?;
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| bad("N is not a whole number"))?;
        if n == 0 {
            return Err(bad("N must be at least 1"));
        }
        if i == 0 || i > n {
            return Err(bad(&format!("I must be between 1 and {n}")));
        }
        Ok(Shard { index: i, count: n })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether job `index` (0-based) belongs to this shard.
    pub fn contains(&self, index: usize) -> bool {
        index % self.count == self.index - 1
    }
}

/// The jobs of `shard` (all without one), in order.
pub fn slice(jobs: &[Job], shard: Option<Shard>) -> Vec<Job> {
    jobs.iter()
        .filter(|j| shard.is_none_or(|s| s.contains(j.index)))
        .cloned()
        .collect()
}

fn key(k: &str) -> String {
    k.trim().replace('-', "_")
}

fn json_value(v: &toml::Value, what: &str) -> Result<Value> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .with_context(|| format!("{what}: {f} is not a finite number"))?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| match x {
                    toml::Value::Array(_) | toml::Value::Table(_) => {
                        bail!("{what}: a list inside a list of flag values")
                    }
                    _ => json_value(x, what),
                })
                .collect::<Result<_>>()?,
        ),
        toml::Value::Datetime(_) | toml::Value::Table(_) => {
            bail!("{what}: only strings, numbers, booleans and lists are flag values")
        }
    })
}

fn check_key(k: &str, section: &str) -> Result<()> {
    anyhow::ensure!(
        !RESERVED.contains(&k),
        "[{section}] {k}: set by chimera batch (use --output-dir or output_dir at the top of the job file)"
    );
    anyhow::ensure!(
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "[{section}] `{k}` is not a flag name"
    );
    Ok(())
}

/// A value as it appears in a slug or a table cell.
pub fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(display_value).collect::<Vec<_>>().join(";"),
        other => other.to_string(),
    }
}

/// The readable part of a model name: a path's file stem.
fn model_slug(m: &str) -> String {
    let p = Path::new(m);
    if m.contains('/') || m.contains('\\') || m.ends_with(".gguf") {
        if let Some(stem) = p.file_stem() {
            return stem.to_string_lossy().into_owned();
        }
    }
    m.to_string()
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The id of a job with these settings, whose grid varies `axes`.
pub fn job_id(settings: &Settings, axes: &[String]) -> String {
    let canonical = serde_json::to_string(settings).expect("settings serialize");
    let hash = hex(&Sha256::digest(canonical.as_bytes()));
    let mut parts = vec![
        model_slug(
            settings
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        ),
        settings
            .get("scenario")
            .map(display_value)
            .unwrap_or_else(|| PLAIN_SCENARIO.into()),
    ];
    for a in axes {
        if a == "model" || a == "scenario" {
            continue;
        }
        if let Some(v) = settings.get(a) {
            parts.push(format!("{a}-{}", display_value(v)));
        }
    }
    let mut slug = sanitize(&parts.join("_"));
    if slug.len() > 96 {
        let cut = (0..=96)
            .rev()
            .find(|&i| slug.is_char_boundary(i))
            .unwrap_or(0);
        slug.truncate(cut);
    }
    format!("{slug}_{}", &hash[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Axis order: model, scenario, then the rest alphabetically.
fn axis_order(a: &str) -> (u8, String) {
    match a {
        "model" => (0, String::new()),
        "scenario" => (1, String::new()),
        other => (2, other.to_string()),
    }
}

impl JobFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read job file {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses and expands a job file (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let ctx = || format!("job file {}", path.display());
        let raw: Raw = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}", e.message().trim().replace('\n', "; ")))
            .with_context(ctx)?;
        let jobs = expand(&raw).with_context(ctx)?;
        let mut h = Sha256::new();
        for j in &jobs {
            h.update(j.id.as_bytes());
            h.update(b"\n");
        }
        Ok(JobFile {
            path: path.to_path_buf(),
            output_dir: raw.output_dir,
            jobs,
            grid_id: hex(&h.finalize())[..12].to_string(),
        })
    }
}

fn expand(raw: &Raw) -> Result<Vec<Job>> {
    let mut base = Settings::new();
    base.insert(
        "model".into(),
        Value::String(crate::models::Registry::builtin()?.default),
    );
    base.insert("scenario".into(), Value::String(PLAIN_SCENARIO.into()));
    for (k, v) in &raw.defaults {
        let k = key(k);
        check_key(&k, "defaults")?;
        base.insert(k.clone(), json_value(v, &format!("[defaults] {k}"))?);
    }
    let grids: Vec<&toml::Table> = match &raw.grid {
        None => vec![],
        Some(Grids::One(t)) => vec![t],
        Some(Grids::Many(v)) => v.iter().collect(),
    };
    let empty = toml::Table::new();
    let grids = if grids.is_empty() {
        vec![&empty]
    } else {
        grids
    };
    let mut jobs: Vec<Job> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (g, grid) in grids.iter().enumerate() {
        let section = if raw
            .grid
            .as_ref()
            .is_some_and(|x| matches!(x, Grids::Many(_)))
        {
            format!("grid {}", g + 1)
        } else {
            "grid".to_string()
        };
        let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
        for (k, v) in grid.iter() {
            let k = key(k);
            check_key(&k, &section)?;
            let what = format!("[{section}] {k}");
            let values = match v {
                toml::Value::Array(a) => a
                    .iter()
                    .map(|x| json_value(x, &what))
                    .collect::<Result<Vec<_>>>()?,
                other => vec![json_value(other, &what)?],
            };
            anyhow::ensure!(!values.is_empty(), "{what}: an empty list gives no jobs");
            axes.push((k, values));
        }
        axes.sort_by_key(|(k, _)| axis_order(k));
        let names: Vec<String> = axes.iter().map(|(k, _)| k.clone()).collect();
        let total: usize = axes.iter().map(|(_, v)| v.len()).product();
        for n in 0..total {
            let mut s = base.clone();
            let mut rest = n;
            for (k, values) in axes.iter().rev() {
                s.insert(k.clone(), values[rest % values.len()].clone());
                rest /= values.len();
            }
            for k in ["model", "scenario"] {
                anyhow::ensure!(
                    s.get(k).is_some_and(Value::is_string),
                    "[{section}] {k}: must be a string"
                );
            }
            let id = job_id(&s, &names);
            if seen.insert(id.clone()) {
                jobs.push(Job {
                    index: jobs.len(),
                    id,
                    settings: s,
                });
            }
        }
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_specs() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        for (bad, why) in [
            ("3/2", "between 1 and 2"),
            ("0/2", "between 1 and 2"),
            ("1/0", "at least 1"),
            ("x/2", "I is not"),
            ("2", "expected I/N"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn ids_ignore_key_order_and_follow_every_setting() {
        let a = JobFile::parse(
            "[grid]\nmodel=['m']\nnum_ctx=[1024]\ntemperature=[0.5]\n",
            Path::new("a"),
        )
        .unwrap();
        let b = JobFile::parse(
            "[grid]\ntemperature=[0.5]\nnum-ctx=[1024]\nmodel=['m']\n",
            Path::new("b"),
        )
        .unwrap();
        assert_eq!(a.jobs[0].id, b.jobs[0].id);
        assert!(a.jobs[0]
            .id
            .starts_with("m_report_num_ctx-1024_temperature-0.5_"));
        let c = JobFile::parse(
            "[defaults]\nseed=1\n[grid]\nmodel=['m']\nnum_ctx=[1024]\ntemperature=[0.5]\n",
            Path::new("c"),
        )
        .unwrap();
        assert_ne!(a.jobs[0].id, c.jobs[0].id);
        assert_eq!(a.grid_id, b.grid_id);
    }
}
