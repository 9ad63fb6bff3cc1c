//! The Number check: every figure in the model's text, looked up among the
//! numbers the model was given. A figure found nowhere is listed, so a
//! reader sees at once which numbers the model invented (the original
//! agents once reported 45 CSV files where there were 28).
//!
//! The check is about provenance, not arithmetic: a correct figure the
//! model derived itself (a ratio, a difference) is listed too.
//!
//! # Known numbers
//! The caller builds a [`Known`] set from every number in the ingested data
//! (`Ingest::numbers`), the facts (`Facts::numbers`) and the text chimera
//! itself put in the prompts (persona, data summary, facts, instructions),
//! read with [`all_numbers`]. The model's own earlier output (the analysis
//! quoted in the report prompt) is never part of it, so an invented number
//! cannot launder itself through the second call. Signs are dropped: a
//! "drop of 9.4%" quotes a change of -9.4.
//!
//! # What counts as a figure ([`figures`])
//! A run of digits, with optional thousands separators (`1,024`: groups of
//! three after a first group of one to three digits) and an optional
//! fraction (`0.25`); a `%` right after it (a space allowed) or the word
//! `percent` makes it a percentage. These are *not* figures and are never
//! listed:
//! * list markers and section numbers: at the start of a line (after
//!   indentation, `>`, a bullet, `#`s or `**`) a number like `2`, `3.1`
//!   followed by `.` or `)` and a space (`2. `, `3.1) `), and in a heading any
//!   leading number followed by a space (`### 3.1 Latency`);
//! * numbers with more than one dot (`1.2.3`, `3.1.2`): versions and
//!   section numbers;
//! * a number right after a reference word: `section`, `step`, `phase`,
//!   `table`, `figure`, `fig.`, `appendix`, `part`, `chapter`, `item`,
//!   `recommendation`, `finding`, `risk`, `priority`, `option`, `stage`,
//!   `tier`, `rank`, `run` (one space between) or after `#` (`#2`);
//! * digits inside names: right after a letter or `_` (`gemma3`, `TR108`,
//!   `q4_k_m`, `x86_64`), after a hyphen that follows a letter (`Llama-3`),
//!   and anywhere in a word that holds a `_`, a `\` or a `/` path separator
//!   next to letters (`reports/ollama/20251002-151824`); a `/` that only
//!   starts a rate unit (`45tok/s`) does not make a path;
//! * ordinals (`1st`, `2nd`, `3rd`, `14th`);
//! * dates and times: `2025-11-14`, `2025/11/14`, `11/14/2025`, `18:53` and
//!   `18:53:30` (with any fraction of a second);
//! * years: a plain four-digit whole number from 1990 to 2039.
//!
//! # Matching ([`Known::contains`])
//! A figure written with `d` decimals matches a known number `v` when
//! `|v - x| <= 0.5 * 10^-d` (plus a relative 1e-9 for binary rounding),
//! i.e. when `v` rounds to the figure as written: `147.3` and `147.4` both
//! match 147.35, `148` matches 147.6, `150` does not match 147.35. A
//! percentage also matches the same value as a fraction (`75.7%` matches
//! 0.757, with the bound scaled by 1/100). No unit conversion is tried: "1.29
//! s" does not match 1292.64 ms.

use serde::Serialize;

/// A number as written in model text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// As written, e.g. `1,024`, `75.7%`, `0.25`.
    pub text: String,
    /// Absolute value, separators removed, without the percent scaling.
    pub value: f64,
    /// Digits after the decimal point.
    pub decimals: u32,
    pub percent: bool,
    /// Byte offset of the first digit in the text.
    pub at: usize,
}

/// A number token: `start..end` covers the digits, separators and fraction;
/// `full_end` also covers any further `.digits` groups (`1.2.3`).
#[derive(Debug, Clone, Copy)]
struct Token {
    start: usize,
    end: usize,
    full_end: usize,
    value: f64,
    decimals: u32,
    grouped: bool,
    extra_dots: usize,
}

fn digit_at(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(u8::is_ascii_digit)
}

fn alpha_at(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(u8::is_ascii_alphabetic)
}

/// Reads the number whose first digit is at `i`.
fn read_number(text: &str, i: usize) -> Token {
    let b = text.as_bytes();
    let mut j = i;
    while digit_at(b, j) {
        j += 1;
    }
    let mut grouped = false;
    if (1..=3).contains(&(j - i)) {
        while b.get(j) == Some(&b',') && (1..=3).all(|k| digit_at(b, j + k)) && !digit_at(b, j + 4)
        {
            j += 4;
            grouped = true;
        }
    }
    let mut decimals = 0;
    if b.get(j) == Some(&b'.') && digit_at(b, j + 1) {
        let mut k = j + 1;
        while digit_at(b, k) {
            k += 1;
        }
        decimals = (k - j - 1) as u32;
        j = k;
    }
    let mut full_end = j;
    let mut extra_dots = 0;
    while b.get(full_end) == Some(&b'.') && digit_at(b, full_end + 1) {
        full_end += 1;
        while digit_at(b, full_end) {
            full_end += 1;
        }
        extra_dots += 1;
    }
    let digits: String = text[i..j].chars().filter(|&c| c != ',').collect();
    Token {
        start: i,
        end: j,
        full_end,
        value: digits.parse().unwrap_or(0.0),
        decimals,
        grouped,
        extra_dots,
    }
}

/// Every number written in `text`, as absolute values, with no rule
/// applied: what a prompt or data text puts in front of the model.
pub fn all_numbers(text: &str) -> Vec<f64> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let t = read_number(text, i);
            out.push(t.value);
            i = t.end;
        } else {
            i += 1;
        }
    }
    out
}

/// Start of the structural number (list marker or section number) at the
/// beginning of `line`, if there is one.
fn structural_number(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while matches!(b.get(*i), Some(b' ' | b'\t')) {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    let heading = b.get(i) == Some(&b'#');
    if heading {
        while b.get(i) == Some(&b'#') {
            i += 1;
        }
        skip_ws(&mut i);
    } else {
        while b.get(i) == Some(&b'>') {
            i += 1;
            skip_ws(&mut i);
        }
        if matches!(b.get(i), Some(b'-' | b'*' | b'+')) && matches!(b.get(i + 1), Some(b' ')) {
            i += 2;
            skip_ws(&mut i);
        } else if line[i..].starts_with('•') {
            i += '•'.len_utf8();
            skip_ws(&mut i);
        }
    }
    while matches!(b.get(i), Some(b'*' | b'_')) {
        i += 1;
    }
    if !digit_at(b, i) {
        return None;
    }
    let t = read_number(line, i);
    let after = t.full_end;
    let end_or_space = |k: usize| matches!(b.get(k), None | Some(b' ' | b'\t' | b'*' | b'_'));
    if matches!(b.get(after), Some(b'.' | b')')) && end_or_space(after + 1) {
        return Some(i);
    }
    if heading && matches!(b.get(after), None | Some(b' ' | b'\t')) {
        return Some(i);
    }
    None
}

const REFERENCE_WORDS: [&str; 20] = [
    "section",
    "step",
    "phase",
    "table",
    "figure",
    "fig.",
    "appendix",
    "part",
    "chapter",
    "item",
    "recommendation",
    "finding",
    "risk",
    "priority",
    "option",
    "stage",
    "tier",
    "rank",
    "run",
    "fig",
];

/// Whether the number at `i` follows a reference word (`Section 3`) or `#`.
fn after_reference(line: &str, i: usize) -> bool {
    let b = line.as_bytes();
    if i >= 1 && b[i - 1] == b'#' {
        return true;
    }
    if i < 2 || b[i - 1] != b' ' {
        return false;
    }
    let before = &line[..i - 1];
    let word_start = before
        .rfind(|c: char| !(c.is_ascii_alphabetic() || c == '.'))
        .map_or(0, |p| p + 1);
    let word = before[word_start..].to_ascii_lowercase();
    REFERENCE_WORDS.contains(&word.as_str())
}

/// Characters that end a word for the path rule.
fn is_word_break(c: u8) -> bool {
    c.is_ascii_whitespace()
        || matches!(
            c,
            b'(' | b')'
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'<'
                | b'>'
                | b'"'
                | b'\''
                | b'`'
                | b'|'
                | b','
                | b';'
                | b'*'
        )
}

/// Whether the number at `i` sits in a word that is a path or a name with
/// `_` (`reports/x/2025.json`, `conv_bench_20251002-170837`).
fn in_path_word(line: &str, i: usize) -> bool {
    let b = line.as_bytes();
    let mut s = i;
    while s > 0 && !is_word_break(b[s - 1]) {
        s -= 1;
    }
    let mut e = i;
    while e < b.len() && !is_word_break(b[e]) {
        e += 1;
    }
    let word = &line[s..e];
    if !word.bytes().any(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    if word.contains('_') || word.contains('\\') {
        return true;
    }
    let slashes = word.matches('/').count();
    if slashes == 0 {
        return false;
    }
    // A single `/` followed only by letters is a rate unit (`tok/s`).
    let unit = slashes == 1
        && word.rsplit('/').next().is_some_and(|u| {
            !u.is_empty() && u.len() <= 8 && u.bytes().all(|c| c.is_ascii_alphabetic())
        })
        && word.split('/').next().is_some_and(|l| {
            l.trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .bytes()
                .all(|c| c.is_ascii_digit() || c == b'.' || c == b',')
        });
    !unit
}

/// End of a date or time starting with token `t`, if it is one.
fn date_or_time_end(b: &[u8], t: &Token) -> Option<usize> {
    let n = t.end - t.start;
    let two = |k: usize| digit_at(b, k) && digit_at(b, k + 1) && !digit_at(b, k + 2);
    if t.decimals == 0 && !t.grouped && n == 4 {
        for sep in [b'-', b'/'] {
            if b.get(t.end) == Some(&sep)
                && two(t.end + 1)
                && b.get(t.end + 3) == Some(&sep)
                && two(t.end + 4)
            {
                return Some(t.end + 6);
            }
        }
    }
    if t.decimals == 0 && !t.grouped && (1..=2).contains(&n) {
        // 11/14/2025 or 11/14/25
        if b.get(t.end) == Some(&b'/') {
            let mut k = t.end + 1;
            let m0 = k;
            while digit_at(b, k) {
                k += 1;
            }
            if (1..=2).contains(&(k - m0)) && b.get(k) == Some(&b'/') {
                let y0 = k + 1;
                let mut y = y0;
                while digit_at(b, y) {
                    y += 1;
                }
                if y - y0 == 2 || y - y0 == 4 {
                    return Some(y);
                }
            }
        }
        // 18:53 or 18:53:30.5
        if b.get(t.end) == Some(&b':') && two(t.end + 1) {
            let mut k = t.end + 3;
            while b.get(k) == Some(&b':') && two(k + 1) {
                k += 3;
            }
            if b.get(k) == Some(&b'.') && digit_at(b, k + 1) {
                k += 1;
                while digit_at(b, k) {
                    k += 1;
                }
            }
            return Some(k);
        }
    }
    None
}

fn is_ordinal(b: &[u8], end: usize) -> bool {
    let suffix = |k: usize| b.get(k).map(u8::to_ascii_lowercase);
    let pair = (suffix(end), suffix(end + 1));
    matches!(
        pair,
        (Some(b's'), Some(b't'))
            | (Some(b'n'), Some(b'd'))
            | (Some(b'r'), Some(b'd'))
            | (Some(b't'), Some(b'h'))
    ) && !alpha_at(b, end + 2)
}

fn is_year(t: &Token) -> bool {
    t.decimals == 0 && !t.grouped && t.end - t.start == 4 && (1990.0..=2039.0).contains(&t.value)
}

/// Whether a `%` (or the word `percent`) follows the number ending at `end`.
fn percent_after(line: &str, end: usize) -> bool {
    let rest = &line[end..];
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    rest.starts_with('%') || {
        let r = rest.as_bytes();
        r.len() >= 7 && r[..7].eq_ignore_ascii_case(b"percent")
    }
}

/// The figures in `text`, in order, by the rules in the module docs.
pub fn figures(text: &str) -> Vec<Figure> {
    let mut out = Vec::new();
    let mut offset = 0;
    for line in text.split('\n') {
        figures_in_line(line, offset, &mut out);
        offset += line.len() + 1;
    }
    out
}

fn figures_in_line(line: &str, offset: usize, out: &mut Vec<Figure>) {
    let b = line.as_bytes();
    let structural = structural_number(line);
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let t = read_number(line, i);
        if let Some(end) = date_or_time_end(b, &t) {
            i = end;
            continue;
        }
        let prev = if i > 0 { b[i - 1] } else { b' ' };
        let name_digit = prev.is_ascii_alphabetic()
            || prev == b'_'
            || (prev == b'-' && i >= 2 && b[i - 2].is_ascii_alphabetic())
            || (prev == b'.' && i >= 2 && b[i - 2].is_ascii_alphanumeric());
        let skip = structural == Some(i)
            || name_digit
            || t.extra_dots > 0
            || is_ordinal(b, t.end)
            || is_year(&t)
            || after_reference(line, i)
            || in_path_word(line, i);
        if !skip {
            let percent = percent_after(line, t.end);
            let mut written = line[t.start..t.end].to_string();
            if percent {
                written.push('%');
            }
            out.push(Figure {
                text: written,
                value: t.value,
                decimals: t.decimals,
                percent,
                at: offset + t.start,
            });
        }
        i = t.full_end.max(i + 1);
    }
}

/// Known numbers, as sorted absolute values.
#[derive(Debug, Clone, Default)]
pub struct Known {
    values: Vec<f64>,
}

impl Known {
    pub fn new(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values
            .into_iter()
            .filter(|x| x.is_finite())
            .map(f64::abs)
            .collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        Self { values: v }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn any_within(&self, center: f64, bound: f64) -> bool {
        let bound = bound + 1e-9 * center.abs().max(1.0);
        let lo = self.values.partition_point(|&v| v < center - bound);
        self.values.get(lo).is_some_and(|&v| v <= center + bound)
    }

    /// Whether `f` is one of the known numbers, by the matching rules in the
    /// module docs.
    pub fn contains(&self, f: &Figure) -> bool {
        let bound = 0.5 * 10f64.powi(-(f.decimals as i32));
        self.any_within(f.value, bound)
            || (f.percent && self.any_within(f.value / 100.0, bound / 100.0))
    }
}

/// A figure found nowhere in the data or the facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unmatched {
    /// As written (`45`, `12.5%`).
    pub figure: String,
    /// Which text it came from first (`report`, `analysis`).
    pub source: String,
    /// How often it appears, across all texts.
    pub occurrences: usize,
    /// Its line, shortened, with Markdown markers removed.
    pub context: String,
}

/// The outcome of the check over all of the model's texts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NumberCheck {
    /// Figures checked (each occurrence counts).
    pub figures: usize,
    /// Distinct known numbers they were checked against.
    pub known_numbers: usize,
    /// Distinct unmatched figures, in order of first appearance.
    pub unmatched: Vec<Unmatched>,
}

/// Checks every figure in each `(source, text)` against `known`.
pub fn check(texts: &[(&str, &str)], known: &Known) -> NumberCheck {
    let mut result = NumberCheck {
        known_numbers: known.len(),
        ..Default::default()
    };
    for (source, text) in texts {
        for f in figures(text) {
            result.figures += 1;
            if known.contains(&f) {
                continue;
            }
            match result.unmatched.iter_mut().find(|u| u.figure == f.text) {
                Some(u) => u.occurrences += 1,
                None => result.unmatched.push(Unmatched {
                    context: context(text, f.at, f.text.len()),
                    figure: f.text,
                    source: source.to_string(),
                    occurrences: 1,
                }),
            }
        }
    }
    result
}

/// The line around byte `at`, cleaned of Markdown emphasis and list
/// markers, at most about 100 characters with the figure kept in view.
fn context(text: &str, at: usize, len: usize) -> String {
    const WIDTH: usize = 100;
    let ls = text[..at].rfind('\n').map_or(0, |p| p + 1);
    let le = text[at..].find('\n').map_or(text.len(), |p| at + p);
    let line = &text[ls..le];
    let rel = at - ls;
    // Cut around the figure on char boundaries.
    let mut start = rel.saturating_sub(WIDTH / 2);
    while !line.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (rel + len + WIDTH / 2).min(line.len());
    while !line.is_char_boundary(end) {
        end += 1;
    }
    let piece = &line[start..end];
    let cleaned: String = piece
        .replace("**", "")
        .replace('`', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let cleaned = cleaned
        .trim_start_matches(['#', '-', '>', '*', ' '])
        .to_string();
    let mut s = String::new();
    if start > 0 {
        s.push('…');
    }
    s.push_str(&cleaned);
    if end < line.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<String> {
        figures(s).into_iter().map(|f| f.text).collect()
    }

    #[test]
    fn figures_and_what_is_not_one() {
        assert_eq!(
            texts("28 CSV files, 1,024 rows and 75.7% hit rate"),
            ["28", "1,024", "75.7%"]
        );
        assert_eq!(texts("TTFT of 0.25 s; 12 percent"), ["0.25", "12%"]);
        // List markers and section numbers.
        assert_eq!(texts("1. Executive Summary\n2) Findings: 45 files"), ["45"]);
        assert_eq!(
            texts("## 3. Performance Analysis\n### 3.1 Latency is 12 ms"),
            ["12"]
        );
        assert_eq!(texts("- **2.** Reduce num_ctx to 1024"), ["1024"]);
        assert_eq!(texts("  - 28 CSV files"), ["28"]);
        assert_eq!(texts("**1. Overview**"), Vec::<String>::new());
        // Names, versions, paths, ordinals, dates, times, years, references.
        assert_eq!(
            texts("gemma3 on TR108 with q4_k_m and x86_64, Llama-3"),
            Vec::<String>::new()
        );
        assert_eq!(texts("version 1.2.3 and llama3.1"), Vec::<String>::new());
        assert_eq!(
            texts(
                "see reports/ollama/20251002-151824/runs.csv and conv_bench_20251002-170837.json"
            ),
            Vec::<String>::new()
        );
        assert_eq!(texts("the 1st and 22nd runs"), Vec::<String>::new());
        assert_eq!(
            texts("on 2025-11-14 18:53:30 UTC, 11/14/2025"),
            Vec::<String>::new()
        );
        assert_eq!(texts("in 2025 with 2048 tokens"), ["2048"]);
        assert_eq!(
            texts("see Section 4, Table 2, step 3, #1 and Run 2: 300 tok/s"),
            ["300"]
        );
        assert_eq!(texts("45tok/s and 512ms"), ["45", "512"]);
        assert_eq!(texts("no numbers here"), Vec::<String>::new());
    }

    #[test]
    fn figure_values() {
        let f = figures("about 1,817 values at 147.35 tok/s, -9.4 %");
        assert_eq!(f.len(), 3);
        assert_eq!(
            (f[0].value, f[0].decimals, f[0].percent),
            (1817.0, 0, false)
        );
        assert_eq!((f[1].value, f[1].decimals), (147.35, 2));
        assert_eq!(
            (f[2].text.as_str(), f[2].value, f[2].percent),
            ("9.4%", 9.4, true)
        );
        assert_eq!(f[1].at, 22);
    }

    #[test]
    fn all_numbers_reads_everything() {
        assert_eq!(
            all_numbers("gemma3_270m, 2025-11-14, 1,024 and 3.1.2"),
            vec![3.0, 270.0, 2025.0, 11.0, 14.0, 1024.0, 3.1, 2.0]
        );
    }

    fn fig(text: &str) -> Figure {
        figures(text).remove(0)
    }

    #[test]
    fn matching_tolerance() {
        let known = Known::new([147.35, 28.0, 0.757, -9.4, 1817.0, 1292.64]);
        assert_eq!(known.len(), 6);
        for yes in [
            "147.35", "147.3", "147.4", "147", "28", "75.7%", "76%", "9.4", "9.4%", "1,817",
            "1292.6", "0.76",
        ] {
            assert!(known.contains(&fig(yes)), "{yes} should match");
        }
        for no in ["150", "147.36", "45", "0.75", "1.29", "29", "75.6%"] {
            assert!(!known.contains(&fig(no)), "{no} should not match");
        }
        assert!(!Known::default().contains(&fig("0")));
    }

    #[test]
    fn check_lists_each_unknown_figure_once() {
        let known = Known::new([28.0, 44.0, 29.0, 101.0]);
        let report = "## 1. Executive Summary\nThe 101 files hold **45 CSV files** and 44 JSON files.\n- 45 CSV files again | piped\n";
        let analysis = "- Key finding: 3.5x faster than the 12.5% baseline";
        let c = check(&[("report", report), ("analysis", analysis)], &known);
        assert_eq!(c.figures, 6);
        assert_eq!(c.known_numbers, 4);
        let got: Vec<(&str, &str, usize)> = c
            .unmatched
            .iter()
            .map(|u| (u.figure.as_str(), u.source.as_str(), u.occurrences))
            .collect();
        assert_eq!(
            got,
            [
                ("45", "report", 2),
                ("3.5", "analysis", 1),
                ("12.5%", "analysis", 1)
            ]
        );
        assert_eq!(
            c.unmatched[0].context,
            "The 101 files hold 45 CSV files and 44 JSON files."
        );
        assert_eq!(
            c.unmatched[1].context,
            "Key finding: 3.5x faster than the 12.5% baseline"
        );
    }

    #[test]
    fn context_is_cut_on_char_boundaries() {
        let line = format!("{}é 77 {}", "ü".repeat(80), "ö".repeat(80));
        let at = line.find("77").unwrap();
        let c = context(&line, at, 2);
        assert!(c.starts_with('…') && c.ends_with('…'), "{c}");
        assert!(c.contains(" 77 "), "{c}");
    }
}
