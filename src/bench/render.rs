//! The three outputs of a benchmark: a Markdown table like llama-bench's
//! (with the definitions above it), the whole [`BenchReport`] as JSON, and
//! CSV with one row per sample.

use std::fmt::Write as _;

use anyhow::Result;

use super::{
    BenchReport, Kind, ModelResult, DEF_LOAD, DEF_MODEL_RSS, DEF_PEAK, DEF_PP, DEF_STATS, DEF_TG,
    DEF_TTFT,
};
use crate::report::stats::Stat;

const MIB: f64 = 1024.0 * 1024.0;

/// `241.41 MiB`, as llama-bench prints sizes.
pub fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / MIB)
}

/// `268.10 M` / `3.88 B`, as llama-bench prints parameter counts.
pub fn params(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}

fn pm(s: &Stat) -> String {
    format!("{:.2} ± {:.2}", s.mean, s.stddev)
}

/// The Markdown output: settings, definitions, the table, then memory, load
/// and llama-bench notes per model and the skipped models.
pub fn markdown(r: &BenchReport) -> String {
    let mut s = String::new();
    let threads: Vec<String> = r.models.iter().map(|m| m.threads.to_string()).collect();
    let warm = if r.sizes.warmup {
        "after 1 warm-up each"
    } else {
        "no warm-up"
    };
    let _ = writeln!(
        s,
        "chimera bench {} · {} repetition(s) {warm} · device {} · threads {} · t/s and ms: mean ± sample stddev\n",
        r.version,
        r.sizes.repetitions,
        r.device,
        if threads.is_empty() {
            "-".into()
        } else {
            threads.join(",")
        }
    );
    for d in [
        DEF_PP,
        DEF_TG,
        DEF_TTFT,
        DEF_LOAD,
        DEF_PEAK,
        DEF_MODEL_RSS,
        DEF_STATS,
    ] {
        let _ = writeln!(s, "- {d}");
    }
    s.push('\n');
    let llama = r.models.iter().any(|m| m.llama_bench.is_some());
    s.push_str("| model | size | params | backend | threads | test | t/s | ms |");
    if llama {
        s.push_str(" llama.cpp t/s | chimera / llama.cpp |");
    }
    s.push_str("\n| --- | ---: | ---: | --- | ---: | --- | ---: | ---: |");
    if llama {
        s.push_str(" ---: | ---: |");
    }
    s.push('\n');
    for m in &r.models {
        let head = format!(
            "| {} | {} | {} | {} ({}) | {} |",
            m.model,
            mib(m.file_bytes),
            params(m.params),
            m.backend,
            m.isa,
            m.threads
        );
        for t in &m.tests {
            let ts = t.ts.as_ref().map(pm).unwrap_or_default();
            let name = if t.kind == Kind::Ttft && t.prompt_tokens != t.n_prompt {
                format!("{} ({} tok)", t.test, t.prompt_tokens)
            } else {
                t.test.clone()
            };
            let _ = write!(s, "{head} {name} | {ts} | {} |", pm(&t.ms));
            if llama {
                let l = m.llama_bench.as_ref();
                let theirs = l.and_then(|l| l.tests.iter().find(|x| x.test == t.test));
                let ratio = l.and_then(|l| l.ratios.iter().find(|x| x.test == t.test));
                let _ = write!(
                    s,
                    " {} | {} |",
                    theirs
                        .map(|x| format!("{:.2} ± {:.2}", x.avg_ts, x.stddev_ts))
                        .unwrap_or_default(),
                    ratio.map(|x| format!("{:.2}", x.ratio)).unwrap_or_default()
                );
            }
            s.push('\n');
        }
        let mut load_rows = Vec::new();
        if m.load.first_state != "warm" {
            load_rows.push((
                format!("load ({}, first)", m.load.first_state),
                format!("{:.2}", m.load.first_ms),
            ));
        }
        if m.load.warm_ms.n > 0 {
            load_rows.push((
                format!("load (warm, n={})", m.load.warm_ms.n),
                pm(&m.load.warm_ms),
            ));
        }
        for (name, ms) in load_rows {
            let _ = write!(s, "{head} {name} | | {ms} |");
            if llama {
                s.push_str(" | |");
            }
            s.push('\n');
        }
    }
    if !r.models.is_empty() {
        s.push('\n');
    }
    for m in &r.models {
        s.push_str(&notes(m));
    }
    for k in &r.skipped {
        let fetch = k
            .fetch
            .as_ref()
            .map(|f| format!("; fetch with `{f}`"))
            .unwrap_or_default();
        let _ = writeln!(s, "- skipped {}: {}{fetch}", k.model, k.reason);
    }
    s
}

fn notes(m: &ModelResult) -> String {
    let mut s = String::new();
    let scope = if m.memory.peak_scope == "model" {
        ""
    } else {
        " (process peak: VmHWM could not be reset)"
    };
    let cached = m
        .load
        .page_cache_fraction
        .map(|f| {
            format!(
                " ({:.0}% of the weights in the page cache before it)",
                f * 100.0
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "- {}: peak RSS {}{scope} · model RSS {} ({:.3}x the file) · first load {}{cached}: {:.2} ms",
        m.model,
        mib(m.memory.peak_rss_bytes),
        mib(m.memory.model_rss_bytes),
        m.memory.model_rss_bytes as f64 / m.file_bytes.max(1) as f64,
        m.load.first_state,
        m.load.first_ms
    );
    if let Some(l) = &m.llama_bench {
        match &l.error {
            Some(e) => {
                let _ = writeln!(s, "- {}: llama-bench not compared: {e}", m.model);
            }
            None => {
                let _ = writeln!(
                    s,
                    "- {}: llama.cpp columns from `{}` (build {}, {}); ratio = chimera t/s / llama.cpp t/s",
                    m.model, l.command, l.build_commit, l.model_type
                );
            }
        }
    }
    s
}

/// The whole report as pretty JSON.
pub fn json(r: &BenchReport) -> Result<String> {
    let mut s = serde_json::to_string_pretty(r)?;
    s.push('\n');
    Ok(s)
}

/// The CSV header.
pub const CSV_COLUMNS: [&str; 16] = [
    "engine",
    "model",
    "file",
    "backend",
    "isa",
    "threads",
    "test",
    "kind",
    "n_prompt",
    "n_gen",
    "rep",
    "ms",
    "t_s",
    "load_state",
    "peak_rss_bytes",
    "model_rss_bytes",
];

/// One row per sample: chimera's tests, its loads, and llama-bench's samples.
pub fn csv(r: &BenchReport) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_COLUMNS)?;
    for m in &r.models {
        let base = |engine: &str| {
            vec![
                engine.to_string(),
                m.model.clone(),
                m.file.clone(),
                m.backend.clone(),
                m.isa.clone(),
                m.threads.to_string(),
            ]
        };
        let tail = |state: &str| {
            vec![
                state.to_string(),
                m.memory.peak_rss_bytes.to_string(),
                m.memory.model_rss_bytes.to_string(),
            ]
        };
        for t in &m.tests {
            let kind = serde_json::to_value(t.kind)?;
            for (i, ms) in t.ms.values.iter().enumerate() {
                let ts =
                    t.ts.as_ref()
                        .and_then(|s| s.values.get(i))
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                let mut row = base("chimera");
                row.extend([
                    t.test.clone(),
                    kind.as_str().unwrap_or_default().to_string(),
                    t.prompt_tokens.max(t.n_prompt).to_string(),
                    t.n_gen.to_string(),
                    (i + 1).to_string(),
                    ms.to_string(),
                    ts,
                ]);
                row.extend(tail(""));
                w.write_record(&row)?;
            }
        }
        let first_counted = m.load.first_state == "warm";
        let mut loads = vec![(m.load.first_state.clone(), m.load.first_ms)];
        let rest = if first_counted {
            &m.load.warm_ms.values[1.min(m.load.warm_ms.values.len())..]
        } else {
            &m.load.warm_ms.values[..]
        };
        loads.extend(rest.iter().map(|&v| ("warm".to_string(), v)));
        for (i, (state, ms)) in loads.iter().enumerate() {
            let mut row = base("chimera");
            row.extend([
                "load".into(),
                "load".into(),
                String::new(),
                String::new(),
                (i + 1).to_string(),
                ms.to_string(),
                String::new(),
            ]);
            row.extend(tail(state));
            w.write_record(&row)?;
        }
        if let Some(l) = &m.llama_bench {
            for t in &l.tests {
                for (i, ts) in t.samples_ts.iter().enumerate() {
                    let mut row = base("llama.cpp");
                    row[5] = l.threads.to_string();
                    let kind = if t.n_gen == 0 { "pp" } else { "tg" };
                    row.extend([
                        t.test.clone(),
                        kind.into(),
                        t.n_prompt.to_string(),
                        t.n_gen.to_string(),
                        (i + 1).to_string(),
                        t.samples_ms
                            .get(i)
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                        ts.to_string(),
                        String::new(),
                        String::new(),
                        String::new(),
                    ]);
                    w.write_record(&row)?;
                }
            }
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}
