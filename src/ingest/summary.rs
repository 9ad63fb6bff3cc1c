//! The data summary, in the exact layout the original Chimera agents
//! (Sahil170595/Chimeraforge, `create_data_summary`) printed and that reports
//! quote:
//!
//! ```text
//! Total files analyzed: 101
//!
//! CSV Files (28)
//!   - reports/gemma3/gemma3_1b-it-qat_baseline.csv
//!   ... (at most 5 paths)
//!   ... and 23 more
//!   Latest modified: 2025-11-14 18:53:30 UTC
//!
//! JSON Files (44)
//! ...
//! ```
//!
//! * Groups appear in the order CSV, JSON, MARKDOWN, and only when they have files.
//! * Each group lists its first five paths (sorted), then `  ... and N more`
//!   when there are more than five.
//! * `Latest modified` is the newest modification time in the group,
//!   truncated to whole seconds, in UTC; the line is left out when no file
//!   has a time.
//! * Every group, including the last, ends with an empty line.

use std::fmt::Write as _;

use super::{FileRecord, Kind};

/// How many paths each group lists.
pub const LISTED_PER_KIND: usize = 5;

/// Builds the summary for `files` (sorted here by path, so any order works).
pub fn summary_text(files: &[FileRecord]) -> String {
    let mut out = String::new();
    let _ = write!(out, "Total files analyzed: {}\n\n", files.len());
    for kind in Kind::ALL {
        let mut group: Vec<&FileRecord> = files.iter().filter(|f| f.kind == kind).collect();
        if group.is_empty() {
            continue;
        }
        group.sort_by(|a, b| a.path.cmp(&b.path));
        let _ = writeln!(
            out,
            "{} Files ({})",
            kind.label().to_uppercase(),
            group.len()
        );
        for f in group.iter().take(LISTED_PER_KIND) {
            let _ = writeln!(out, "  - {}", f.path);
        }
        if group.len() > LISTED_PER_KIND {
            let _ = writeln!(out, "  ... and {} more", group.len() - LISTED_PER_KIND);
        }
        if let Some(latest) = group.iter().filter_map(|f| f.modified).max() {
            let _ = writeln!(
                out,
                "  Latest modified: {}",
                latest.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Content, MarkdownDoc};
    use chrono::{TimeZone, Utc};

    fn md(path: &str, secs: Option<i64>) -> FileRecord {
        FileRecord {
            path: path.into(),
            kind: Kind::Markdown,
            size: 1,
            modified: secs.map(|s| Utc.timestamp_opt(s, 999_000_000).unwrap()),
            content: Content::Markdown(MarkdownDoc {
                text: "x".into(),
                headings: vec![],
            }),
        }
    }

    #[test]
    fn layout() {
        assert_eq!(summary_text(&[]), "Total files analyzed: 0\n\n");
        let files: Vec<FileRecord> = (0..7)
            .rev()
            .map(|i| md(&format!("r/{i}.md"), (i != 3).then_some(1_763_146_410 + i)))
            .collect();
        let want = "Total files analyzed: 7\n\nMARKDOWN Files (7)\n  - r/0.md\n  - r/1.md\n  - r/2.md\n  - r/3.md\n  - r/4.md\n  ... and 2 more\n  Latest modified: 2025-11-14 18:53:36 UTC\n\n";
        assert_eq!(summary_text(&files), want);
        let no_time = [md("a.md", None)];
        assert_eq!(
            summary_text(&no_time),
            "Total files analyzed: 1\n\nMARKDOWN Files (1)\n  - a.md\n\n"
        );
    }
}
