//! Reading the analysis call's text into a summary, key findings and
//! recommendations.
//!
//! # Rules
//! * **Headings** are ATX lines (`## Key Findings`), lines that are bold
//!   as a whole (`**Key Performance Findings:**`), and short lines (at most
//!   six words) whose first or last word names a section — `summary`,
//!   `overview`, `finding`, `insight`, `observation` or `recommend` — when
//!   numbered (`2. Key Findings`) or ending in `:` (`Recommendations:`).
//!   Lines inside code fences are never headings.
//! * A heading's **kind** comes from its words, first match wins:
//!   recommendations (`recommend`, `optimi`, `suggest`, `next step`,
//!   `action`, `improvement`), findings (`finding`, `insight`,
//!   `observation`, `highlight`, `key performance`, `result`), summary
//!   (`summary`, `overview`), else other.
//! * A **section** runs to the next heading, except that a heading of kind
//!   other that is deeper than the section's own (`###` under `##`, or a
//!   bold line under an ATX heading) is a sub-heading and keeps it going.
//! * **Findings / recommendations**: the bullet items (`-`, `*`, `+`, `•`,
//!   `1.`, `1)`) of every section of that kind, markers removed; when those
//!   sections hold text but no bullets, their lines. When no section of the
//!   kind has any, the *keyword fallback* takes lines anywhere (outside
//!   headings) that contain `recommend`, `should`, `consider`, `optimi` or
//!   `improve` (recommendations), or else `finding`, `insight`, `observ`,
//!   `indicat`, `shows`, `reveal`, `suggest`, `bottleneck`, `highest`,
//!   `lowest` or `peak` (findings). At most [`MAX_ITEMS`] each, duplicates
//!   and empty labels (`**Memory:**`) dropped.
//! * **Summary**: the lines of the summary sections joined by newlines; or
//!   else the first paragraph of the text. At most [`MAX_SUMMARY_CHARS`].
//!
//! * Lines that repeat the prompt verbatim ([`parse_with_prompt`]: small
//!   models echo their instructions) and lines without a letter or digit
//!   (`---`, `|---|`, a lone `-`) are not content.
//!
//! Where each part came from is recorded ([`Source`]), so a report can say
//! when it fell back.

use std::collections::HashSet;

use serde::Serialize;

/// Most findings and recommendations kept.
pub const MAX_ITEMS: usize = 10;
/// Longest summary kept, in characters.
pub const MAX_SUMMARY_CHARS: usize = 1200;

/// How a part of the analysis was found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Under a matching heading.
    Heading,
    /// By keywords, anywhere in the text (no matching section had any).
    Keywords,
    /// The summary is the text's first paragraph (no summary section).
    Opening,
    /// Nothing found.
    #[default]
    None,
}

impl Source {
    /// A note for the report when the part was not found under its heading.
    pub fn note(self, what: &str) -> Option<String> {
        match self {
            Source::Heading => None,
            Source::Keywords => Some(format!(
                "The analysis had no {what} section with content; these are its lines with {what} keywords."
            )),
            Source::Opening => Some(format!(
                "The analysis had no {what} section; this is its first paragraph."
            )),
            Source::None => None,
        }
    }
}

/// What the analysis call said, in parts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Analysis {
    pub summary: String,
    pub summary_from: Source,
    pub key_findings: Vec<String>,
    pub key_findings_from: Source,
    pub recommendations: Vec<String>,
    pub recommendations_from: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Summary,
    Findings,
    Recommendations,
    Other,
}

fn contains_any(text: &str, words: &[&str]) -> bool {
    let t = text.to_lowercase();
    words.iter().any(|w| t.contains(w))
}

const RECOMMENDATION_WORDS: [&str; 6] = [
    "recommend",
    "optimi",
    "suggest",
    "next step",
    "action",
    "improvement",
];
const FINDING_WORDS: [&str; 6] = [
    "finding",
    "insight",
    "observation",
    "highlight",
    "key performance",
    "result",
];
const SUMMARY_WORDS: [&str; 2] = ["summary", "overview"];
/// Words a numbered or `:` line must hold to count as a heading.
const TITLE_WORDS: [&str; 6] = [
    "summary",
    "overview",
    "finding",
    "insight",
    "observation",
    "recommend",
];
const RECOMMENDATION_LINE_WORDS: [&str; 5] =
    ["recommend", "should", "consider", "optimi", "improve"];
const FINDING_LINE_WORDS: [&str; 11] = [
    "finding",
    "insight",
    "observ",
    "indicat",
    "shows",
    "reveal",
    "suggest",
    "bottleneck",
    "highest",
    "lowest",
    "peak",
];

fn classify(heading: &str) -> Kind {
    if contains_any(heading, &RECOMMENDATION_WORDS) {
        Kind::Recommendations
    } else if contains_any(heading, &FINDING_WORDS) {
        Kind::Findings
    } else if contains_any(heading, &SUMMARY_WORDS) {
        Kind::Summary
    } else {
        Kind::Other
    }
}

/// `2. rest` / `2) rest` -> `rest`.
fn strip_number(t: &str) -> Option<&str> {
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 3 {
        return None;
    }
    let rest = &t[digits..];
    let rest = rest.strip_prefix('.').or_else(|| rest.strip_prefix(')'))?;
    rest.starts_with([' ', '\t']).then(|| rest.trim_start())
}

/// The text of a bullet line without its marker.
fn bullet(line: &str) -> Option<&str> {
    let t = line.trim();
    for m in ["- ", "* ", "+ ", "• "] {
        if let Some(rest) = t.strip_prefix(m) {
            return Some(rest.trim());
        }
    }
    strip_number(t)
}

/// `(level, text)` of a heading line. ATX headings have their level, other
/// kinds of heading are level 7 (deeper than any ATX heading).
fn heading(line: &str) -> Option<(u8, String)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let t = line.trim();
    if indent <= 3 && t.starts_with('#') {
        let level = t.bytes().take_while(|&b| b == b'#').count();
        let rest = &t[level..];
        if level <= 6 && (rest.is_empty() || rest.starts_with([' ', '\t'])) {
            let text = rest.trim().trim_end_matches('#').trim();
            return Some((level as u8, clean_title(text)));
        }
        return None;
    }
    let (t, numbered) = match strip_number(t) {
        Some(rest) => (rest, true),
        None => (t, false),
    };
    for m in ["**", "__"] {
        if let Some(inner) = t.strip_prefix(m) {
            let inner = inner.strip_suffix(':').unwrap_or(inner);
            if let Some(inner) = inner.strip_suffix(m) {
                let title = clean_title(inner);
                if !inner.contains(m) && !title.is_empty() && title.split_whitespace().count() <= 8
                {
                    return Some((7, title));
                }
            }
        }
    }
    let title = clean_title(t);
    let words: Vec<&str> = title.split_whitespace().collect();
    // The section word must open or close the title: `Key Findings`,
    // `Recommendations for Optimization`, but not `Reduce findings noise`.
    let named = [words.first(), words.last()]
        .into_iter()
        .flatten()
        .any(|w| contains_any(w, &TITLE_WORDS));
    if (numbered || t.ends_with(':')) && (1..=6).contains(&words.len()) && named {
        return Some((7, title));
    }
    None
}

/// Heading text without emphasis, numbering or a trailing colon.
fn clean_title(t: &str) -> String {
    let t = t.replace("**", "").replace("__", "");
    let t = t.trim();
    let t = strip_number(t).unwrap_or(t);
    t.trim().trim_end_matches(':').trim().to_string()
}

/// An item worth keeping: not empty once emphasis and colons are gone.
fn keep(item: &str) -> bool {
    item.chars().any(|c| c.is_alphanumeric())
}

fn push_unique(items: &mut Vec<String>, item: &str) {
    let item = item.trim();
    let label_only = item.ends_with(':') || item.ends_with(":**") || item.ends_with(":__");
    if !keep(item) || label_only || items.len() >= MAX_ITEMS {
        return;
    }
    if !items.iter().any(|x| x == item) {
        items.push(item.to_string());
    }
}

#[derive(Default)]
struct Collected {
    bullets: Vec<String>,
    lines: Vec<String>,
}

/// Parses an analysis by the rules in the module docs.
pub fn parse(text: &str) -> Analysis {
    parse_with_prompt(text, &[])
}

/// Like [`parse`], but lines that repeat a line of `prompts` verbatim
/// (after trimming, with or without a list marker) are not content: a
/// small model often echoes its instructions, and an echoed instruction is
/// neither a finding nor a summary. Headings are still read.
pub fn parse_with_prompt(text: &str, prompts: &[&str]) -> Analysis {
    let echo: HashSet<&str> = prompts
        .iter()
        .flat_map(|p| p.lines())
        .flat_map(|l| [Some(l.trim()), bullet(l)])
        .flatten()
        .filter(|l| !l.is_empty())
        .collect();
    let mut summary_lines: Vec<String> = Vec::new();
    let mut findings = Collected::default();
    let mut recommendations = Collected::default();
    // Every content line outside headings: (text, is_bullet), None for blanks.
    let mut content: Vec<Option<String>> = Vec::new();
    let mut section: Option<(Kind, u8)> = None;
    let mut fence: Option<char> = None;

    for line in text.lines() {
        let t = line.trim();
        if let Some(c) = fence {
            if t.starts_with(&c.to_string().repeat(3)) {
                fence = None;
            }
            continue;
        }
        if t.starts_with("```") || t.starts_with("~~~") {
            fence = t.chars().next();
            continue;
        }
        if let Some((level, title)) = heading(line) {
            let kind = classify(&title);
            let sub = matches!(section, Some((_, cur)) if kind == Kind::Other && level > cur);
            if !sub {
                section = Some((kind, level));
            }
            content.push(None);
            continue;
        }
        if t.is_empty() {
            content.push(None);
            if matches!(section, Some((Kind::Summary, _)))
                && summary_lines.last().is_some_and(|l| !l.is_empty())
            {
                summary_lines.push(String::new());
            }
            continue;
        }
        let item = bullet(line);
        // Rules, table separators and stray markers (`---`, `|---|`, `-`)
        // say nothing; an echoed instruction says nothing new.
        if !keep(t) || echo.contains(t) || item.is_some_and(|i| echo.contains(i)) {
            content.push(None);
            continue;
        }
        content.push(Some(item.unwrap_or(t).to_string()));
        let kind = section.map(|(k, _)| k);
        let target = match kind {
            Some(Kind::Findings) => Some(&mut findings),
            Some(Kind::Recommendations) => Some(&mut recommendations),
            Some(Kind::Summary) => {
                summary_lines.push(t.to_string());
                None
            }
            _ => None,
        };
        if let Some(c) = target {
            match item {
                Some(i) => c.bullets.push(i.to_string()),
                None => c.lines.push(t.to_string()),
            }
        }
    }

    let mut a = Analysis::default();
    let summary = summary_lines.join("\n").trim().to_string();
    if !summary.is_empty() {
        a.summary = summary;
        a.summary_from = Source::Heading;
    } else {
        let opening: Vec<&str> = content
            .iter()
            .skip_while(|l| l.is_none())
            .map_while(|l| l.as_deref())
            .collect();
        if !opening.is_empty() {
            a.summary = opening.join("\n");
            a.summary_from = Source::Opening;
        }
    }
    a.summary = shorten(&a.summary, MAX_SUMMARY_CHARS);

    let lines: Vec<&str> = content.iter().flatten().map(String::as_str).collect();
    let rec_line = |l: &str| contains_any(l, &RECOMMENDATION_LINE_WORDS);
    let finding_line = |l: &str| !rec_line(l) && contains_any(l, &FINDING_LINE_WORDS);
    (a.recommendations, a.recommendations_from) = pick(
        &recommendations,
        lines.iter().copied().filter(|l| rec_line(l)),
    );
    (a.key_findings, a.key_findings_from) =
        pick(&findings, lines.iter().copied().filter(|l| finding_line(l)));
    a
}

/// Bullets of the sections, else their lines, else the keyword lines.
fn pick<'a>(c: &Collected, keyword_lines: impl Iterator<Item = &'a str>) -> (Vec<String>, Source) {
    for (candidates, source) in [(&c.bullets, Source::Heading), (&c.lines, Source::Heading)] {
        let mut items = Vec::new();
        for x in candidates {
            push_unique(&mut items, x);
        }
        if !items.is_empty() {
            return (items, source);
        }
    }
    let mut items = Vec::new();
    for x in keyword_lines {
        push_unique(&mut items, x);
    }
    let source = if items.is_empty() {
        Source::None
    } else {
        Source::Keywords
    };
    (items, source)
}

/// At most `max` characters, cut at a character boundary with `…`.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", s[..i].trim_end()),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WELL_FORMED: &str = "\
## Executive Summary
The data covers 85 files.
Throughput is stable.

Second paragraph.

## Key Performance Findings
- **Throughput:** mean 147.35 tok/s
* TTFT peaks at 29987.07 ms
### Details
1. Nested under findings still
```
- not a bullet, in code
## not a heading either
```

## Performance Metrics Analysis
- an unrelated bullet that should be ignored

## Recommendations for Optimization
1) Reduce num_ctx to 1024
2) **Memory:**
- Pin the thread count
- Pin the thread count
";

    #[test]
    fn well_formed_sections() {
        let a = parse(WELL_FORMED);
        assert_eq!(
            a.summary,
            "The data covers 85 files.\nThroughput is stable.\n\nSecond paragraph."
        );
        assert_eq!(a.summary_from, Source::Heading);
        assert_eq!(
            a.key_findings,
            [
                "**Throughput:** mean 147.35 tok/s",
                "TTFT peaks at 29987.07 ms",
                "Nested under findings still"
            ]
        );
        assert_eq!(a.key_findings_from, Source::Heading);
        assert_eq!(
            a.recommendations,
            ["Reduce num_ctx to 1024", "Pin the thread count"]
        );
        assert_eq!(a.recommendations_from, Source::Heading);
    }

    #[test]
    fn bold_and_numbered_headings() {
        let text = "\
**1. Executive Summary:**
A short summary.

2. Key Findings
- Files are mostly JSON.

**Recommendations**
Consolidate the CSV files.
Track memory.
";
        let a = parse(text);
        assert_eq!(a.summary, "A short summary.");
        assert_eq!(a.key_findings, ["Files are mostly JSON."]);
        assert_eq!(
            a.recommendations,
            ["Consolidate the CSV files.", "Track memory."]
        );
        assert_eq!(a.recommendations_from, Source::Heading);
    }

    #[test]
    fn keyword_fallback_and_opening_summary() {
        let text = "\
The benchmark shows throughput between 35.98 and 303.90 tok/s.
A second line of the opening.

Some rambling text.
You should consider batching prompts.
This indicates a TTFT bottleneck.
";
        let a = parse(text);
        assert_eq!(a.summary_from, Source::Opening);
        assert_eq!(
            a.summary,
            "The benchmark shows throughput between 35.98 and 303.90 tok/s.\nA second line of the opening."
        );
        assert_eq!(a.recommendations, ["You should consider batching prompts."]);
        assert_eq!(a.recommendations_from, Source::Keywords);
        assert_eq!(
            a.key_findings,
            [
                "The benchmark shows throughput between 35.98 and 303.90 tok/s.",
                "This indicates a TTFT bottleneck."
            ]
        );
        assert_eq!(a.key_findings_from, Source::Keywords);
        assert!(Source::Keywords
            .note("findings")
            .unwrap()
            .contains("keywords"));
        assert_eq!(Source::Heading.note("findings"), None);
    }

    #[test]
    fn echoed_prompt_lines_are_not_content() {
        let system =
            "You are InsightAgent, who turns insights into decisions.\n1. An executive summary.";
        let text = "You are InsightAgent, who turns insights into decisions.\n\
                    - An executive summary.\n\
                    The data shows 85 files.\n";
        let a = parse_with_prompt(text, &[system]);
        assert_eq!(a.key_findings, ["The data shows 85 files."]);
        assert_eq!(a.summary, "The data shows 85 files.");
        let plain = parse(text);
        assert_eq!(plain.key_findings.len(), 2, "{:?}", plain.key_findings);
        // Lines without a letter or digit are not content either.
        let a = parse("-\n| --- | --- |\n***\nThe data shows 3 files.\n");
        assert_eq!(a.summary, "The data shows 3 files.");
    }

    #[test]
    fn nothing_to_find() {
        let a = parse("");
        assert_eq!(a, Analysis::default());
        let a = parse("# Title only\n\n");
        assert_eq!(a.summary_from, Source::None);
        assert!(a.key_findings.is_empty() && a.recommendations.is_empty());
    }

    #[test]
    fn limits() {
        let many: String = (0..30).map(|i| format!("- finding number {i}\n")).collect();
        let a = parse(&format!("## Key Findings\n{many}"));
        assert_eq!(a.key_findings.len(), MAX_ITEMS);
        assert_eq!(a.key_findings[9], "finding number 9");
        let long = "é".repeat(MAX_SUMMARY_CHARS + 5);
        let a = parse(&format!("## Summary\n{long}"));
        assert_eq!(a.summary.chars().count(), MAX_SUMMARY_CHARS + 1);
        assert!(a.summary.ends_with('…'));
    }

    #[test]
    fn heading_detection() {
        assert_eq!(
            heading("## Key Findings ##"),
            Some((2, "Key Findings".into()))
        );
        assert_eq!(heading("#hashtag"), None);
        assert_eq!(
            heading("**Key Performance Findings:**"),
            Some((7, "Key Performance Findings".into()))
        );
        assert_eq!(heading("**Throughput:** 45 tok/s"), None);
        assert_eq!(
            heading("3. Recommendations for Optimization"),
            Some((7, "Recommendations for Optimization".into()))
        );
        assert_eq!(heading("1. Optimize the batch size"), None);
        assert_eq!(
            heading("Recommendations:"),
            Some((7, "Recommendations".into()))
        );
        assert_eq!(
            heading("Summary of the work so far, which is long and detailed:"),
            None
        );
        assert_eq!(
            classify("Recommendations for Optimization"),
            Kind::Recommendations
        );
        assert_eq!(classify("Key Performance Findings"), Kind::Findings);
        assert_eq!(classify("Executive Summary"), Kind::Summary);
        assert_eq!(classify("Performance Metrics Analysis"), Kind::Other);
    }
}
