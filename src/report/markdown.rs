//! The per-agent Markdown report.
//!
//! The layout up to "Persona Prompt" is the original Chimera agents' (users
//! compare these files across tools), then two sections chimera adds: the
//! **Data facts** computed from the files and the **Number check**.
//!
//! ```text
//! # <label>
//!
//! # Technical Report: <label> Analysis
//!
//! **Date:** YYYY-MM-DD
//! **Agent Type:** <label>
//! **Model:** <model>
//! **Configuration:** num_gpu=0, num_ctx=4096, temp=0.6, top_p=0.9, top_k=40, repeat_penalty=1.1
//!
//! ---
//!
//! <the report the model wrote>
//!
//! ---
//!
//! ## Workflow Summary
//! ## Metrics
//! ## Key Findings
//! ## Recommendations
//! ## Persona Prompt
//! ## Data facts
//! ## Number check
//! ```
//!
//! The model's text is inserted as written, except that a code fence it
//! left open (a call cut off by `num_predict`) is closed, so it cannot
//! swallow the sections that follow.

use std::fmt::Write as _;

use super::metrics::MetricsBlock;
use super::numcheck::NumberCheck;
use crate::agent::StageTimes;
use crate::engine::Options;

/// The settings shown on the Configuration line.
#[derive(Debug, Clone, PartialEq)]
pub struct Configuration {
    /// Layers offloaded to a GPU: 0 while the engine runs on the CPU only.
    pub num_gpu: u32,
    pub num_ctx: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub repeat_penalty: f32,
}

impl Configuration {
    pub fn new(options: &Options, num_gpu: u32) -> Self {
        Self {
            num_gpu,
            num_ctx: options.num_ctx,
            temperature: options.temperature,
            top_p: options.top_p,
            top_k: options.top_k,
            repeat_penalty: options.repeat_penalty,
        }
    }
}

impl std::fmt::Display for Configuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "num_gpu={}, num_ctx={}, temp={}, top_p={}, top_k={}, repeat_penalty={}",
            self.num_gpu,
            self.num_ctx,
            self.temperature,
            self.top_p,
            self.top_k,
            self.repeat_penalty
        )
    }
}

/// Everything one agent report shows; the renderer adds nothing of its own
/// but layout.
#[derive(Debug, Clone)]
pub struct AgentReport<'a> {
    pub label: &'a str,
    /// `YYYY-MM-DD`.
    pub date: &'a str,
    pub model: &'a str,
    pub configuration: Configuration,
    /// The report call's text.
    pub body: &'a str,
    pub files_analyzed: usize,
    pub times: &'a StageTimes,
    pub data_summary: &'a str,
    pub metrics: &'a MetricsBlock,
    pub key_findings: &'a [String],
    /// Said under Key Findings when they were not found the usual way.
    pub key_findings_note: Option<&'a str>,
    pub recommendations: &'a [String],
    pub recommendations_note: Option<&'a str>,
    pub persona_prompt: &'a str,
    /// `Facts::to_markdown()`.
    pub facts_markdown: &'a str,
    pub number_check: &'a NumberCheck,
}

/// Renders the report (ends with one newline).
pub fn render(r: &AgentReport) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "# {label}\n\n# Technical Report: {label} Analysis\n\n\
         **Date:** {date}\n**Agent Type:** {label}\n**Model:** {model}\n\
         **Configuration:** {config}\n\n---\n\n",
        label = r.label,
        date = r.date,
        model = r.model,
        config = r.configuration
    );
    let body = close_open_fence(r.body.trim());
    if body.is_empty() {
        s.push_str("_The model returned no text._\n");
    } else {
        s.push_str(&body);
        s.push('\n');
    }
    s.push_str("\n---\n\n");
    workflow_section(&mut s, r);
    metrics_section(&mut s, r.metrics);
    list_section(&mut s, "Key Findings", r.key_findings, r.key_findings_note);
    list_section(
        &mut s,
        "Recommendations",
        r.recommendations,
        r.recommendations_note,
    );
    let _ = write!(
        s,
        "## Persona Prompt\n{}\n",
        fenced(r.persona_prompt.trim())
    );
    s.push('\n');
    s.push_str(&facts_section(r.facts_markdown));
    s.push('\n');
    s.push_str(&number_check_section(r.number_check));
    s
}

fn workflow_section(s: &mut String, r: &AgentReport) {
    let t = r.times;
    let _ = write!(
        s,
        "## Workflow Summary\n- Files analyzed: {}\n\
         - Execution time: {:.2}s (ingest {:.2}s | analysis {:.2}s | report {:.2}s)\n\
         - Data summary:\n{}\n\n",
        r.files_analyzed,
        t.total_s,
        t.ingest_s,
        t.analysis_s,
        t.report_s,
        fenced(r.data_summary.trim_end())
    );
}

fn metrics_section(s: &mut String, m: &MetricsBlock) {
    let _ = write!(
        s,
        "## Metrics\n- Throughput: {:.2} tok/s\n- TTFT: {:.2} ms\n- Total Duration: {:.2} ms\n\
         - Tokens Generated: {}\n- Prompt Eval: {:.2} ms\n- Eval Duration: {:.2} ms\n\
         - Load Duration: {:.2} ms\n\n",
        m.eval_tokens_per_s,
        m.ttft_ms,
        m.total_ms,
        m.generated_tokens,
        m.prompt_eval_ms,
        m.eval_ms,
        m.load_ms
    );
}

fn list_section(s: &mut String, title: &str, items: &[String], note: Option<&str>) {
    let _ = writeln!(s, "## {title}");
    if let Some(n) = note {
        let _ = writeln!(s, "_{n}_\n");
    }
    if items.is_empty() {
        s.push_str("- None found in the analysis.\n");
    }
    for item in items {
        let _ = writeln!(s, "- {}", item.trim());
    }
    s.push('\n');
}

/// The Data facts appendix.
pub fn facts_section(facts_markdown: &str) -> String {
    format!(
        "## Data facts\n_Computed by chimera from the ingested files, not by the model._\n\n{}\n",
        facts_markdown.trim_end()
    )
}

/// The Number check section.
pub fn number_check_section(c: &NumberCheck) -> String {
    let mut s = String::from(
        "## Number check\n_Figures in the model's text (this report and the analysis it draws on) \
         that appear nowhere in the data, the facts or the prompts chimera wrote. A figure \
         matches when a known number rounds to it as written; thousands separators, \
         percentages written as fractions and either sign are accepted. List and section \
         numbers, years, dates, times, ordinals and digits inside names (gemma3, TR108, file \
         paths) are not checked._\n\n",
    );
    if c.figures == 0 {
        s.push_str("The model's text holds no figures to check.\n");
        return s;
    }
    let _ = writeln!(
        s,
        "- Figures checked: {} (against {} known numbers)\n- Not found: {}\n",
        c.figures,
        c.known_numbers,
        c.unmatched.len()
    );
    if c.unmatched.is_empty() {
        s.push_str("Every figure was found in the data or the facts.\n");
        return s;
    }
    s.push_str("| Figure | In | Times | Context |\n| ---: | --- | ---: | --- |\n");
    for u in &c.unmatched {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            u.figure,
            u.source,
            u.occurrences,
            u.context.replace('|', "\\|")
        );
    }
    s
}

/// `text` in a code fence longer than any backtick run inside it.
pub fn fenced(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}\n{text}\n{fence}")
}

/// The opening fence of a line (` ``` ` or `~~~`, three or more), if any.
fn fence_of(line: &str) -> Option<(char, usize)> {
    let t = line.trim_start_matches(' ');
    if line.len() - t.len() > 3 {
        return None;
    }
    let c = t.chars().next().filter(|&c| c == '`' || c == '~')?;
    let n = t.chars().take_while(|&x| x == c).count();
    (n >= 3).then_some((c, n))
}

/// `text` with a code fence it leaves open closed at the end.
pub fn close_open_fence(text: &str) -> String {
    let mut open: Option<(char, usize)> = None;
    for line in text.lines() {
        match (open, fence_of(line)) {
            (None, Some(f)) => open = Some(f),
            (Some((c, n)), Some((c2, n2))) if c == c2 && n2 >= n => {
                let rest = line.trim().trim_start_matches(c);
                if rest.trim().is_empty() {
                    open = None;
                }
            }
            _ => {}
        }
    }
    match open {
        Some((c, n)) => format!("{text}\n{}", c.to_string().repeat(n)),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::numcheck::Unmatched;

    #[test]
    fn configuration_line() {
        let o = Options {
            num_ctx: 4096,
            temperature: 0.6,
            ..Default::default()
        };
        assert_eq!(
            Configuration::new(&o, 0).to_string(),
            "num_gpu=0, num_ctx=4096, temp=0.6, top_p=0.9, top_k=40, repeat_penalty=1.1"
        );
    }

    #[test]
    fn fences() {
        assert_eq!(fenced("a"), "```\na\n```");
        assert_eq!(fenced("x ```y```"), "````\nx ```y```\n````");
        assert_eq!(
            close_open_fence("a\n```rust\nfn x"),
            "a\n```rust\nfn x\n```"
        );
        assert_eq!(close_open_fence("```\nx\n```"), "```\nx\n```");
        assert_eq!(close_open_fence("````\n```\nx"), "````\n```\nx\n````");
        assert_eq!(close_open_fence("~~~\nx"), "~~~\nx\n~~~");
        assert_eq!(
            close_open_fence("    ```\nindented code"),
            "    ```\nindented code"
        );
    }

    fn sample_check() -> NumberCheck {
        NumberCheck {
            figures: 5,
            known_numbers: 120,
            unmatched: vec![Unmatched {
                figure: "45".into(),
                source: "report".into(),
                occurrences: 2,
                context: "holds 45 CSV files | more".into(),
            }],
        }
    }

    #[test]
    fn number_check_rendering() {
        let s = number_check_section(&sample_check());
        assert!(s.starts_with("## Number check\n_Figures in the model's text"));
        assert!(s.ends_with(
            "- Figures checked: 5 (against 120 known numbers)\n- Not found: 1\n\n\
             | Figure | In | Times | Context |\n| ---: | --- | ---: | --- |\n\
             | 45 | report | 2 | holds 45 CSV files \\| more |\n"
        ));
        let clean = NumberCheck {
            figures: 3,
            known_numbers: 9,
            unmatched: vec![],
        };
        assert!(number_check_section(&clean)
            .ends_with("- Not found: 0\n\nEvery figure was found in the data or the facts.\n"));
        assert!(number_check_section(&NumberCheck::default())
            .ends_with("The model's text holds no figures to check.\n"));
    }

    #[test]
    fn full_report_layout() {
        let times = StageTimes {
            ingest_s: 0.012,
            analysis_s: 10.5,
            report_s: 20.25,
            total_s: 30.762,
        };
        let metrics = MetricsBlock {
            eval_tokens_per_s: 41.4249,
            ttft_ms: 1063.991,
            total_ms: 58219.78,
            generated_tokens: 2299,
            eval_tokens: 2297,
            prompt_tokens: 3000,
            prompt_eval_ms: 800.754,
            prompt_tokens_per_s: 3746.4,
            eval_ms: 55535.777,
            load_ms: 487.15,
        };
        let findings = vec!["Throughput peaks at **303.90 tok/s**".to_string()];
        let check = sample_check();
        let r = AgentReport {
            label: "Chimera Agent A",
            date: "2025-11-15",
            model: "gemma3-270m-q4_k_m",
            configuration: Configuration::new(&Options::default(), 0),
            body: "\n## 1. Executive Summary\nAll good.\n```\nunclosed\n",
            files_analyzed: 3,
            times: &times,
            data_summary: "Total files analyzed: 3\n\nCSV Files (3)\n  - a.csv\n\n",
            metrics: &metrics,
            key_findings: &findings,
            key_findings_note: None,
            recommendations: &[],
            recommendations_note: Some(
                "Found by keyword: the analysis had no recommendations section.",
            ),
            persona_prompt: "You are X.\n",
            facts_markdown: "- Files ingested: 3\n",
            number_check: &check,
        };
        let want = "# Chimera Agent A

# Technical Report: Chimera Agent A Analysis

**Date:** 2025-11-15
**Agent Type:** Chimera Agent A
**Model:** gemma3-270m-q4_k_m
**Configuration:** num_gpu=0, num_ctx=2048, temp=0.8, top_p=0.9, top_k=40, repeat_penalty=1.1

---

## 1. Executive Summary
All good.
```
unclosed
```

---

## Workflow Summary
- Files analyzed: 3
- Execution time: 30.76s (ingest 0.01s | analysis 10.50s | report 20.25s)
- Data summary:
```
Total files analyzed: 3

CSV Files (3)
  - a.csv
```

## Metrics
- Throughput: 41.42 tok/s
- TTFT: 1063.99 ms
- Total Duration: 58219.78 ms
- Tokens Generated: 2299
- Prompt Eval: 800.75 ms
- Eval Duration: 55535.78 ms
- Load Duration: 487.15 ms

## Key Findings
- Throughput peaks at **303.90 tok/s**

## Recommendations
_Found by keyword: the analysis had no recommendations section._

- None found in the analysis.

## Persona Prompt
```
You are X.
```

## Data facts
_Computed by chimera from the ingested files, not by the model._

- Files ingested: 3

";
        let got = render(&r);
        assert!(got.starts_with(want), "got:\n{got}");
        assert_eq!(&got[want.len()..], number_check_section(&check));
    }
}
