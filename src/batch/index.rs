//! `index.md` and `index.csv`: every job of a batch folder (or of merged
//! shards) with its settings and headline metrics, and `chimera batch
//! merge`, which joins the manifests of shard folders into one index.
//!
//! Headline metrics per job and agent, from the job's `summary.json`:
//! throughput (`eval_tokens_per_s`, the agent's calls together) and TTFT
//! (`ttft_ms`), mean and sample stddev over the job's counted runs; the
//! generated tokens of those runs; and the job's wall time (model load and
//! warm-up runs included).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, Result};

use super::display_value;
use super::run::{JobRecord, Manifest, Status, MANIFEST};
use crate::report::output::write_atomic;

pub const INDEX_MD: &str = "index.md";
pub const INDEX_CSV: &str = "index.csv";
pub const MERGED_JSON: &str = "merged.json";

/// What the index says above its table.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub jobs_file: String,
    pub grid_id: String,
    pub total_jobs: usize,
    /// `shard 1/2`, `merged from 3 folders`, or empty.
    pub scope: String,
    /// Ids of the whole expansion without a finished job here.
    pub missing: Vec<String>,
}

impl Meta {
    pub fn of_manifest(m: &Manifest, jobs_file: &Path) -> Self {
        Self {
            jobs_file: jobs_file.display().to_string(),
            grid_id: m.grid_id.clone(),
            total_jobs: m.total_jobs,
            scope: m
                .shard
                .as_ref()
                .map(|s| format!("shard {s}"))
                .unwrap_or_default(),
            missing: Vec::new(),
        }
    }
}

/// Setting keys whose values differ between the jobs (model always).
fn varying(records: &[JobRecord]) -> Vec<String> {
    let keys: BTreeSet<&String> = records.iter().flat_map(|r| r.settings.keys()).collect();
    let mut out: Vec<String> = keys
        .into_iter()
        .filter(|k| {
            let vals: BTreeSet<String> = records
                .iter()
                .map(|r| r.settings.get(*k).map(display_value).unwrap_or_default())
                .collect();
            vals.len() > 1 || *k == "model"
        })
        .cloned()
        .collect();
    out.sort_by_key(|k| match k.as_str() {
        "model" => (0, String::new()),
        "scenario" => (1, String::new()),
        o => (2, o.to_string()),
    });
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `index.md`.
pub fn render_md(records: &[JobRecord], meta: &Meta) -> String {
    let mut s = String::from("# chimera batch: index\n\n");
    let count = |st: Status| records.iter().filter(|r| r.status == st).count();
    let _ = writeln!(
        s,
        "- Job file: {} (grid {}, {} jobs in all)",
        meta.jobs_file, meta.grid_id, meta.total_jobs
    );
    let scope = if meta.scope.is_empty() {
        String::new()
    } else {
        format!("{}: ", meta.scope)
    };
    let _ = writeln!(
        s,
        "- {scope}{} jobs here: {} finished, {} failed, {} pending",
        records.len(),
        count(Status::Finished),
        count(Status::Failed),
        count(Status::Pending)
    );
    if !meta.missing.is_empty() {
        let _ = writeln!(
            s,
            "- Missing from every folder merged: {} ({})",
            meta.missing.len(),
            meta.missing.join(", ")
        );
    }
    s.push_str(
        "- Throughput = `eval_tokens_per_s` (an agent's calls together) and TTFT = `ttft_ms`, \
         mean ± sample stddev over the job's counted runs (its summary.json); Tokens = tokens \
         generated in those runs; Wall = the job's wall-clock time, model load and warm-up \
         runs included. Every setting is in index.csv.\n\n",
    );
    let keys = varying(records);
    s.push_str("| # | Job |");
    for k in &keys {
        let _ = write!(s, " {k} |");
    }
    s.push_str(
        " Status | Agent | Runs | Throughput (tok/s) | TTFT (ms) | Tokens | Wall (s) |\n|---:|---|",
    );
    for _ in &keys {
        s.push_str("---|");
    }
    s.push_str("---|---|---:|---:|---:|---:|---:|\n");
    for r in records {
        let mut head = format!("| {} | [{}]({}/summary.md) |", r.index + 1, r.id, r.dir);
        for k in &keys {
            let v = r.settings.get(k).map(display_value).unwrap_or_default();
            let _ = write!(head, " {} |", cell(&v));
        }
        let wall = r.wall_s.map(|w| format!("{w:.2}")).unwrap_or_default();
        let status = match (&r.status, &r.error) {
            (Status::Failed, Some(e)) => format!("failed: {}", cell(e)),
            (st, _) => st.as_str().to_string(),
        };
        if r.headline.is_empty() {
            let _ = writeln!(s, "{head} {status} | | | | | | {wall} |");
        }
        for h in &r.headline {
            let _ = writeln!(
                s,
                "{head} {status} | {} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.0} | {wall} |",
                h.agent,
                h.runs,
                h.eval_tokens_per_s_mean,
                h.eval_tokens_per_s_stddev,
                h.ttft_ms_mean,
                h.ttft_ms_stddev,
                h.generated_tokens
            );
        }
    }
    s
}

/// `index.csv`: one row per job and agent (one row for a job without
/// figures), every setting a column.
pub fn render_csv(records: &[JobRecord]) -> Result<String> {
    let keys: BTreeSet<&String> = records.iter().flat_map(|r| r.settings.keys()).collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = ["index", "job", "status", "dir"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    header.extend(keys.iter().map(|k| k.to_string()));
    header.extend(
        [
            "agent",
            "label",
            "runs",
            "eval_tokens_per_s_mean",
            "eval_tokens_per_s_stddev",
            "ttft_ms_mean",
            "ttft_ms_stddev",
            "generated_tokens",
            "wall_s",
            "finished_at",
            "error",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    w.write_record(&header)?;
    for r in records {
        let mut head = vec![
            (r.index + 1).to_string(),
            r.id.clone(),
            r.status.as_str().to_string(),
            r.dir.clone(),
        ];
        head.extend(
            keys.iter()
                .map(|k| r.settings.get(*k).map(display_value).unwrap_or_default()),
        );
        let tail = [
            r.wall_s.map(|w| w.to_string()).unwrap_or_default(),
            r.finished_at.clone().unwrap_or_default(),
            r.error.clone().unwrap_or_default(),
        ];
        if r.headline.is_empty() {
            let mut row = head.clone();
            row.extend(std::iter::repeat_n(String::new(), 8));
            row.extend(tail.iter().cloned());
            w.write_record(&row)?;
        }
        for h in &r.headline {
            let mut row = head.clone();
            row.extend([
                h.agent.clone(),
                h.label.clone(),
                h.runs.to_string(),
                h.eval_tokens_per_s_mean.to_string(),
                h.eval_tokens_per_s_stddev.to_string(),
                h.ttft_ms_mean.to_string(),
                h.ttft_ms_stddev.to_string(),
                h.generated_tokens.to_string(),
            ]);
            row.extend(tail.iter().cloned());
            w.write_record(&row)?;
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// Writes `index.md` and `index.csv` into `dir`, atomically.
pub fn write(dir: &Path, records: &[JobRecord], meta: &Meta) -> Result<()> {
    write_atomic(&dir.join(INDEX_MD), render_md(records, meta).as_bytes())?;
    write_atomic(&dir.join(INDEX_CSV), render_csv(records)?.as_bytes())
}

/// Absolute form of `p` with `.` and `..` resolved lexically.
fn absolute(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `to` relative to the folder `from`, with `/` separators.
pub fn relative(from: &Path, to: &Path) -> String {
    let (f, t) = (absolute(from), absolute(to));
    let fc: Vec<_> = f.components().collect();
    let tc: Vec<_> = t.components().collect();
    let common = fc.iter().zip(&tc).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); fc.len() - common];
    parts.extend(
        tc[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// What a merge found.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub out: PathBuf,
    pub folders: usize,
    pub total_jobs: usize,
    pub finished: usize,
    pub missing: Vec<String>,
    /// Ids finished in more than one folder (the later one is kept).
    pub duplicates: Vec<String>,
}

/// The common parent folder of `dirs`, if they have one.
pub fn common_parent(dirs: &[PathBuf]) -> Option<PathBuf> {
    let parents: Vec<PathBuf> = dirs
        .iter()
        .map(|d| absolute(d).parent().map(Path::to_path_buf))
        .collect::<Option<_>>()?;
    let first = parents.first()?;
    parents.iter().all(|p| p == first).then(|| first.clone())
}

/// Joins the manifests of batch folders `dirs` (shards of one job file)
/// into `out/index.md`, `out/index.csv` and `out/merged.json`.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Merged> {
    anyhow::ensure!(!dirs.is_empty(), "nothing to merge: name the shard folders");
    let mut manifests = Vec::new();
    for d in dirs {
        anyhow::ensure!(d.is_dir(), "batch folder {} not found", d.display());
        let m = Manifest::load(d)?.with_context(|| {
            format!(
                "{} has no {MANIFEST}: not a chimera batch folder",
                d.display()
            )
        })?;
        if let Some((d0, m0)) = manifests
            .first()
            .map(|(d, m): &(&PathBuf, Manifest)| (d, m))
        {
            anyhow::ensure!(
                m.grid_id == m0.grid_id,
                "{} and {} come from different job files (grid {} vs {})",
                d0.display(),
                d.display(),
                m0.grid_id,
                m.grid_id
            );
        }
        manifests.push((d, m));
    }
    let first = &manifests[0].1;
    let order: BTreeMap<&str, usize> = first
        .all_job_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut by_id: BTreeMap<String, JobRecord> = BTreeMap::new();
    let mut duplicates = Vec::new();
    for (d, m) in &manifests {
        for r in &m.jobs {
            let mut r = r.clone();
            r.dir = relative(out, &d.join(&r.dir));
            match by_id.get(&r.id) {
                None => {
                    by_id.insert(r.id.clone(), r);
                }
                Some(old) => {
                    let better = match (old.status, r.status) {
                        (Status::Finished, Status::Finished) => {
                            duplicates.push(r.id.clone());
                            r.finished_at > old.finished_at
                        }
                        (Status::Finished, _) => false,
                        (_, Status::Finished) => true,
                        _ => false,
                    };
                    if better {
                        by_id.insert(r.id.clone(), r);
                    }
                }
            }
        }
    }
    let mut records: Vec<JobRecord> = by_id.into_values().collect();
    records.sort_by_key(|r| order.get(r.id.as_str()).copied().unwrap_or(usize::MAX));
    let finished: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.status == Status::Finished)
        .map(|r| r.id.as_str())
        .collect();
    let missing: Vec<String> = first
        .all_job_ids
        .iter()
        .filter(|id| !finished.contains(id.as_str()))
        .cloned()
        .collect();
    let meta = Meta {
        jobs_file: first.jobs_file.clone(),
        grid_id: first.grid_id.clone(),
        total_jobs: first.total_jobs,
        scope: format!("merged from {} folder(s)", manifests.len()),
        missing: missing.clone(),
    };
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    write(out, &records, &meta)?;
    let sources: Vec<serde_json::Value> = manifests
        .iter()
        .map(|(d, m)| {
            serde_json::json!({
                "folder": relative(out, d),
                "shard": m.shard,
                "jobs": m.jobs.len(),
                "finished": m.count(Status::Finished),
            })
        })
        .collect();
    let merged = serde_json::json!({
        "jobs_file": first.jobs_file,
        "grid_id": first.grid_id,
        "total_jobs": first.total_jobs,
        "finished": finished.len(),
        "missing": missing,
        "sources": sources,
        "jobs": records,
    });
    let mut bytes = serde_json::to_vec_pretty(&merged)?;
    bytes.push(b'\n');
    write_atomic(&out.join(MERGED_JSON), &bytes)?;
    Ok(Merged {
        out: out.to_path_buf(),
        folders: manifests.len(),
        total_jobs: first.total_jobs,
        finished: finished.len(),
        missing,
        duplicates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative(Path::new("/a/b"), Path::new("/a/b/c/d")), "c/d");
        assert_eq!(relative(Path::new("/a/b"), Path::new("/a/x/y")), "../x/y");
        assert_eq!(relative(Path::new("/a"), Path::new("/a")), ".");
        assert_eq!(
            relative(Path::new("/a/b/../c"), Path::new("/a/c/jobs")),
            "jobs"
        );
    }
}
