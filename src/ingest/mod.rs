//! Artifact ingestion: turn a folder of benchmark artifacts into a data
//! summary, a consolidated metrics table and key facts. Pure functions over a
//! file tree; nothing here knows about models.
//!
//! * [`scan`] walks `reports/`, `csv_data/` and `artifacts/` under ROOT (or
//!   ROOT itself when none exists), parses every `.csv`, `.json`, `.md` /
//!   `.markdown` file and returns an [`Ingest`].
//! * [`Ingest::summary_text`] is the data summary in the exact layout the
//!   original Chimera agents printed (see [`summary`]).
//! * [`Ingest::metrics`] is the consolidated metrics table; the canonical
//!   metric names and unit rules are documented in [`metrics`].
//! * [`Ingest::facts`] gives the key facts a report cites, with a compact
//!   Markdown rendering ([`Facts::to_markdown`]).
//! * [`Ingest::numbers`] lists every number in the data for a later check of
//!   numbers quoted in model text.
//!
//! # Walking rules
//! * Regular files are read when their extension (case-insensitive) is `csv`,
//!   `json`, `md` or `markdown`; every other file is skipped quietly
//!   ([`SkipCode::Unsupported`]) and never opened.
//! * Hidden directories (`.git`, ...) are not entered ([`SkipCode::HiddenDir`],
//!   quiet).
//! * Symbolic links are resolved: a link whose target lies outside ROOT is not
//!   followed, a dangling link or a link loop is reported, a link to a file or
//!   directory inside ROOT is read under the link's own path (a directory link
//!   that points back at a directory being walked is reported as a loop).
//! * FIFOs, sockets and devices are never opened.
//! * A single bad file never stops the scan: it becomes a [`Skipped`] entry
//!   with a reason. Only a missing or non-directory ROOT is an error.

pub mod facts;
pub mod metrics;
mod numbers;
mod parse;
pub mod summary;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

pub use facts::{Facts, KindFacts, MarkdownFacts, MetricFacts, MetricSource};
pub use metrics::{Metric, MetricRow, Stat, Unit};
pub use parse::load_file;

/// Folders under ROOT scanned by default (the layout of the original agents).
pub const DEFAULT_DIRS: [&str; 3] = ["reports", "csv_data", "artifacts"];
/// Default size cap per file: 64 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Default JSON nesting limit (serde_json itself stops at 128).
pub const DEFAULT_MAX_JSON_DEPTH: usize = 100;
/// Default limit on directory nesting below a scanned folder.
pub const DEFAULT_MAX_DIR_DEPTH: usize = 64;

/// What to scan and the limits that protect the scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestOptions {
    /// Folders under ROOT to scan; when none of them exists ROOT itself is scanned.
    pub dirs: Vec<String>,
    /// Files larger than this many bytes are skipped unread.
    pub max_file_bytes: u64,
    /// JSON documents nested deeper than this are skipped.
    pub max_json_depth: usize,
    /// Directories nested deeper than this below a scanned folder are not entered.
    pub max_dir_depth: usize,
    /// Worker threads for reading and parsing; 0 means one per available core.
    pub threads: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            dirs: DEFAULT_DIRS.iter().map(|d| d.to_string()).collect(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_json_depth: DEFAULT_MAX_JSON_DEPTH,
            max_dir_depth: DEFAULT_MAX_DIR_DEPTH,
            threads: 0,
        }
    }
}

/// The three kinds of artifact that are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Csv,
    Json,
    Markdown,
}

impl Kind {
    /// All kinds, in summary order.
    pub const ALL: [Kind; 3] = [Kind::Csv, Kind::Json, Kind::Markdown];

    /// Lowercase label (`csv`, `json`, `markdown`); the summary prints it uppercased.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Csv => "csv",
            Kind::Json => "json",
            Kind::Markdown => "markdown",
        }
    }

    /// The kind for a file extension (case-insensitive), if it is read at all.
    pub fn from_extension(ext: &str) -> Option<Kind> {
        if ext.eq_ignore_ascii_case("csv") {
            Some(Kind::Csv)
        } else if ext.eq_ignore_ascii_case("json") {
            Some(Kind::Json)
        } else if ext.eq_ignore_ascii_case("md") || ext.eq_ignore_ascii_case("markdown") {
            Some(Kind::Markdown)
        } else {
            None
        }
    }
}

/// A parsed CSV file: the header row and the data rows, each exactly as wide
/// as the header (ragged files are skipped), cells trimmed.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvTable {
    pub headers: Vec<String>,
    /// Units per column when the file carries a units row right under the
    /// header (as Nsight Compute exports do); that row is not in `rows`.
    pub units: Option<Vec<String>>,
    pub rows: Vec<Vec<String>>,
}

impl CsvTable {
    /// Index of the column whose header equals `name` (case-insensitive).
    pub fn column(&self, name: &str) -> Option<usize> {
        self.headers
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
    }

    /// Row `i` (0-based) as (header, cell) pairs.
    pub fn record(&self, i: usize) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .map(String::as_str)
            .zip(self.rows[i].iter().map(String::as_str))
    }
}

/// One Markdown heading (ATX `#` or setext underline), outside code fences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heading {
    pub level: u8,
    pub text: String,
    /// 1-based line number of the heading text.
    pub line: usize,
}

/// A Markdown document: its text and headings.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkdownDoc {
    pub text: String,
    pub headings: Vec<Heading>,
}

impl MarkdownDoc {
    pub fn heading_count(&self) -> usize {
        self.headings.len()
    }

    /// The first level-1 heading, else the first heading of any level.
    pub fn title(&self) -> Option<&str> {
        self.headings
            .iter()
            .find(|h| h.level == 1)
            .or_else(|| self.headings.first())
            .map(|h| h.text.as_str())
    }
}

/// Parsed content of one file.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Csv(CsvTable),
    Json(serde_json::Value),
    Markdown(MarkdownDoc),
}

/// One successfully parsed file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileRecord {
    /// Path relative to ROOT, with forward slashes.
    pub path: String,
    pub kind: Kind,
    /// Size in bytes on disk.
    pub size: u64,
    /// Last modification time, when the file system reports one.
    #[serde(serialize_with = "ser_time")]
    pub modified: Option<DateTime<Utc>>,
    /// Parsed content; serialized as a short summary, not in full.
    #[serde(serialize_with = "ser_content_summary")]
    pub content: Content,
}

/// Why a file was not ingested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipCode {
    /// Not a csv/json/markdown file: counted and listed, never read, no warning.
    Unsupported,
    /// A hidden directory (name starts with '.'): not entered, no warning.
    HiddenDir,
    /// A FIFO, socket or device.
    NotRegularFile,
    /// Larger than the size cap.
    TooLarge,
    /// Empty or only whitespace.
    Empty,
    /// The file or directory could not be read (vanished, permissions, I/O error).
    ReadError,
    /// Contains NUL bytes.
    Binary,
    /// Not valid UTF-8 (or UTF-16 with a byte-order mark).
    NotUtf8,
    /// CSV that cannot be parsed (no header, bad quoting).
    InvalidCsv,
    /// CSV whose rows do not all have as many fields as the header.
    RaggedCsv,
    /// JSON that does not parse.
    InvalidJson,
    /// JSON nested deeper than the limit, or directories nested too deep.
    TooDeep,
    /// A symbolic link (or a named folder) that resolves outside ROOT.
    OutsideRoot,
    /// A symbolic link whose target does not exist.
    DanglingSymlink,
    /// A symbolic link that loops.
    SymlinkLoop,
}

impl SkipCode {
    /// Quiet skips are listed but get no warning line.
    pub fn is_quiet(self) -> bool {
        matches!(self, SkipCode::Unsupported | SkipCode::HiddenDir)
    }

    /// The snake_case name used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipCode::Unsupported => "unsupported",
            SkipCode::HiddenDir => "hidden_dir",
            SkipCode::NotRegularFile => "not_regular_file",
            SkipCode::TooLarge => "too_large",
            SkipCode::Empty => "empty",
            SkipCode::ReadError => "read_error",
            SkipCode::Binary => "binary",
            SkipCode::NotUtf8 => "not_utf8",
            SkipCode::InvalidCsv => "invalid_csv",
            SkipCode::RaggedCsv => "ragged_csv",
            SkipCode::InvalidJson => "invalid_json",
            SkipCode::TooDeep => "too_deep",
            SkipCode::OutsideRoot => "outside_root",
            SkipCode::DanglingSymlink => "dangling_symlink",
            SkipCode::SymlinkLoop => "symlink_loop",
        }
    }
}

/// A file (or directory) that was not ingested, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Path relative to ROOT, with forward slashes.
    pub path: String,
    pub code: SkipCode,
    /// Human-readable reason, e.g. `invalid JSON: expected value at line 1 column 1`.
    pub reason: String,
}

impl Skipped {
    pub(crate) fn new(path: impl Into<String>, code: SkipCode, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            code,
            reason: reason.into(),
        }
    }

    /// The warning line printed for a bad file: `warning: skipped <path>: <reason>`.
    pub fn warning_line(&self) -> String {
        format!("warning: skipped {}: {}", self.path, self.reason)
    }
}

/// Metric values found but left out of the table because they are not
/// measurements (see [`metrics`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MetricExclusions {
    /// Values in a CSV row or JSON object that reports an error or failure.
    pub failed_runs: usize,
    /// Zero timings or throughputs, and negative values of any metric.
    pub non_positive: usize,
}

/// Everything a scan found.
#[derive(Debug, Clone, Serialize)]
pub struct Ingest {
    pub root: PathBuf,
    /// The folders that were scanned, relative to ROOT (`.` for ROOT itself).
    pub scanned_dirs: Vec<String>,
    /// Successfully parsed files, sorted by relative path.
    pub files: Vec<FileRecord>,
    /// Every file not ingested, with a reason, sorted by relative path.
    pub skipped: Vec<Skipped>,
    /// The consolidated metrics table, by file then position in the file.
    pub metrics: Vec<MetricRow>,
    pub metric_exclusions: MetricExclusions,
}

/// Scans ROOT. Fails only when ROOT is missing or not a directory; every
/// problem with a file inside is reported in [`Ingest::skipped`].
pub fn scan(root: &Path, opts: &IngestOptions) -> anyhow::Result<Ingest> {
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("artifact root {} does not exist", root.display())
        }
        Err(e) => anyhow::bail!("artifact root {} cannot be read: {e}", root.display()),
    };
    if !meta.is_dir() {
        anyhow::bail!("artifact root {} is not a directory", root.display());
    }
    let canon_root = std::fs::canonicalize(root)
        .map_err(|e| anyhow::anyhow!("artifact root {} cannot be resolved: {e}", root.display()))?;

    let walked = walk::walk(root, &canon_root, opts);
    let mut skipped = walked.skipped;
    let loaded = load_parallel(&walked.candidates, opts);

    let mut files = Vec::with_capacity(loaded.len());
    let mut per_file_metrics: Vec<(String, Vec<MetricRow>)> = Vec::new();
    let mut exclusions = MetricExclusions::default();
    for item in loaded {
        match item {
            Ok((record, rows, excl)) => {
                exclusions.failed_runs += excl.failed_runs;
                exclusions.non_positive += excl.non_positive;
                if !rows.is_empty() {
                    per_file_metrics.push((record.path.clone(), rows));
                }
                files.push(record);
            }
            Err(s) => skipped.push(s),
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    skipped.sort_by(|a, b| a.path.cmp(&b.path).then(a.code.cmp(&b.code)));
    per_file_metrics.sort_by(|a, b| a.0.cmp(&b.0));
    let metrics = per_file_metrics.into_iter().flat_map(|(_, r)| r).collect();

    Ok(Ingest {
        root: root.to_path_buf(),
        scanned_dirs: walked.scanned_dirs,
        files,
        skipped,
        metrics,
        metric_exclusions: exclusions,
    })
}

type Loaded = Result<(FileRecord, Vec<MetricRow>, MetricExclusions), Skipped>;

/// Reads, parses and extracts metrics from every candidate, on a few threads.
fn load_parallel(candidates: &[walk::Candidate], opts: &IngestOptions) -> Vec<Loaded> {
    let load = |c: &walk::Candidate| -> Loaded {
        let record = parse::load_candidate(c, opts)?;
        let (rows, excl) = metrics::extract(&record);
        Ok((record, rows, excl))
    };
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(candidates.len().div_ceil(32))
    .max(1);
    if threads == 1 {
        return candidates.iter().map(load).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Loaded)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(c) = candidates.get(i) else { break };
                        out.push((i, load(c)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("ingest worker panicked"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

impl Ingest {
    /// The data summary in the layout of the original agents (see [`summary`]).
    pub fn summary_text(&self) -> String {
        summary::summary_text(&self.files)
    }

    /// Key facts: counts per type, bytes, Markdown headings, per-metric statistics.
    pub fn facts(&self) -> Facts {
        facts::compute(self)
    }

    /// Every number that appears in the ingested data, sorted ascending and
    /// without duplicates: CSV cells, JSON numbers, numbers written inside
    /// CSV cells, JSON strings and Markdown text (`1,024` reads as 1024,
    /// `75.7%` as 75.7), plus every normalised value of the metrics table
    /// (so `ttft_s = 0.25` also contributes 250).
    pub fn numbers(&self) -> Vec<f64> {
        let mut out = Vec::new();
        for f in &self.files {
            match &f.content {
                Content::Csv(t) => {
                    for row in &t.rows {
                        for cell in row {
                            numbers::scan_text(cell, &mut out);
                        }
                    }
                }
                Content::Json(v) => numbers::scan_json(v, &mut out),
                Content::Markdown(m) => numbers::scan_text(&m.text, &mut out),
            }
        }
        out.extend(self.metrics.iter().map(|m| m.value));
        numbers::sort_dedup(out)
    }

    /// Files of one kind (in path order).
    pub fn files_of(&self, kind: Kind) -> impl Iterator<Item = &FileRecord> {
        self.files.iter().filter(move |f| f.kind == kind)
    }

    /// Skipped entries that deserve a warning (everything but unsupported
    /// extensions and hidden directories).
    pub fn bad_files(&self) -> impl Iterator<Item = &Skipped> {
        self.skipped.iter().filter(|s| !s.code.is_quiet())
    }

    /// One JSON object: root, scanned folders, files (content summarised),
    /// skipped files, metrics, exclusions, facts and the summary text.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "root": self.root.display().to_string(),
            "scanned_dirs": self.scanned_dirs,
            "files": self.files,
            "skipped": self.skipped,
            "metrics": self.metrics,
            "metric_exclusions": self.metric_exclusions,
            "facts": self.facts(),
            "summary": self.summary_text(),
        })
    }
}

/// Short, serializable description of a file's content.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ContentSummary {
    Csv {
        columns: usize,
        rows: usize,
        headers: Vec<String>,
    },
    Json {
        /// `object`, `array`, `string`, `number`, `bool` or `null`.
        top_level: &'static str,
        /// Keys of a top-level object or items of a top-level array.
        entries: usize,
    },
    Markdown {
        chars: usize,
        lines: usize,
        headings: usize,
        title: Option<String>,
    },
}

impl Content {
    pub fn summary(&self) -> ContentSummary {
        match self {
            Content::Csv(t) => ContentSummary::Csv {
                columns: t.headers.len(),
                rows: t.rows.len(),
                headers: t.headers.clone(),
            },
            Content::Json(v) => {
                let (top_level, entries) = match v {
                    serde_json::Value::Object(m) => ("object", m.len()),
                    serde_json::Value::Array(a) => ("array", a.len()),
                    serde_json::Value::String(_) => ("string", 1),
                    serde_json::Value::Number(_) => ("number", 1),
                    serde_json::Value::Bool(_) => ("bool", 1),
                    serde_json::Value::Null => ("null", 0),
                };
                ContentSummary::Json { top_level, entries }
            }
            Content::Markdown(m) => ContentSummary::Markdown {
                chars: m.text.chars().count(),
                lines: m.text.lines().count(),
                headings: m.heading_count(),
                title: m.title().map(str::to_string),
            },
        }
    }
}

fn ser_content_summary<S: Serializer>(c: &Content, s: S) -> Result<S::Ok, S::Error> {
    c.summary().serialize(s)
}

/// RFC 3339 with seconds and a `Z`, or null.
pub(crate) fn ser_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_rfc3339(t)),
        None => s.serialize_none(),
    }
}

pub(crate) fn format_rfc3339(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
