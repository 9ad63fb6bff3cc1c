//! Reading and parsing one file: size cap, text decoding, CSV / JSON /
//! Markdown parsing. Every failure becomes a [`Skipped`] with a reason.

use std::fs;
use std::io::Read;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::walk::Candidate;
use super::{
    Content, CsvTable, FileRecord, Heading, IngestOptions, Kind, MarkdownDoc, SkipCode, Skipped,
};

/// Loads one file given by its path relative to `root` (forward slashes).
/// The kind comes from the extension; an unsupported extension, a file that
/// vanished, or any parse failure is returned as a [`Skipped`].
pub fn load_file(root: &Path, rel: &str, opts: &IngestOptions) -> Result<FileRecord, Skipped> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let kind = name
        .rsplit_once('.')
        .and_then(|(_, ext)| Kind::from_extension(ext))
        .ok_or_else(|| Skipped::new(rel, SkipCode::Unsupported, "unsupported file type"))?;
    load_candidate(
        &Candidate {
            rel: rel.to_string(),
            abs: root.join(rel),
            kind,
        },
        opts,
    )
}

pub(crate) fn load_candidate(c: &Candidate, opts: &IngestOptions) -> Result<FileRecord, Skipped> {
    let skip = |code: SkipCode, reason: String| Skipped::new(c.rel.clone(), code, reason);
    let io_skip = |e: std::io::Error| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "cannot read: file vanished during the scan".to_string()
            }
            _ => format!("cannot read: {e}"),
        };
        skip(SkipCode::ReadError, reason)
    };

    let meta = fs::metadata(&c.abs).map_err(io_skip)?;
    if !meta.is_file() {
        return Err(skip(
            SkipCode::NotRegularFile,
            "not a regular file (FIFO, socket or device)".to_string(),
        ));
    }
    let size = meta.len();
    if size > opts.max_file_bytes {
        return Err(skip(
            SkipCode::TooLarge,
            too_large(size, opts.max_file_bytes),
        ));
    }
    let modified: Option<DateTime<Utc>> = meta.modified().ok().map(DateTime::<Utc>::from);

    // Read at most cap + 1 bytes so a file growing under us cannot blow the cap.
    let mut bytes = Vec::with_capacity(size as usize);
    fs::File::open(&c.abs)
        .and_then(|f| {
            f.take(opts.max_file_bytes.saturating_add(1))
                .read_to_end(&mut bytes)
        })
        .map_err(io_skip)?;
    if bytes.len() as u64 > opts.max_file_bytes {
        return Err(skip(
            SkipCode::TooLarge,
            too_large(bytes.len() as u64, opts.max_file_bytes),
        ));
    }
    let text = decode_text(bytes).map_err(|(code, reason)| skip(code, reason))?;
    if text.trim().is_empty() {
        let reason = if text.is_empty() {
            "empty file"
        } else {
            "empty file (only whitespace)"
        };
        return Err(skip(SkipCode::Empty, reason.to_string()));
    }
    let content = match c.kind {
        Kind::Csv => Content::Csv(parse_csv(&text).map_err(|(code, r)| skip(code, r))?),
        Kind::Json => Content::Json(
            parse_json(&text, opts.max_json_depth).map_err(|(code, r)| skip(code, r))?,
        ),
        Kind::Markdown => Content::Markdown(parse_markdown(text)),
    };
    Ok(FileRecord {
        path: c.rel.clone(),
        kind: c.kind,
        size,
        modified,
        content,
    })
}

fn too_large(size: u64, cap: u64) -> String {
    format!("too large ({size} bytes; the limit is {cap} bytes)")
}

type Failure = (SkipCode, String);

/// UTF-8 (an optional BOM is dropped) or UTF-16 with a byte-order mark.
/// NUL bytes in anything else mean binary data.
pub(crate) fn decode_text(bytes: Vec<u8>) -> Result<String, Failure> {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return utf8(rest.to_vec(), 3);
    }
    let utf16 = |rest: &[u8], le: bool| -> Result<String, Failure> {
        if !rest.len().is_multiple_of(2) {
            return Err((
                SkipCode::NotUtf8,
                "invalid UTF-16: odd number of bytes".into(),
            ));
        }
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|p| {
                if le {
                    u16::from_le_bytes([p[0], p[1]])
                } else {
                    u16::from_be_bytes([p[0], p[1]])
                }
            })
            .collect();
        let s = String::from_utf16(&units)
            .map_err(|_| (SkipCode::NotUtf8, "invalid UTF-16 text".to_string()))?;
        if s.contains('\0') {
            return Err((SkipCode::Binary, "binary data (NUL character)".into()));
        }
        Ok(s)
    };
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, true);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, false);
    }
    if let Some(pos) = bytes.iter().position(|&b| b == 0) {
        if looks_like_utf16(&bytes) {
            return Err((
                SkipCode::NotUtf8,
                "UTF-16 text without a byte-order mark (not read)".to_string(),
            ));
        }
        return Err((
            SkipCode::Binary,
            format!("binary data (NUL byte at offset {pos})"),
        ));
    }
    utf8(bytes, 0)
}

/// Most bytes at odd (or even) offsets of the first KiB are NUL and the
/// others are ASCII: UTF-16 text whose byte-order mark is missing or mangled.
fn looks_like_utf16(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(1024)];
    if head.len() < 8 {
        return false;
    }
    let pairs = head.len() / 2;
    let share = |parity: usize| {
        let nul = (0..pairs).filter(|i| head[2 * i + parity] == 0).count();
        let ascii = (0..pairs)
            .filter(|i| matches!(head[2 * i + 1 - parity], 0x09 | 0x0A | 0x0D | 0x20..=0x7E))
            .count();
        nul * 10 >= pairs * 9 && ascii * 10 >= pairs * 9
    };
    share(0) || share(1)
}

fn utf8(bytes: Vec<u8>, offset: usize) -> Result<String, Failure> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let byte = e.as_bytes()[at];
        (
            SkipCode::NotUtf8,
            format!(
                "not valid UTF-8 (byte 0x{byte:02x} at offset {})",
                at + offset
            ),
        )
    })
}

/// Parses CSV with a header row; every row must be as wide as the header.
pub(crate) fn parse_csv(text: &str) -> Result<CsvTable, Failure> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => return Err((SkipCode::InvalidCsv, format!("invalid CSV header: {e}"))),
    };
    if headers.is_empty() || headers.iter().all(String::is_empty) {
        return Err((SkipCode::InvalidCsv, "invalid CSV: empty header row".into()));
    }
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        match rec {
            Ok(r) => rows.push(r.iter().map(str::to_string).collect::<Vec<_>>()),
            Err(e) => {
                return Err(match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len,
                        len,
                        pos,
                    } => {
                        let line = pos.as_ref().map_or(i as u64 + 2, |p| p.line());
                        (
                            SkipCode::RaggedCsv,
                            format!(
                                "ragged CSV: line {line} has {len} fields, the header has {expected_len}"
                            ),
                        )
                    }
                    _ => (SkipCode::InvalidCsv, format!("invalid CSV: {e}")),
                });
            }
        }
    }
    let units = if rows.len() >= 2 && is_units_row(&rows[0]) {
        Some(rows.remove(0))
    } else {
        None
    };
    Ok(CsvTable {
        headers,
        units,
        rows,
    })
}

/// A row of unit names right under the header (Nsight Compute style): no
/// digits anywhere, short cells, and at least one well-known unit.
fn is_units_row(row: &[String]) -> bool {
    const KNOWN: [&str; 18] = [
        "ms", "us", "ns", "s", "msecond", "usecond", "nsecond", "second", "byte", "kbyte", "mbyte",
        "gbyte", "%", "hz", "khz", "mhz", "ghz", "cycle",
    ];
    let non_empty: Vec<&str> = row
        .iter()
        .map(String::as_str)
        .filter(|c| !c.is_empty())
        .collect();
    !non_empty.is_empty()
        && non_empty
            .iter()
            .all(|c| c.len() <= 24 && !c.bytes().any(|b| b.is_ascii_digit()) && !c.contains(' '))
        && non_empty
            .iter()
            .any(|c| KNOWN.iter().any(|k| c.eq_ignore_ascii_case(k)))
}

/// Parses JSON after checking its nesting depth without recursion.
pub(crate) fn parse_json(text: &str, max_depth: usize) -> Result<serde_json::Value, Failure> {
    let depth = json_depth(text.as_bytes());
    if depth > max_depth {
        return Err((
            SkipCode::TooDeep,
            format!("JSON nested {depth} levels deep (the limit is {max_depth})"),
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        let reason = if e.to_string().contains("recursion limit") {
            (SkipCode::TooDeep, format!("JSON nested too deep: {e}"))
        } else {
            (SkipCode::InvalidJson, format!("invalid JSON: {e}"))
        };
        reason
    })
}

/// Maximum bracket nesting outside strings (a bound that is exact for valid JSON).
fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Collects ATX (`# Title`) and setext (`Title` + `===`/`---`) headings,
/// ignoring fenced code blocks.
pub(crate) fn parse_markdown(text: String) -> MarkdownDoc {
    let mut headings = Vec::new();
    let mut fence: Option<(u8, usize)> = None;
    let mut prev: Option<(usize, &str)> = None; // previous paragraph line
                                                // YAML front matter (`---` ... `---` at the very top) is not text.
    let front_matter_end = if text.lines().next().map(str::trim_end) == Some("---") {
        text.lines()
            .skip(1)
            .position(|l| matches!(l.trim_end(), "---" | "..."))
            .map_or(0, |p| p + 2)
    } else {
        0
    };
    for (i, raw) in text.lines().enumerate().skip(front_matter_end) {
        let line_no = i + 1;
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let line = raw.trim_start_matches(' ');
        if let Some((ch, n)) = fence {
            let run = line.bytes().take_while(|&b| b == ch).count();
            if indent < 4 && run >= n && line[run..].trim().is_empty() {
                fence = None;
            }
            continue;
        }
        if indent < 4 {
            let ticks = line.bytes().take_while(|&b| b == b'`').count();
            let tildes = line.bytes().take_while(|&b| b == b'~').count();
            if ticks >= 3 {
                fence = Some((b'`', ticks));
                prev = None;
                continue;
            }
            if tildes >= 3 {
                fence = Some((b'~', tildes));
                prev = None;
                continue;
            }
            if let Some(h) = atx_heading(line, line_no) {
                headings.push(h);
                prev = None;
                continue;
            }
            let t = line.trim_end();
            if !t.is_empty() && (t.bytes().all(|b| b == b'=') || t.bytes().all(|b| b == b'-')) {
                if let Some((pline, ptext)) = prev {
                    headings.push(Heading {
                        level: if t.starts_with('=') { 1 } else { 2 },
                        text: ptext.trim().to_string(),
                        line: pline,
                    });
                    prev = None;
                    continue;
                }
            }
        }
        prev = if indent < 4 && is_paragraph_line(line) {
            Some((line_no, line))
        } else {
            None
        };
    }
    MarkdownDoc { text, headings }
}

fn atx_heading(line: &str, line_no: usize) -> Option<Heading> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    // Drop an optional closing run of '#'.
    let mut text = rest.trim();
    let stripped = text.trim_end_matches('#');
    if stripped.is_empty() || stripped.ends_with([' ', '\t']) {
        text = stripped.trim_end();
    }
    Some(Heading {
        level: level as u8,
        text: text.to_string(),
        line: line_no,
    })
}

/// Lines that can carry a setext underline: plain text, not lists, quotes or tables.
fn is_paragraph_line(line: &str) -> bool {
    let t = line.trim();
    if t.is_empty() || t.starts_with(['|', '>', '<']) {
        return false;
    }
    if t.bytes()
        .all(|b| matches!(b, b'-' | b'=' | b'*' | b'_' | b' '))
    {
        return false; // a thematic break, not text
    }
    let list_bullet = (t.starts_with(['-', '*', '+']) && (t.len() == 1 || t[1..].starts_with(' ')))
        || {
            let digits = t.bytes().take_while(u8::is_ascii_digit).count();
            digits > 0 && t[digits..].starts_with(['.', ')'])
        };
    !list_bullet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_atx_setext_and_fences() {
        let md = "# Title\n\nPara\n===\n\n```\n# not a heading\n```\n## Sub ##\n#nope\n- item\n---\nText\n---\n    # code\n";
        let doc = parse_markdown(md.to_string());
        let got: Vec<(u8, &str)> = doc
            .headings
            .iter()
            .map(|h| (h.level, h.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(1, "Title"), (1, "Para"), (2, "Sub"), (2, "Text")]
        );
        assert_eq!(doc.title(), Some("Title"));
        assert_eq!(doc.headings[1].line, 3);
        let fm = parse_markdown("---\ntitle: x\n---\n# Real\n".to_string());
        assert_eq!(fm.headings.len(), 1);
        assert_eq!(fm.headings[0].line, 4);
    }

    #[test]
    fn csv_units_row_and_ragged() {
        let t = parse_csv("\"a\",\"b\"\n\"\",\"us\"\n\"1\",\"2\"\n").unwrap();
        assert_eq!(t.units, Some(vec![String::new(), "us".into()]));
        assert_eq!(t.rows, vec![vec!["1".to_string(), "2".into()]]);
        let err = parse_csv("a,b\n1,2\n3\n").unwrap_err();
        assert_eq!(err.0, SkipCode::RaggedCsv);
        assert!(
            err.1.contains("line 3 has 1 fields, the header has 2"),
            "{}",
            err.1
        );
    }

    #[test]
    fn decode_boms_and_binary() {
        assert_eq!(decode_text(b"\xEF\xBB\xBFa,b".to_vec()).unwrap(), "a,b");
        assert_eq!(decode_text(b"\xFF\xFEa\0b\0".to_vec()).unwrap(), "ab");
        assert_eq!(decode_text(b"\xFE\xFF\0a\0b".to_vec()).unwrap(), "ab");
        assert_eq!(
            decode_text(b"a\0b".to_vec()).unwrap_err().0,
            SkipCode::Binary
        );
        let no_bom: Vec<u8> = "\u{bf}\u{be}==ERROR== bad option"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let e = decode_text(no_bom).unwrap_err();
        assert_eq!(e.0, SkipCode::NotUtf8, "{}", e.1);
        assert!(e.1.contains("UTF-16"), "{}", e.1);
        let e = decode_text(b"ab\xff".to_vec()).unwrap_err();
        assert_eq!(
            e,
            (
                SkipCode::NotUtf8,
                "not valid UTF-8 (byte 0xff at offset 2)".into()
            )
        );
    }

    #[test]
    fn json_depth_limit() {
        let deep = format!("{}{}", "[".repeat(20), "]".repeat(20));
        assert_eq!(parse_json(&deep, 19).unwrap_err().0, SkipCode::TooDeep);
        assert!(parse_json(&deep, 20).is_ok());
        assert_eq!(json_depth(br#"{"a":"[[[[","b":[1]}"#), 2);
        assert_eq!(parse_json("{", 10).unwrap_err().0, SkipCode::InvalidJson);
    }
}
