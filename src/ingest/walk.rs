//! Directory walk: which files to read, and which to report as skipped.
//!
//! Entries are visited in byte order of their names so the walk is
//! deterministic. Symbolic links are resolved with `canonicalize`; a target
//! outside ROOT is never followed, and a directory link whose target is (or
//! contains) a directory on the current walk path is reported as a loop.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{IngestOptions, Kind, SkipCode, Skipped};

/// A file to read: its path relative to ROOT and where to open it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub rel: String,
    pub abs: PathBuf,
    pub kind: Kind,
}

pub(crate) struct Walked {
    pub scanned_dirs: Vec<String>,
    pub candidates: Vec<Candidate>,
    pub skipped: Vec<Skipped>,
}

#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
const ELOOP: i32 = 62;
#[cfg(not(any(target_os = "macos", target_os = "ios", target_os = "freebsd")))]
const ELOOP: i32 = 40;

struct Walker<'a> {
    canon_root: &'a Path,
    opts: &'a IngestOptions,
    candidates: Vec<Candidate>,
    skipped: Vec<Skipped>,
}

pub(crate) fn walk(root: &Path, canon_root: &Path, opts: &IngestOptions) -> Walked {
    let mut w = Walker {
        canon_root,
        opts,
        candidates: Vec::new(),
        skipped: Vec::new(),
    };
    let mut scanned_dirs = Vec::new();
    let mut seen = Vec::new();
    for dir in &opts.dirs {
        let rel = normalize_rel(dir);
        if rel.is_empty() || seen.contains(&rel) {
            continue;
        }
        seen.push(rel.clone());
        let abs = root.join(&rel);
        // Only folders that exist count; anything else falls through to ROOT.
        let Ok(canon) = fs::canonicalize(&abs) else {
            continue;
        };
        if !canon.is_dir() {
            continue;
        }
        if !canon.starts_with(canon_root) {
            w.skipped.push(Skipped::new(
                rel,
                SkipCode::OutsideRoot,
                format!(
                    "folder resolves outside ROOT ({}); not scanned",
                    canon.display()
                ),
            ));
            continue;
        }
        scanned_dirs.push(rel.clone());
        let mut stack = vec![canon];
        w.visit(&abs, &rel, 0, &mut stack);
    }
    if scanned_dirs.is_empty() {
        scanned_dirs.push(".".to_string());
        let mut stack = vec![canon_root.to_path_buf()];
        w.visit(root, "", 0, &mut stack);
    }
    Walked {
        scanned_dirs,
        candidates: w.candidates,
        skipped: w.skipped,
    }
}

/// `./a//b/` -> `a/b`; backslashes become slashes.
fn normalize_rel(dir: &str) -> String {
    dir.replace('\\', "/")
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn join_rel(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

fn extension_of(name: &str) -> Option<&str> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then_some(ext)
}

fn unsupported_reason(name: &str) -> String {
    match extension_of(name) {
        Some(ext) => format!("unsupported file type .{ext}"),
        None => "unsupported file type (no extension)".to_string(),
    }
}

impl Walker<'_> {
    /// Walks directory `abs` (relative path `rel`); `stack` holds the
    /// canonical paths of the directories on the current walk path.
    fn visit(&mut self, abs: &Path, rel: &str, depth: usize, stack: &mut Vec<PathBuf>) {
        let entries = match fs::read_dir(abs) {
            Ok(rd) => rd,
            Err(e) => {
                self.skipped.push(Skipped::new(
                    display_rel(rel),
                    SkipCode::ReadError,
                    format!("cannot read directory: {e}"),
                ));
                return;
            }
        };
        let mut list = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => list.push(e),
                Err(e) => self.skipped.push(Skipped::new(
                    display_rel(rel),
                    SkipCode::ReadError,
                    format!("cannot list directory entry: {e}"),
                )),
            }
        }
        list.sort_by_key(|e| e.file_name());
        for entry in list {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = join_rel(rel, &name);
            let child_abs = entry.path();
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) => {
                    self.skipped
                        .push(Skipped::new(child_rel, SkipCode::ReadError, e.to_string()));
                    continue;
                }
            };
            if ft.is_symlink() {
                self.visit_symlink(&child_abs, child_rel, &name, depth, stack);
            } else if ft.is_dir() {
                let canon = stack.last().map(|p| p.join(&name)).unwrap_or_default();
                self.enter_dir(&child_abs, child_rel, &name, canon, depth, stack);
            } else if ft.is_file() {
                self.add_file(child_abs, child_rel, &name);
            } else {
                self.skipped.push(Skipped::new(
                    child_rel,
                    SkipCode::NotRegularFile,
                    "not a regular file (FIFO, socket or device)",
                ));
            }
        }
    }

    fn enter_dir(
        &mut self,
        abs: &Path,
        rel: String,
        name: &str,
        canon: PathBuf,
        depth: usize,
        stack: &mut Vec<PathBuf>,
    ) {
        if name.starts_with('.') {
            self.skipped.push(Skipped::new(
                rel,
                SkipCode::HiddenDir,
                "hidden directory (not scanned)",
            ));
            return;
        }
        if depth + 1 > self.opts.max_dir_depth {
            self.skipped.push(Skipped::new(
                rel,
                SkipCode::TooDeep,
                format!(
                    "directory nested deeper than {} levels (not scanned)",
                    self.opts.max_dir_depth
                ),
            ));
            return;
        }
        stack.push(canon);
        self.visit(abs, &rel, depth + 1, stack);
        stack.pop();
    }

    fn add_file(&mut self, abs: PathBuf, rel: String, name: &str) {
        match extension_of(name).and_then(Kind::from_extension) {
            Some(kind) => self.candidates.push(Candidate { rel, abs, kind }),
            None => {
                let reason = unsupported_reason(name);
                self.skipped
                    .push(Skipped::new(rel, SkipCode::Unsupported, reason));
            }
        }
    }

    fn visit_symlink(
        &mut self,
        abs: &Path,
        rel: String,
        name: &str,
        depth: usize,
        stack: &mut Vec<PathBuf>,
    ) {
        let link_text = fs::read_link(abs)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".to_string());
        let target = match fs::canonicalize(abs) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.skipped.push(Skipped::new(
                    rel,
                    SkipCode::DanglingSymlink,
                    format!("dangling symlink (-> {link_text})"),
                ));
                return;
            }
            Err(e) if e.raw_os_error() == Some(ELOOP) => {
                self.skipped.push(Skipped::new(
                    rel,
                    SkipCode::SymlinkLoop,
                    format!("symlink loop (-> {link_text})"),
                ));
                return;
            }
            Err(e) => {
                self.skipped.push(Skipped::new(
                    rel,
                    SkipCode::ReadError,
                    format!("cannot resolve symlink (-> {link_text}): {e}"),
                ));
                return;
            }
        };
        if !target.starts_with(self.canon_root) {
            self.skipped.push(Skipped::new(
                rel,
                SkipCode::OutsideRoot,
                format!(
                    "symlink points outside ROOT (-> {}); not followed",
                    target.display()
                ),
            ));
            return;
        }
        let meta = match fs::metadata(&target) {
            Ok(m) => m,
            Err(e) => {
                self.skipped
                    .push(Skipped::new(rel, SkipCode::ReadError, e.to_string()));
                return;
            }
        };
        if meta.is_dir() {
            if stack.iter().any(|d| d.starts_with(&target)) {
                self.skipped.push(Skipped::new(
                    rel,
                    SkipCode::SymlinkLoop,
                    format!("symlink loop: points to an enclosing directory (-> {link_text})"),
                ));
                return;
            }
            self.enter_dir(abs, rel, name, target, depth, stack);
        } else if meta.is_file() {
            self.add_file(abs.to_path_buf(), rel, name);
        } else {
            self.skipped.push(Skipped::new(
                rel,
                SkipCode::NotRegularFile,
                "symlink to something that is not a regular file",
            ));
        }
    }
}

fn display_rel(rel: &str) -> String {
    if rel.is_empty() {
        ".".to_string()
    } else {
        rel.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths_are_normalised() {
        assert_eq!(normalize_rel("./reports//gemma3/"), "reports/gemma3");
        assert_eq!(normalize_rel("a\\b"), "a/b");
        assert_eq!(normalize_rel("."), "");
    }

    #[test]
    fn extensions() {
        assert_eq!(extension_of("a.CSV"), Some("CSV"));
        assert_eq!(extension_of(".hidden"), None);
        assert_eq!(extension_of("noext"), None);
        assert_eq!(
            unsupported_reason("x.ncu-rep"),
            "unsupported file type .ncu-rep"
        );
    }
}
