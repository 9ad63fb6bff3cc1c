//! The two user prompts an agent sends. The persona is the system text of
//! both; these carry the data and the instructions. Instructions come last
//! because a small model follows what it read most recently, and because a
//! prompt too long for `num_ctx` loses its front (the data), not its task.
//!
//! The key facts in a prompt are `Facts::to_markdown()` without its list of
//! Markdown documents: on a large tree that list is most of the facts'
//! length (a path and title per document) and tells a model little, while
//! prompt evaluation is the slowest part of a CPU run. The report's Data
//! facts appendix keeps the whole list.

use std::fmt::Write as _;

use super::analysis::Analysis;
use crate::ingest::Facts;

/// The key facts as the prompts carry them (see the module docs).
pub fn prompt_facts(facts: &Facts) -> String {
    Facts {
        markdown: Vec::new(),
        ..facts.clone()
    }
    .to_markdown()
}

/// What the analysis call is asked to do.
pub const ANALYSIS_INSTRUCTIONS: &str = "\
Analyse the benchmark data above. Answer in Markdown with these four sections, each under its own heading:
## Executive Summary
A short paragraph on what the data shows.
## Key Performance Findings
Bullet points, one finding each.
## Performance Metrics Analysis
Throughput, time to first token, latency and the other metrics above, compared with each other.
## Recommendations for Optimization
Bullet points, one recommendation each.
Quote figures exactly as they appear above and do not invent any.";

/// What the report call is asked to do.
pub const REPORT_INSTRUCTIONS: &str = "\
Write a technical report on this benchmark data in Markdown, with exactly these sections:
## 1. Executive Summary
## 2. Data Ingestion Summary
## 3. Performance Analysis
## 4. Key Findings
## 5. Recommendations
## 6. Appendix
Cite the metrics given in the key facts, with their units, wherever they support a point. Quote figures exactly as given and do not invent any.";

fn data_block(out: &mut String, data_summary: &str, facts_markdown: &str) {
    let _ = write!(
        out,
        "Data summary:\n{}\n\nKey facts (computed from the files):\n{}\n\n",
        data_summary.trim_end(),
        facts_markdown.trim_end()
    );
}

/// The analysis call's user text: data summary, key facts, instructions.
pub fn analysis_prompt(data_summary: &str, facts_markdown: &str) -> String {
    let mut s = String::new();
    data_block(&mut s, data_summary, facts_markdown);
    s.push_str(ANALYSIS_INSTRUCTIONS);
    s
}

fn numbered(out: &mut String, title: &str, items: &[String]) {
    let _ = writeln!(out, "{title}:");
    if items.is_empty() {
        out.push_str("None provided.\n");
    }
    for (i, item) in items.iter().enumerate() {
        let _ = writeln!(out, "{}. {}", i + 1, item);
    }
    out.push('\n');
}

/// The report call's user text: what the analysis found, the data again
/// (so the report can cite it), instructions.
pub fn report_prompt(analysis: &Analysis, data_summary: &str, facts_markdown: &str) -> String {
    let mut s = String::from("Results of an earlier analysis of the same data:\n\n");
    let summary = analysis.summary.trim();
    let _ = write!(
        s,
        "Summary:\n{}\n\n",
        if summary.is_empty() {
            "None provided."
        } else {
            summary
        }
    );
    numbered(&mut s, "Key findings", &analysis.key_findings);
    numbered(&mut s, "Recommendations", &analysis.recommendations);
    data_block(&mut s, data_summary, facts_markdown);
    s.push_str(REPORT_INSTRUCTIONS);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_facts_leave_out_the_document_list() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.md"), "# Title\n").unwrap();
        let facts = crate::ingest::scan(tmp.path(), &Default::default())
            .unwrap()
            .facts();
        assert!(facts.to_markdown().contains("Markdown documents (1):"));
        let p = prompt_facts(&facts);
        assert!(!p.contains("Markdown documents"), "{p}");
        assert!(
            p.starts_with("- Files ingested: 1 (CSV 0, JSON 0, Markdown 1)"),
            "{p}"
        );
    }

    #[test]
    fn analysis_prompt_layout() {
        let p = analysis_prompt("Total files analyzed: 2\n\n", "- Files ingested: 2\n");
        assert_eq!(
            p,
            format!(
                "Data summary:\nTotal files analyzed: 2\n\nKey facts (computed from the files):\n\
                 - Files ingested: 2\n\n{ANALYSIS_INSTRUCTIONS}"
            )
        );
    }

    #[test]
    fn report_prompt_layout() {
        let a = Analysis {
            summary: "Two files.".into(),
            key_findings: vec!["Fast.".into(), "Small.".into()],
            ..Default::default()
        };
        let p = report_prompt(&a, "S", "F");
        assert_eq!(
            p,
            format!(
                "Results of an earlier analysis of the same data:\n\nSummary:\nTwo files.\n\n\
                 Key findings:\n1. Fast.\n2. Small.\n\nRecommendations:\nNone provided.\n\n\
                 Data summary:\nS\n\nKey facts (computed from the files):\nF\n\n{REPORT_INSTRUCTIONS}"
            )
        );
        for section in [
            "1. Executive Summary",
            "2. Data Ingestion Summary",
            "3. Performance Analysis",
            "4. Key Findings",
            "5. Recommendations",
            "6. Appendix",
        ] {
            assert!(REPORT_INSTRUCTIONS.contains(section), "{section}");
        }
    }
}
