//! `chimera ingest`: scan an artifact tree, print its data summary, skipped
//! files and metrics overview (or one JSON object), and optionally write the
//! consolidated metrics table as CSV.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::ingest::{self, facts::format_value, metrics::CSV_HEADER, Ingest, IngestOptions};

/// Output format of `chimera ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The data summary, then skipped files with reasons, then a metrics overview.
    Text,
    /// One JSON object: files, skipped, metrics, facts and the summary text.
    Json,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Artifact folder to scan. Its reports/, csv_data/ and artifacts/
    /// folders are scanned when any exists, else ROOT itself.
    #[arg(value_name = "ROOT", default_value = ".")]
    pub root: PathBuf,

    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Also write the consolidated metrics table to FILE as CSV (written to
    /// a temporary file in the same folder, then renamed into place).
    #[arg(long, value_name = "FILE")]
    pub metrics_csv: Option<PathBuf>,

    /// Folder under ROOT to scan instead of reports, csv_data, artifacts.
    /// Repeat the flag or separate names with commas (--dirs a,b,c).
    #[arg(
        long = "dir",
        visible_alias = "dirs",
        value_name = "DIR",
        value_delimiter = ','
    )]
    pub dirs: Vec<String>,

    /// Skip files larger than this. Takes bytes or a binary suffix
    /// (K, M, G: 512K, 64M, 1G).
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_size)]
    pub max_file_size: u64,
}

/// `4096`, `512K`, `64M`, `64MiB`, `1G` -> bytes (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (use bytes or 512K, 64M, 1G)"))?;
    let mult: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("`{s}` has an unknown size suffix (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

pub fn run(args: IngestArgs) -> anyhow::Result<u8> {
    let mut opts = IngestOptions {
        max_file_bytes: args.max_file_size,
        ..IngestOptions::default()
    };
    let dirs: Vec<String> = args
        .dirs
        .iter()
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect();
    let named = !dirs.is_empty();
    if named {
        opts.dirs = dirs;
    }
    let ing = ingest::scan(&args.root, &opts)?;

    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    // The default folders are optional; one the user named is not.
    if named {
        for d in &opts.dirs {
            if !args.root.join(d).is_dir() {
                let _ = writeln!(
                    err,
                    "warning: --dir {d}: no such folder under {}; not scanned",
                    args.root.display()
                );
            }
        }
        if ing.scanned_dirs == ["."] {
            let _ = writeln!(
                err,
                "warning: none of the --dir folders exists: scanned all of {}",
                args.root.display()
            );
        }
    }
    for s in ing.bad_files() {
        let _ = writeln!(err, "{}", s.warning_line());
    }
    drop(err);

    if let Some(path) = &args.metrics_csv {
        write_metrics_csv(&ing, path)
            .with_context(|| format!("cannot write metrics CSV {}", path.display()))?;
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = match args.format {
        Format::Text => out.write_all(render_text(&ing).as_bytes()),
        Format::Json => serde_json::to_writer_pretty(&mut out, &ing.to_json())
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n")),
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        // A closed pipe (`| head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// Summary text, skipped files, metrics overview.
pub fn render_text(ing: &Ingest) -> String {
    use std::fmt::Write as _;
    let mut s = ing.summary_text();
    let _ = writeln!(s, "Skipped files ({})", ing.skipped.len());
    for k in &ing.skipped {
        let _ = writeln!(s, "  - {}: {}", k.path, k.reason);
    }
    s.push('\n');
    let facts = ing.facts();
    let _ = writeln!(
        s,
        "Metrics ({} values from {} files; left out: {} from failed runs, {} zero or negative)",
        facts.metric_rows,
        facts.metric_files,
        facts.metric_exclusions.failed_runs,
        facts.metric_exclusions.non_positive
    );
    if !facts.metrics.is_empty() {
        let names: Vec<String> = facts.metrics.iter().map(|m| m.name()).collect();
        let w = names.iter().map(String::len).max().unwrap_or(6).max(6);
        let _ = writeln!(
            s,
            "  {:<w$}  {:>6}  {:>5}  {:>14}  {:>14}  {:>14}  unit",
            "metric", "count", "files", "mean", "min", "max"
        );
        for (m, name) in facts.metrics.iter().zip(&names) {
            let _ = writeln!(
                s,
                "  {:<w$}  {:>6}  {:>5}  {:>14}  {:>14}  {:>14}  {}",
                name,
                m.count,
                m.files,
                format_value(m.mean, m.unit),
                format_value(m.min, m.unit),
                format_value(m.max, m.unit),
                m.unit
            );
        }
    }
    s
}

/// Writes the metrics table next to `path`, then renames it into place.
pub fn write_metrics_csv(ing: &Ingest, path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".chimera-metrics-")
        .suffix(".csv.tmp")
        .tempfile_in(dir)?;
    {
        let mut w = csv::Writer::from_writer(std::io::BufWriter::new(tmp.as_file()));
        w.write_record(CSV_HEADER)?;
        for r in &ing.metrics {
            w.write_record(r.csv_record())?;
        }
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
