//! Key facts about an ingested tree: the figures a report cites.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::{Content, Ingest, Kind, Metric, MetricExclusions, MetricRow, SkipCode, Stat, Unit};

/// Files of one kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindFacts {
    pub kind: Kind,
    pub files: usize,
    pub bytes: u64,
    /// Newest modification time, `YYYY-MM-DD HH:MM:SS UTC`.
    pub latest_modified: Option<String>,
}

/// One Markdown document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarkdownFacts {
    pub path: String,
    pub title: Option<String>,
    pub headings: usize,
}

/// Where a value sits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricSource {
    pub file: String,
    pub locator: String,
    pub label: Option<String>,
}

impl MetricSource {
    fn of(r: &MetricRow) -> Self {
        Self {
            file: r.file.clone(),
            locator: r.locator.clone(),
            label: r.label.clone(),
        }
    }
}

/// Statistics of one metric (and statistic kind, when the data says which).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricFacts {
    pub metric: Metric,
    /// `None` for plain observations; `mean`, `max`, ... when the source
    /// values are themselves statistics (they are never pooled with others).
    pub stat: Option<Stat>,
    pub unit: Unit,
    pub count: usize,
    /// Number of files the values come from.
    pub files: usize,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// First place the minimum appears.
    pub min_at: MetricSource,
    /// First place the maximum appears.
    pub max_at: MetricSource,
}

/// Key facts about an [`Ingest`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    pub total_files: usize,
    pub total_bytes: u64,
    /// CSV, JSON and Markdown, always in that order (zero counts included).
    pub kinds: Vec<KindFacts>,
    pub skipped_files: usize,
    /// Skipped entries by [`SkipCode`] name.
    pub skipped_by_code: BTreeMap<String, usize>,
    /// Unsupported files by extension (`.txt`, or `(none)`).
    pub unsupported_by_extension: BTreeMap<String, usize>,
    pub csv_rows: usize,
    pub markdown_headings: usize,
    pub markdown: Vec<MarkdownFacts>,
    pub metric_rows: usize,
    pub metric_files: usize,
    pub metric_exclusions: MetricExclusions,
    /// Ordered by metric (as in [`Metric::ALL`]) then statistic.
    pub metrics: Vec<MetricFacts>,
}

pub(crate) fn compute(ing: &Ingest) -> Facts {
    let kinds = Kind::ALL
        .iter()
        .map(|&kind| {
            let of_kind = ing.files.iter().filter(|f| f.kind == kind);
            KindFacts {
                kind,
                files: of_kind.clone().count(),
                bytes: of_kind.clone().map(|f| f.size).sum(),
                latest_modified: of_kind
                    .filter_map(|f| f.modified)
                    .max()
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
            }
        })
        .collect();

    let mut skipped_by_code = BTreeMap::new();
    let mut unsupported_by_extension = BTreeMap::new();
    for s in &ing.skipped {
        *skipped_by_code
            .entry(s.code.as_str().to_string())
            .or_insert(0) += 1;
        if s.code == SkipCode::Unsupported {
            let name = s.path.rsplit('/').next().unwrap_or(&s.path);
            let ext = match name.rsplit_once('.') {
                Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() => {
                    format!(".{}", ext.to_lowercase())
                }
                _ => "(none)".to_string(),
            };
            *unsupported_by_extension.entry(ext).or_insert(0) += 1;
        }
    }

    let mut csv_rows = 0;
    let mut markdown = Vec::new();
    for f in &ing.files {
        match &f.content {
            Content::Csv(t) => csv_rows += t.rows.len(),
            Content::Markdown(m) => markdown.push(MarkdownFacts {
                path: f.path.clone(),
                title: m.title().map(str::to_string),
                headings: m.heading_count(),
            }),
            Content::Json(_) => {}
        }
    }

    struct Acc<'a> {
        count: usize,
        sum: f64,
        lo: &'a MetricRow,
        hi: &'a MetricRow,
        files: HashSet<&'a str>,
        prev_file: &'a str,
    }
    let mut groups: BTreeMap<(Metric, Option<Stat>), Acc> = BTreeMap::new();
    for r in &ing.metrics {
        let acc = groups.entry((r.metric, r.stat)).or_insert_with(|| Acc {
            count: 0,
            sum: 0.0,
            lo: r,
            hi: r,
            files: HashSet::new(),
            prev_file: "",
        });
        acc.count += 1;
        acc.sum += r.value;
        if r.value < acc.lo.value {
            acc.lo = r;
        }
        if r.value > acc.hi.value {
            acc.hi = r;
        }
        if acc.prev_file != r.file {
            acc.files.insert(&r.file);
            acc.prev_file = &r.file;
        }
    }
    let metrics = groups
        .into_iter()
        .map(|((metric, stat), acc)| MetricFacts {
            metric,
            stat,
            unit: metric.unit(),
            count: acc.count,
            files: acc.files.len(),
            mean: acc.sum / acc.count as f64,
            min: acc.lo.value,
            max: acc.hi.value,
            min_at: MetricSource::of(acc.lo),
            max_at: MetricSource::of(acc.hi),
        })
        .collect();

    Facts {
        total_files: ing.files.len(),
        total_bytes: ing.files.iter().map(|f| f.size).sum(),
        kinds,
        skipped_files: ing.skipped.len(),
        skipped_by_code,
        unsupported_by_extension,
        csv_rows,
        markdown_headings: markdown.iter().map(|m| m.headings).sum(),
        markdown,
        metric_rows: ing.metrics.len(),
        metric_files: distinct_files(ing.metrics.iter()),
        metric_exclusions: ing.metric_exclusions,
        metrics,
    }
}

/// Number of distinct files; rows come grouped by file, so only changes are hashed.
fn distinct_files<'a>(rows: impl Iterator<Item = &'a MetricRow>) -> usize {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut prev: Option<&str> = None;
    for r in rows {
        if prev != Some(r.file.as_str()) {
            seen.insert(&r.file);
            prev = Some(&r.file);
        }
    }
    seen.len()
}

/// `1234567` -> `1,234,567`.
pub fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Two decimals from 1 up, four significant digits below 1, whole bytes.
pub fn format_value(v: f64, unit: Unit) -> String {
    if unit == Unit::Bytes {
        return if v >= 0.0 && v < u64::MAX as f64 {
            group_thousands(v.round() as u64)
        } else {
            format!("{v:.0}")
        };
    }
    if v == 0.0 || v.abs() >= 1.0 {
        return format!("{v:.2}");
    }
    let decimals = (3 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.decimals$}");
    let s = s.trim_end_matches('0');
    s.trim_end_matches('.').to_string()
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Csv => "CSV",
        Kind::Json => "JSON",
        Kind::Markdown => "Markdown",
    }
}

impl MetricFacts {
    /// `eval_tokens_per_s` or `latency_ms (mean)`.
    pub fn name(&self) -> String {
        match self.stat {
            Some(s) => format!("{} ({})", self.metric.as_str(), s.as_str()),
            None => self.metric.as_str().to_string(),
        }
    }
}

impl Facts {
    /// A compact, deterministic Markdown rendering (no heading of its own):
    /// file counts, skipped files, a metrics table, and the Markdown
    /// documents with their titles.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let kinds: Vec<String> = self
            .kinds
            .iter()
            .map(|k| format!("{} {}", kind_name(k.kind), k.files))
            .collect();
        let _ = writeln!(
            out,
            "- Files ingested: {} ({}), {} bytes",
            self.total_files,
            kinds.join(", "),
            group_thousands(self.total_bytes)
        );
        let unsupported: usize = self.unsupported_by_extension.values().sum();
        let mut skipped = format!("- Files skipped: {}", self.skipped_files);
        if self.skipped_files > 0 {
            let mut parts = Vec::new();
            if unsupported > 0 {
                let by_ext: Vec<String> = self
                    .unsupported_by_extension
                    .iter()
                    .map(|(e, n)| format!("{e} {n}"))
                    .collect();
                parts.push(format!("unsupported type: {}", by_ext.join(", ")));
            }
            let others: Vec<String> = self
                .skipped_by_code
                .iter()
                .filter(|(c, _)| c.as_str() != "unsupported")
                .map(|(c, n)| format!("{} {n}", c.replace('_', " ")))
                .collect();
            if !others.is_empty() {
                parts.push(others.join(", "));
            }
            let _ = write!(skipped, " ({})", parts.join("; "));
        }
        let _ = writeln!(out, "{skipped}");
        let _ = writeln!(
            out,
            "- CSV data rows: {}; Markdown headings: {}",
            group_thousands(self.csv_rows as u64),
            group_thousands(self.markdown_headings as u64)
        );
        let _ = writeln!(
            out,
            "- Metric values: {} from {} files; left out: {} from failed runs, {} zero or negative",
            group_thousands(self.metric_rows as u64),
            self.metric_files,
            self.metric_exclusions.failed_runs,
            self.metric_exclusions.non_positive
        );
        if !self.metrics.is_empty() {
            out.push_str("\n| Metric | Unit | Count | Files | Mean | Min | Max |\n");
            out.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
            for m in &self.metrics {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    m.name(),
                    m.unit,
                    m.count,
                    m.files,
                    format_value(m.mean, m.unit),
                    format_value(m.min, m.unit),
                    format_value(m.max, m.unit)
                );
            }
        }
        if !self.markdown.is_empty() {
            let _ = writeln!(out, "\nMarkdown documents ({}):", self.markdown.len());
            for d in &self.markdown {
                let title = d.title.as_deref().map_or(String::from("(untitled)"), |t| {
                    let short: String = t.chars().take(80).collect();
                    if short.len() < t.len() {
                        format!("\"{short}...\"")
                    } else {
                        format!("\"{short}\"")
                    }
                });
                let _ = writeln!(out, "- {}: {} ({} headings)", d.path, title, d.headings);
            }
        }
        out
    }

    /// The numbers [`Facts::to_markdown`] can put in front of a model:
    /// counts, byte totals and each metric's count, mean, min and max.
    pub fn numbers(&self) -> Vec<f64> {
        let mut v = vec![
            self.total_files as f64,
            self.total_bytes as f64,
            self.skipped_files as f64,
            self.csv_rows as f64,
            self.markdown_headings as f64,
            self.metric_rows as f64,
            self.metric_files as f64,
            self.metric_exclusions.failed_runs as f64,
            self.metric_exclusions.non_positive as f64,
        ];
        for k in &self.kinds {
            v.extend([k.files as f64, k.bytes as f64]);
        }
        v.extend(self.skipped_by_code.values().map(|&n| n as f64));
        v.extend(self.unsupported_by_extension.values().map(|&n| n as f64));
        for m in &self.metrics {
            v.extend([m.count as f64, m.files as f64, m.mean, m.min, m.max]);
        }
        for d in &self.markdown {
            v.push(d.headings as f64);
        }
        super::numbers::sort_dedup(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(1234567), "1,234,567");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(format_value(181.96533, Unit::TokPerS), "181.97");
        assert_eq!(format_value(0.009408, Unit::Ms), "0.009408");
        assert_eq!(format_value(0.15, Unit::Ms), "0.15");
        assert_eq!(format_value(0.0, Unit::Ms), "0.00");
        assert_eq!(format_value(1536.0 * 1024.0, Unit::Bytes), "1,572,864");
    }
}
