//! The consolidated metrics table: every performance figure in the CSV and
//! JSON files, under one canonical name and unit.
//!
//! # Canonical metrics
//!
//! | metric                | unit  | recognised keys (examples) |
//! |-----------------------|-------|----------------------------|
//! | `eval_tokens_per_s`   | tok/s | `tokens_s`, `tokens_per_second`, `throughput`, `tok/s`, `tps` |
//! | `prompt_tokens_per_s` | tok/s | the same with `prompt` or `prefill` in the key |
//! | `ttft_ms`             | ms    | `ttft_s`, `ttft_ms`, `time_to_first_token_ms`, `first_token_ms` |
//! | `latency_ms`          | ms    | `latency_ms`, `response_time_ms`, `mean_time_ms`, `p95_ms` |
//! | `load_ms`             | ms    | `load_s`, `load_duration` (Ollama, ns) |
//! | `prompt_eval_ms`      | ms    | `prompt_eval_s`, `prompt_eval_duration`, `prefill_ms` |
//! | `eval_ms`             | ms    | `eval_s`, `eval_duration`, `decode_ms` |
//! | `total_ms`            | ms    | `total_duration`, `total_time_s`, `total_ms` |
//! | `compile_ms`          | ms    | `compile_time_s`, `compilation_ms`, `build_time_s` |
//! | `duration_ms`         | ms    | any other key with a time unit (`gpu__time_duration.sum` [us]) |
//! | `memory_bytes`        | bytes | `memory_used_mb`, `vram_gb`, `rss_bytes`, `peak_memory_mb` |
//! | `gpu_utilization_pct` | %     | `utilization_gpu`, `gpu_util`, `gpu_usage_percent` |
//! | `cpu_utilization_pct` | %     | `cpu_percent`, `cpu_util` |
//!
//! The names match the ones the engine uses for its own measurements
//! (`ttft_ms`, `prompt_eval_ms`, `eval_tokens_per_s`, ...). Ollama's
//! `tokens_s` is eval_count / eval_duration, hence `eval_tokens_per_s`.
//!
//! # Reading a key
//! Keys are split into lowercase words at `_`, `.`, `-`, spaces, `/`
//! (read as "per"), `%` (read as "pct") and camelCase humps. A statistic word
//! (`mean`/`avg`, `median`/`p50`, `min`, `max`/`peak`, `std`, `p90`, `p95`,
//! `p99`) becomes the row's `stat`. The unit comes, in order of precedence,
//! from the value itself (`"12.5 ms"`, `"87%"`), a CSV units row or a JSON
//! `"unit"` field, then the last unit word of the key.
//!
//! # Unit normalisation
//! * time: `ns`, `us`, `ms`, `s` (`sec`, `seconds`, Nsight's `usecond`, ...) -> **ms**;
//!   Ollama's unit-less `total_duration`, `load_duration`,
//!   `prompt_eval_duration`, `eval_duration` are nanoseconds. Any other time
//!   key without a unit is left out: its unit is unknown.
//! * size: `bytes`, `kb`/`kib`, `mb`/`mib`, `gb`/`gib`, `tb` -> **bytes**, read as
//!   binary multiples (1 MB = 1,048,576 bytes) the way nvidia-smi and psutil
//!   report memory. Memory needs a size unit, else it is left out.
//! * throughput -> **tok/s**; utilisation -> **%** (values are kept as written).
//! * A key with a unit that does not fit the metric (`throughput` in `%`,
//!   `Kbyte/block`, `cycle`) is left out.
//!
//! # What is not a measurement
//! * Keys that describe comparisons or settings: `delta`, `diff`, `change`,
//!   `improvement`, `reduction`, `speedup`, `ratio`, `target`, `threshold`,
//!   `limit`, `budget`, `timeout`, `interval`, `timestamp`, `count`, `error`, ...
//!   and memory capacities (`total`, `free`, `available`, `shared`, clocks).
//! * Values in a CSV row whose `error`/`exception`/`failure` column is filled
//!   or whose `status` says failed, and values inside a JSON object with a
//!   non-empty `error` or `success: false`: counted in
//!   [`MetricExclusions::failed_runs`].
//! * Zero timings and throughputs (what harnesses write for a run that did
//!   not happen) and negative values: counted in
//!   [`MetricExclusions::non_positive`].
//!
//! Markdown is not mined for metrics: its tables restate the CSV/JSON data,
//! and counting them again would skew the statistics. Its numbers still
//! feed [`super::Ingest::numbers`].

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::{Content, CsvTable, FileRecord, MetricExclusions};

/// A canonical metric name (see the module docs for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    EvalTokensPerS,
    PromptTokensPerS,
    TtftMs,
    LatencyMs,
    LoadMs,
    PromptEvalMs,
    EvalMs,
    TotalMs,
    CompileMs,
    DurationMs,
    MemoryBytes,
    GpuUtilizationPct,
    CpuUtilizationPct,
}

impl Metric {
    pub const ALL: [Metric; 13] = [
        Metric::EvalTokensPerS,
        Metric::PromptTokensPerS,
        Metric::TtftMs,
        Metric::LatencyMs,
        Metric::LoadMs,
        Metric::PromptEvalMs,
        Metric::EvalMs,
        Metric::TotalMs,
        Metric::CompileMs,
        Metric::DurationMs,
        Metric::MemoryBytes,
        Metric::GpuUtilizationPct,
        Metric::CpuUtilizationPct,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::EvalTokensPerS => "eval_tokens_per_s",
            Metric::PromptTokensPerS => "prompt_tokens_per_s",
            Metric::TtftMs => "ttft_ms",
            Metric::LatencyMs => "latency_ms",
            Metric::LoadMs => "load_ms",
            Metric::PromptEvalMs => "prompt_eval_ms",
            Metric::EvalMs => "eval_ms",
            Metric::TotalMs => "total_ms",
            Metric::CompileMs => "compile_ms",
            Metric::DurationMs => "duration_ms",
            Metric::MemoryBytes => "memory_bytes",
            Metric::GpuUtilizationPct => "gpu_utilization_pct",
            Metric::CpuUtilizationPct => "cpu_utilization_pct",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Metric::EvalTokensPerS | Metric::PromptTokensPerS => Unit::TokPerS,
            Metric::MemoryBytes => Unit::Bytes,
            Metric::GpuUtilizationPct | Metric::CpuUtilizationPct => Unit::Percent,
            _ => Unit::Ms,
        }
    }

    /// Timings and throughputs, where 0 means "no measurement".
    fn zero_is_missing(self) -> bool {
        !matches!(
            self,
            Metric::MemoryBytes | Metric::GpuUtilizationPct | Metric::CpuUtilizationPct
        )
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A normalised unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Unit {
    #[serde(rename = "ms")]
    Ms,
    #[serde(rename = "tok/s")]
    TokPerS,
    #[serde(rename = "bytes")]
    Bytes,
    #[serde(rename = "%")]
    Percent,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::TokPerS => "tok/s",
            Unit::Bytes => "bytes",
            Unit::Percent => "%",
        }
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which statistic a value is, when the key says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    Mean,
    Median,
    Min,
    Max,
    P90,
    P95,
    P99,
    Std,
}

impl Stat {
    pub fn as_str(self) -> &'static str {
        match self {
            Stat::Mean => "mean",
            Stat::Median => "median",
            Stat::Min => "min",
            Stat::Max => "max",
            Stat::P90 => "p90",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
            Stat::Std => "std",
        }
    }
}

/// One performance figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRow {
    /// File path relative to ROOT.
    pub file: String,
    /// Where in the file: `$.results[3].ttft_s` or `row 4, column "tokens_s"`
    /// (CSV rows count from 1 after the header and any units row).
    pub locator: String,
    pub metric: Metric,
    pub stat: Option<Stat>,
    /// The value in `unit`.
    pub value: f64,
    pub unit: Unit,
    /// The key (JSON) or column header (CSV) the value was found under.
    pub raw_key: String,
    /// The value as written, before unit conversion.
    pub raw_value: f64,
    /// The unit it was written in (`s`, `ns`, `MiB`, ...).
    pub raw_unit: &'static str,
    /// What the value belongs to, from a nearby `model`/`backend`/`name`/`config_name` field.
    pub label: Option<String>,
}

/// The header of `--metrics-csv`.
pub const CSV_HEADER: [&str; 10] = [
    "file",
    "locator",
    "metric",
    "stat",
    "value",
    "unit",
    "raw_key",
    "raw_value",
    "raw_unit",
    "label",
];

impl MetricRow {
    /// The row as CSV fields, in [`CSV_HEADER`] order.
    pub fn csv_record(&self) -> [String; 10] {
        [
            self.file.clone(),
            self.locator.clone(),
            self.metric.as_str().to_string(),
            self.stat.map(Stat::as_str).unwrap_or("").to_string(),
            self.value.to_string(),
            self.unit.as_str().to_string(),
            self.raw_key.clone(),
            self.raw_value.to_string(),
            self.raw_unit.to_string(),
            self.label.clone().unwrap_or_default(),
        ]
    }
}

// ---------------------------------------------------------------------------
// Units

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawUnit {
    Ns,
    Us,
    Ms,
    S,
    Bytes,
    KiB,
    MiB,
    GiB,
    TiB,
    Percent,
    TokPerS,
}

impl RawUnit {
    fn is_time(self) -> bool {
        matches!(self, RawUnit::Ns | RawUnit::Us | RawUnit::Ms | RawUnit::S)
    }

    fn is_size(self) -> bool {
        matches!(
            self,
            RawUnit::Bytes | RawUnit::KiB | RawUnit::MiB | RawUnit::GiB | RawUnit::TiB
        )
    }

    /// Multiplier to the canonical unit (ms, bytes, %, tok/s).
    fn factor(self) -> f64 {
        match self {
            RawUnit::Ns => 1e-6,
            RawUnit::Us => 1e-3,
            RawUnit::Ms => 1.0,
            RawUnit::S => 1e3,
            RawUnit::Bytes => 1.0,
            RawUnit::KiB => 1024.0,
            RawUnit::MiB => 1024.0 * 1024.0,
            RawUnit::GiB => 1024.0 * 1024.0 * 1024.0,
            RawUnit::TiB => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            RawUnit::Percent | RawUnit::TokPerS => 1.0,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RawUnit::Ns => "ns",
            RawUnit::Us => "us",
            RawUnit::Ms => "ms",
            RawUnit::S => "s",
            RawUnit::Bytes => "bytes",
            RawUnit::KiB => "KiB",
            RawUnit::MiB => "MiB",
            RawUnit::GiB => "GiB",
            RawUnit::TiB => "TiB",
            RawUnit::Percent => "%",
            RawUnit::TokPerS => "tok/s",
        }
    }
}

/// A unit stated next to a value (units row, `"unit"` field, `"12 ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnitHint {
    None,
    Known(RawUnit),
    /// A unit was stated but is not one we normalise (`cycle`, `Kbyte/block`).
    Other,
}

fn unit_word(t: &str) -> Option<RawUnit> {
    Some(match t {
        "ns" | "nsec" | "nsecond" | "nanosecond" | "nanoseconds" => RawUnit::Ns,
        "us" | "µs" | "μs" | "usec" | "usecond" | "microsecond" | "microseconds" => RawUnit::Us,
        "ms" | "msec" | "msecond" | "millis" | "millisecond" | "milliseconds" => RawUnit::Ms,
        "s" | "sec" | "secs" | "second" | "seconds" => RawUnit::S,
        "byte" | "bytes" => RawUnit::Bytes,
        "kb" | "kib" | "kbyte" | "kbytes" => RawUnit::KiB,
        "mb" | "mib" | "mbyte" | "mbytes" => RawUnit::MiB,
        "gb" | "gib" | "gbyte" | "gbytes" => RawUnit::GiB,
        "tb" | "tib" | "tbyte" | "tbytes" => RawUnit::TiB,
        "pct" | "percent" | "percentage" => RawUnit::Percent,
        "tps" => RawUnit::TokPerS,
        _ => return None,
    })
}

fn is_second_word(t: &str) -> bool {
    matches!(t, "s" | "sec" | "secs" | "second" | "seconds")
}

fn is_token_word(t: &str) -> bool {
    matches!(t, "tok" | "toks" | "token" | "tokens")
}

/// `tokens_s`, `tokens_per_second`, `tok/s`, ...
fn tokens_per_second(t: &[String]) -> bool {
    t.iter().enumerate().any(|(i, w)| {
        is_token_word(w)
            && match t.get(i + 1).map(String::as_str) {
                Some(n) if is_second_word(n) => true,
                Some("per") => t.get(i + 2).is_some_and(|n| is_second_word(n)),
                _ => false,
            }
    })
}

/// Parses a stated unit such as `ms`, `us`, `Mbyte`, `%`, `tok/s`.
pub(crate) fn parse_unit(s: &str) -> UnitHint {
    if s.trim().is_empty() {
        return UnitHint::None;
    }
    let t = tokenize(s);
    if t.is_empty() {
        return UnitHint::None;
    }
    if tokens_per_second(&t) {
        return UnitHint::Known(RawUnit::TokPerS);
    }
    match t.as_slice() {
        [one] => unit_word(one).map_or(UnitHint::Other, UnitHint::Known),
        _ => UnitHint::Other,
    }
}

/// Splits a key into lowercase words (see the module docs).
pub(crate) fn tokenize(key: &str) -> Vec<String> {
    let mut s = String::with_capacity(key.len() + 8);
    let mut prev_lower = false;
    for c in key.chars() {
        match c {
            '/' => s.push_str(" per "),
            '%' => s.push_str(" pct "),
            _ => {
                if c.is_uppercase() && prev_lower {
                    s.push(' ');
                }
                s.push(c);
            }
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
    }
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// Classification

fn stat_word(t: &str) -> Option<Stat> {
    Some(match t {
        "mean" | "avg" | "average" => Stat::Mean,
        "median" | "p50" => Stat::Median,
        "min" | "minimum" => Stat::Min,
        "max" | "maximum" | "peak" => Stat::Max,
        "std" | "stddev" | "stdev" | "sd" => Stat::Std,
        "p90" => Stat::P90,
        "p95" => Stat::P95,
        "p99" => Stat::P99,
        _ => return None,
    })
}

/// Words that make a key a comparison, setting or identifier, not a measurement.
const EXCLUDE: &[&str] = &[
    "delta",
    "diff",
    "difference",
    "change",
    "improvement",
    "improvements",
    "reduction",
    "speedup",
    "ratio",
    "regression",
    "gain",
    "target",
    "threshold",
    "limit",
    "budget",
    "timeout",
    "goal",
    "expected",
    "estimated",
    "estimate",
    "predicted",
    "slo",
    "sla",
    "timestamp",
    "epoch",
    "created",
    "create",
    "date",
    "datetime",
    "count",
    "id",
    "index",
    "idx",
    "version",
    "error",
    "errors",
    "efficiency",
    "score",
    "vs",
    "relative",
    "normalized",
    "normalised",
    "savings",
    "saved",
    "cost",
    "interval",
    "delay",
    "sleep",
    "ttl",
];
const MEMORY_WORDS: &[&str] = &["memory", "mem", "vram", "rss", "ram", "heap"];
const MEMORY_EXCLUDE: &[&str] = &[
    "total",
    "free",
    "available",
    "avail",
    "capacity",
    "shared",
    "clock",
    "bandwidth",
    "bus",
    "frequency",
    "freq",
    "width",
];
const UTIL_WORDS: &[&str] = &["util", "utilization", "utilisation", "usage", "busy"];
const DURATION_WORDS: &[&str] = &["duration", "elapsed", "wall", "runtime", "took", "total"];
const OLLAMA_NS: &[&str] = &[
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Classified {
    pub metric: Metric,
    pub stat: Option<Stat>,
    pub unit: RawUnit,
}

fn contains_seq(t: &[String], seq: &[&str]) -> bool {
    t.windows(seq.len())
        .any(|w| w.iter().zip(seq).all(|(a, b)| a == b))
}

/// Decides whether `key` names a performance figure, which one, and its unit.
pub(crate) fn classify(key: &str, hint: UnitHint) -> Option<Classified> {
    let t = tokenize(key);
    if t.is_empty() {
        return None;
    }
    let has = |w: &str| t.iter().any(|x| x == w);
    let any = |ws: &[&str]| t.iter().any(|x| ws.contains(&x.as_str()));
    if any(EXCLUDE) {
        return None;
    }
    let stat = t.iter().find_map(|w| stat_word(w));
    let per_second = tokens_per_second(&t);
    let key_unit = if per_second {
        Some(RawUnit::TokPerS)
    } else {
        t.iter().rev().find_map(|w| unit_word(w))
    };
    let unit = match hint {
        UnitHint::Known(u) => Some(u),
        UnitHint::Other => return None,
        UnitHint::None => key_unit,
    };
    let done = |metric: Metric, unit: RawUnit| Some(Classified { metric, stat, unit });

    // Throughput.
    if per_second || unit == Some(RawUnit::TokPerS) || has("throughput") {
        if unit.is_some_and(|u| u != RawUnit::TokPerS) {
            return None;
        }
        let metric = if has("prompt") || has("prefill") {
            Metric::PromptTokensPerS
        } else {
            Metric::EvalTokensPerS
        };
        return done(metric, RawUnit::TokPerS);
    }
    if any(&["tok", "toks", "token", "tokens"]) && has("per") {
        return None; // per-token figures (ms per token) are not in the table
    }

    // Utilisation (percent, also when no unit is written): `gpu_util`,
    // `utilization_gpu`, or just the device with a percent unit (`GPU%`,
    // `cpu_percent`, nvidia-smi dmon's `sm` column in %).
    let pct_ok = unit.is_none_or(|u| u == RawUnit::Percent);
    let bare = |dev: &[&str]| {
        unit == Some(RawUnit::Percent)
            && t.iter()
                .filter(|w| unit_word(w).is_none() && stat_word(w).is_none())
                .all(|w| dev.contains(&w.as_str()))
    };
    let gpu = ["gpu", "sm", "cuda"];
    if pct_ok && !any(MEMORY_WORDS) && ((any(&gpu) && any(UTIL_WORDS)) || bare(&gpu)) {
        return done(Metric::GpuUtilizationPct, RawUnit::Percent);
    }
    if pct_ok && ((has("cpu") && any(UTIL_WORDS)) || bare(&["cpu"])) {
        return done(Metric::CpuUtilizationPct, RawUnit::Percent);
    }

    // Memory in use (needs a size unit).
    if any(MEMORY_WORDS) {
        return match unit {
            Some(u) if u.is_size() && !any(MEMORY_EXCLUDE) => done(Metric::MemoryBytes, u),
            _ => None,
        };
    }

    // Timings (need a time unit, except Ollama's nanosecond durations).
    let unit = match unit {
        Some(u) if u.is_time() => u,
        Some(_) => return None,
        None if OLLAMA_NS.contains(&t.join("_").as_str()) => RawUnit::Ns,
        None => return None,
    };
    let only_stat_and_unit = t
        .iter()
        .all(|w| stat_word(w).is_some() || unit_word(w).is_some());
    let metric = if has("ttft")
        || contains_seq(&t, &["first", "token"])
        || contains_seq(&t, &["time", "to", "first"])
    {
        Metric::TtftMs
    } else if contains_seq(&t, &["prompt", "eval"])
        || has("prefill")
        || contains_seq(&t, &["prompt", "processing"])
    {
        Metric::PromptEvalMs
    } else if has("eval") || has("decode") || has("decoding") {
        Metric::EvalMs
    } else if has("load") || has("loading") {
        Metric::LoadMs
    } else if has("total") {
        Metric::TotalMs
    } else if has("compile") || has("compilation") || has("build") {
        Metric::CompileMs
    } else if has("latency")
        || has("rtt")
        || contains_seq(&t, &["response", "time"])
        || only_stat_and_unit
        || (stat.is_some() && !any(DURATION_WORDS))
    {
        Metric::LatencyMs
    } else {
        Metric::DurationMs
    };
    done(metric, unit)
}

// ---------------------------------------------------------------------------
// Values

/// Parses a cell or string such as `12.5`, `1,024`, `22,80,000`, `12.5 ms`,
/// `87%`, `3.2 GB`, `181.9 tok/s` into a number and the unit written after it.
pub(crate) fn parse_quantity(s: &str) -> Option<(f64, UnitHint)> {
    let s = s.trim();
    let (value, used) = super::numbers::number_prefix(s)?;
    let rest = s[used..].trim();
    if rest.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '.' | ',' | '-' | ':' | '/')) {
        return None; // dates, versions, lists, fractions
    }
    Some((value, parse_unit(rest)))
}

// ---------------------------------------------------------------------------
// Extraction

struct Sink<'a> {
    file: &'a str,
    rows: Vec<MetricRow>,
    excl: MetricExclusions,
    /// Classification of JSON number leaves by parent key, then key: keys
    /// repeat across array items, and classifying is the costly part.
    cache: HashMap<String, HashMap<String, Option<Classified>>>,
}

impl<'a> Sink<'a> {
    fn new(file: &'a str) -> Self {
        Self {
            file,
            rows: Vec::new(),
            excl: MetricExclusions::default(),
            cache: HashMap::new(),
        }
    }

    fn classify_number_leaf(&mut self, key: &str, parent: Option<&str>) -> Option<Classified> {
        let p = parent.unwrap_or("");
        if let Some(c) = self.cache.get(p).and_then(|m| m.get(key)) {
            return *c;
        }
        let c = classify_leaf(key, parent, UnitHint::None);
        self.cache
            .entry(p.to_string())
            .or_default()
            .insert(key.to_string(), c);
        c
    }

    fn emit(
        &mut self,
        locator: String,
        raw_key: &str,
        raw_value: f64,
        c: Classified,
        label: Option<&str>,
        failed: bool,
    ) {
        if !raw_value.is_finite() {
            return;
        }
        if failed {
            self.excl.failed_runs += 1;
            return;
        }
        let value = raw_value * c.unit.factor();
        if value < 0.0 || (value == 0.0 && c.metric.zero_is_missing()) {
            self.excl.non_positive += 1;
            return;
        }
        self.rows.push(MetricRow {
            file: self.file.to_string(),
            locator,
            metric: c.metric,
            stat: c.stat,
            value,
            unit: c.metric.unit(),
            raw_key: raw_key.to_string(),
            raw_value,
            raw_unit: c.unit.as_str(),
            label: label.map(str::to_string),
        });
    }
}

/// The metrics of one parsed file (Markdown yields none).
pub(crate) fn extract(record: &FileRecord) -> (Vec<MetricRow>, MetricExclusions) {
    let mut sink = Sink::new(&record.path);
    match &record.content {
        Content::Csv(t) => extract_csv(t, &mut sink),
        Content::Json(v) => {
            let mut path = String::from("$");
            walk_json(v, &mut path, None, None, None, false, &mut sink);
        }
        Content::Markdown(_) => {}
    }
    (sink.rows, sink.excl)
}

const LABEL_KEYS: &[&str] = &[
    "model",
    "model_name",
    "backend",
    "target_backend",
    "config_name",
    "config",
    "scenario",
    "name",
    "tag",
    "variant",
];
const ERROR_KEYS: &[&str] = &["error", "errors", "exception", "failure", "error_message"];

fn cell_reports_failure(cell: &str) -> bool {
    let c = cell.trim();
    !(c.is_empty()
        || ["none", "null", "nan", "false", "0", "ok", "n/a", "-"]
            .iter()
            .any(|v| c.eq_ignore_ascii_case(v)))
}

fn status_is_failure(s: &str) -> bool {
    ["failed", "failure", "error", "errored", "fail"]
        .iter()
        .any(|v| s.trim().eq_ignore_ascii_case(v))
}

fn csv_locator(row: usize, column: &str) -> String {
    format!("row {row}, column \"{}\"", column.replace('"', "\\\""))
}

fn extract_csv(t: &CsvTable, sink: &mut Sink) {
    let find = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| t.headers.iter().position(|h| h.eq_ignore_ascii_case(n)))
    };
    let error_cols: Vec<usize> = t
        .headers
        .iter()
        .enumerate()
        .filter(|(_, h)| ERROR_KEYS.iter().any(|k| h.eq_ignore_ascii_case(k)))
        .map(|(i, _)| i)
        .collect();
    let status_col = find(&["status", "state"]);
    let label_col = find(LABEL_KEYS);
    // Long format: one metric per row (`metric,value,unit`).
    let name_col = find(&["metric", "metric_name", "measure", "key"]);
    let value_col = find(&["value", "val"]);
    let unit_col = find(&["unit", "units"]);

    let hints: Vec<UnitHint> = (0..t.headers.len())
        .map(|i| {
            t.units
                .as_ref()
                .and_then(|u| u.get(i))
                .map_or(UnitHint::None, |u| parse_unit(u))
        })
        .collect();
    let classes: Vec<Option<Classified>> = t
        .headers
        .iter()
        .zip(&hints)
        .map(|(h, &hint)| classify(h, hint))
        .collect();

    for (r, row) in t.rows.iter().enumerate() {
        let failed = error_cols.iter().any(|&c| cell_reports_failure(&row[c]))
            || status_col.is_some_and(|c| status_is_failure(&row[c]));
        let label = label_col.map(|c| row[c].as_str()).filter(|l| !l.is_empty());
        for (c, cell) in row.iter().enumerate() {
            if Some(c) == value_col && name_col.is_some() {
                continue;
            }
            let header = &t.headers[c];
            let Some((v, cell_unit)) = parse_quantity(cell) else {
                continue;
            };
            let class = match cell_unit {
                UnitHint::None => classes[c],
                hint => classify(header, hint),
            };
            if let Some(class) = class {
                sink.emit(csv_locator(r + 1, header), header, v, class, label, failed);
            }
        }
        if let (Some(nc), Some(vc)) = (name_col, value_col) {
            let name = &row[nc];
            if let Some((v, cell_unit)) = parse_quantity(&row[vc]) {
                let hint = match (cell_unit, unit_col) {
                    (UnitHint::None, Some(uc)) => parse_unit(&row[uc]),
                    (h, _) => h,
                };
                if let Some(class) = classify(name, hint) {
                    let loc = csv_locator(r + 1, &t.headers[vc]);
                    sink.emit(loc, name, v, class, label, failed);
                }
            }
        }
    }
}

fn object_failed(map: &serde_json::Map<String, Value>) -> bool {
    let filled = |v: &Value| match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => cell_reports_failure(s),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(_) => false,
    };
    map.iter().any(|(k, v)| {
        (ERROR_KEYS.iter().any(|e| k.eq_ignore_ascii_case(e)) && filled(v))
            || (matches!(k.as_str(), "success" | "ok" | "passed") && *v == Value::Bool(false))
            || (matches!(k.as_str(), "status" | "state")
                && v.as_str().is_some_and(status_is_failure))
    })
}

fn push_key(path: &mut String, key: &str) {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        path.push('.');
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&Value::String(key.to_string()).to_string());
        path.push(']');
    }
}

/// A leaf key that only says which statistic (`mean`, `p95_ms`): the metric
/// comes from the parent key (`"ttft_ms": {"mean": ..}`).
fn classify_leaf(key: &str, parent: Option<&str>, hint: UnitHint) -> Option<Classified> {
    let t = tokenize(key);
    let only_stat = !t.is_empty()
        && t.iter().any(|w| stat_word(w).is_some())
        && t.iter()
            .all(|w| stat_word(w).is_some() || unit_word(w).is_some());
    if only_stat {
        if let Some(p) = parent {
            if let Some(c) = classify(&format!("{p}_{key}"), hint) {
                return Some(c);
            }
        }
    }
    classify(key, hint)
}

fn walk_json(
    v: &Value,
    path: &mut String,
    key: Option<&str>,
    parent: Option<&str>,
    label: Option<&str>,
    failed: bool,
    sink: &mut Sink,
) {
    match v {
        Value::Object(map) => {
            let failed = failed || object_failed(map);
            // {"name": "ttft", "value": 1.2, "unit": "s"}: a metric named in a field.
            let named = ["metric", "name", "key"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_str))
                .filter(|_| map.contains_key("value"));
            let label = LABEL_KEYS
                .iter()
                .filter(|k| named.is_none() || **k != "name")
                .find_map(|k| map.get(*k).and_then(Value::as_str))
                .filter(|s| !s.is_empty())
                .or(label);
            let mut value_done = false;
            if let (Some(name), Some(val)) = (named, map.get("value")) {
                let q = match val {
                    Value::Number(n) => n.as_f64().map(|f| (f, UnitHint::None)),
                    Value::String(s) => parse_quantity(s),
                    _ => None,
                };
                if let Some((f, mut hint)) = q {
                    if hint == UnitHint::None {
                        if let Some(u) =
                            map.get("unit").or(map.get("units")).and_then(Value::as_str)
                        {
                            hint = parse_unit(u);
                        }
                    }
                    if let Some(c) = classify(name, hint) {
                        let len = path.len();
                        push_key(path, "value");
                        sink.emit(path.clone(), name, f, c, label, failed);
                        path.truncate(len);
                        value_done = true;
                    }
                }
            }
            for (k, child) in map {
                if value_done && k == "value" {
                    continue;
                }
                let len = path.len();
                push_key(path, k);
                walk_json(child, path, Some(k), key, label, failed, sink);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = path.len();
                path.push('[');
                path.push_str(&i.to_string());
                path.push(']');
                walk_json(child, path, key, parent, label, failed, sink);
                path.truncate(len);
            }
        }
        Value::Number(n) => {
            if let (Some(k), Some(f)) = (key, n.as_f64()) {
                if let Some(c) = sink.classify_number_leaf(k, parent) {
                    sink.emit(path.clone(), k, f, c, label, failed);
                }
            }
        }
        Value::String(s) => {
            if let Some(k) = key {
                if let Some((f, hint)) = parse_quantity(s) {
                    if let Some(c) = classify_leaf(k, parent, hint) {
                        sink.emit(path.clone(), k, f, c, label, failed);
                    }
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(key: &str) -> Option<(Metric, Option<Stat>, RawUnit)> {
        classify(key, UnitHint::None).map(|c| (c.metric, c.stat, c.unit))
    }

    #[test]
    fn recognises_the_fixture_keys() {
        use Metric::*;
        assert_eq!(
            m("tokens_s"),
            Some((EvalTokensPerS, None, RawUnit::TokPerS))
        );
        assert_eq!(
            m("mean_tokens_s"),
            Some((EvalTokensPerS, Some(Stat::Mean), RawUnit::TokPerS))
        );
        assert_eq!(
            m("throughput_tokens_per_sec"),
            Some((EvalTokensPerS, None, RawUnit::TokPerS))
        );
        assert_eq!(
            m("Tokens/s"),
            Some((EvalTokensPerS, None, RawUnit::TokPerS))
        );
        assert_eq!(
            m("prompt_tokens_per_s"),
            Some((PromptTokensPerS, None, RawUnit::TokPerS))
        );
        assert_eq!(m("ttft_s"), Some((TtftMs, None, RawUnit::S)));
        assert_eq!(m("TTFT (s)"), Some((TtftMs, None, RawUnit::S)));
        assert_eq!(m("timeToFirstTokenMs"), Some((TtftMs, None, RawUnit::Ms)));
        assert_eq!(
            m("mean_ttft_s"),
            Some((TtftMs, Some(Stat::Mean), RawUnit::S))
        );
        assert_eq!(m("load_s"), Some((LoadMs, None, RawUnit::S)));
        assert_eq!(m("prompt_eval_s"), Some((PromptEvalMs, None, RawUnit::S)));
        assert_eq!(
            m("eval_s_mean"),
            Some((EvalMs, Some(Stat::Mean), RawUnit::S))
        );
        assert_eq!(m("eval_duration"), Some((EvalMs, None, RawUnit::Ns)));
        assert_eq!(m("total_duration"), Some((TotalMs, None, RawUnit::Ns)));
        assert_eq!(m("compile_time_s"), Some((CompileMs, None, RawUnit::S)));
        assert_eq!(
            m("mean_time_ms"),
            Some((LatencyMs, Some(Stat::Mean), RawUnit::Ms))
        );
        assert_eq!(
            m("std_time_ms"),
            Some((LatencyMs, Some(Stat::Std), RawUnit::Ms))
        );
        assert_eq!(m("latency_ms"), Some((LatencyMs, None, RawUnit::Ms)));
        assert_eq!(m("p95_ms"), Some((LatencyMs, Some(Stat::P95), RawUnit::Ms)));
        assert_eq!(m("memory_used_mb"), Some((MemoryBytes, None, RawUnit::MiB)));
        assert_eq!(m("memory_used_gb"), Some((MemoryBytes, None, RawUnit::GiB)));
        assert_eq!(
            m("peak_memory_bytes"),
            Some((MemoryBytes, Some(Stat::Max), RawUnit::Bytes))
        );
        assert_eq!(
            m("utilization_gpu"),
            Some((GpuUtilizationPct, None, RawUnit::Percent))
        );
        assert_eq!(m("GPU%"), Some((GpuUtilizationPct, None, RawUnit::Percent)));
        assert_eq!(
            m("cpu_percent"),
            Some((CpuUtilizationPct, None, RawUnit::Percent))
        );
        assert_eq!(m("wall_time_s"), Some((DurationMs, None, RawUnit::S)));
    }

    #[test]
    fn leaves_out_what_is_not_a_measurement() {
        for key in [
            "throughput_delta",
            "ttft_delta_ms",
            "speedup",
            "efficiency",
            "eval_count",
            "prompt_eval",
            "total_tokens",
            "memory_total_gb",
            "memory_free_mb",
            "memory_percent",
            "utilization_memory",
            "timestamp",
            "create_time",
            "export_timestamp",
            "top_p",
            "num_ctx",
            "temperature",
            "latency",
            "ttft",
            "model_size_bytes",
            "ms_per_token",
            "throughput_improvement_percent",
            "network_sent_mb",
            "power_draw",
            "clock_memory",
            "max_shared_memory_per_block",
            "sampling_interval_s",
            "timeout_s",
        ] {
            assert_eq!(m(key), None, "{key}");
        }
        // Occupancy is not utilisation.
        assert_eq!(
            classify(
                "sm__warps_active.avg.pct_of_peak_sustained_active",
                parse_unit("%")
            ),
            None
        );
        let c = classify("sm", parse_unit("%")).unwrap();
        assert_eq!(c.metric, Metric::GpuUtilizationPct);
        // A unit that does not fit.
        assert_eq!(
            classify("sm__throughput.avg.pct_of_peak", parse_unit("%")),
            None
        );
        assert_eq!(
            classify("launch__shared_mem_per_block", parse_unit("Kbyte/block")),
            None
        );
        assert_eq!(
            classify("gpc__cycles_elapsed.max", parse_unit("cycle")),
            None
        );
        let c = classify("gpu__time_duration.sum", parse_unit("usecond")).unwrap();
        assert_eq!((c.metric, c.unit), (Metric::DurationMs, RawUnit::Us));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("12.5"), Some((12.5, UnitHint::None)));
        assert_eq!(parse_quantity(" 1,024 "), Some((1024.0, UnitHint::None)));
        assert_eq!(
            parse_quantity("22,80,000"),
            Some((2_280_000.0, UnitHint::None))
        );
        assert_eq!(
            parse_quantity("12.5 ms"),
            Some((12.5, UnitHint::Known(RawUnit::Ms)))
        );
        assert_eq!(
            parse_quantity("87%"),
            Some((87.0, UnitHint::Known(RawUnit::Percent)))
        );
        assert_eq!(
            parse_quantity("181.9 tok/s"),
            Some((181.9, UnitHint::Known(RawUnit::TokPerS)))
        );
        assert_eq!(parse_quantity("-1e-3"), Some((-0.001, UnitHint::None)));
        assert_eq!(parse_quantity("1.51x"), Some((1.51, UnitHint::Other)));
        for s in [
            "",
            "abc",
            "2025-10-02",
            "1.2.3",
            "10:30",
            ".",
            "-",
            "1,2",
            "NaN",
        ] {
            assert_eq!(parse_quantity(s), None, "{s}");
        }
    }

    fn json_rows(v: Value) -> (Vec<MetricRow>, MetricExclusions) {
        let rec = FileRecord {
            path: "a.json".into(),
            kind: super::super::Kind::Json,
            size: 0,
            modified: None,
            content: Content::Json(v),
        };
        extract(&rec)
    }

    #[test]
    fn json_paths_labels_failures_and_nesting() {
        let v = serde_json::json!({
            "model": "gemma3:1b",
            "results": [{"ttft_s": 0.25, "tokens_s": 180.5}, {"ttft_s": 0.0, "tokens_s": 0}],
            "latency_ms": {"mean": 3.5, "p95": 9.0},
            "failed": {"error": "boom", "latency_ms": 5.0},
            "named": {"name": "load time", "value": "1.5 s"},
            "odd key": {"eval_duration": 2_000_000_000u64}
        });
        let (rows, excl) = json_rows(v);
        let got: Vec<(String, &str, Option<Stat>, f64)> = rows
            .iter()
            .map(|r| (r.locator.clone(), r.metric.as_str(), r.stat, r.value))
            .collect();
        assert_eq!(
            got,
            vec![
                ("$.results[0].ttft_s".to_string(), "ttft_ms", None, 250.0),
                (
                    "$.results[0].tokens_s".to_string(),
                    "eval_tokens_per_s",
                    None,
                    180.5
                ),
                (
                    "$.latency_ms.mean".to_string(),
                    "latency_ms",
                    Some(Stat::Mean),
                    3.5
                ),
                (
                    "$.latency_ms.p95".to_string(),
                    "latency_ms",
                    Some(Stat::P95),
                    9.0
                ),
                ("$.named.value".to_string(), "load_ms", None, 1500.0),
                (
                    "$[\"odd key\"].eval_duration".to_string(),
                    "eval_ms",
                    None,
                    2000.0
                ),
            ]
        );
        assert!(rows.iter().all(|r| r.label.as_deref() == Some("gemma3:1b")));
        assert_eq!(
            excl,
            MetricExclusions {
                failed_runs: 1,
                non_positive: 2
            }
        );
    }

    #[test]
    fn csv_rows_units_row_long_format_and_failed_rows() {
        let t = crate::ingest::parse::parse_csv(
            "model,ttft_s,tokens_s,error\nm1,0.5,100,\nm2,0.1,90,timeout\n",
        )
        .unwrap();
        let mut sink = Sink::new("x.csv");
        extract_csv(&t, &mut sink);
        let locs: Vec<&str> = sink.rows.iter().map(|r| r.locator.as_str()).collect();
        assert_eq!(
            locs,
            vec!["row 1, column \"ttft_s\"", "row 1, column \"tokens_s\""]
        );
        assert_eq!(sink.rows[0].value, 500.0);
        assert_eq!(sink.rows[0].label.as_deref(), Some("m1"));
        assert_eq!(sink.excl.failed_runs, 2);

        let t =
            crate::ingest::parse::parse_csv("metric,value,unit\nttft,120,ms\nvram,2,GB\nfoo,3,s\n")
                .unwrap();
        let mut sink = Sink::new("y.csv");
        extract_csv(&t, &mut sink);
        let got: Vec<(&str, f64)> = sink
            .rows
            .iter()
            .map(|r| (r.metric.as_str(), r.value))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ttft_ms", 120.0),
                ("memory_bytes", 2.0 * 1024.0 * 1024.0 * 1024.0),
                ("duration_ms", 3000.0)
            ]
        );
    }
}
