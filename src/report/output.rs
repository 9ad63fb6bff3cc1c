//! Where report files go, and how they get there.
//!
//! * Every file is written through [`write_atomic`]: a temporary file in the
//!   target's own folder, flushed to disk, then renamed over the target, so a
//!   reader (or a crash) never sees half a file. This is the only place in
//!   the crate's report path that writes files.
//! * A run is assembled in a hidden staging folder (`.run_<n>.partial`) and
//!   renamed to `run_<n>` once all its files are written, so a `run_<n>`
//!   folder is always complete.
//! * An output folder that already holds a report (`summary.json`,
//!   `summary.md`, `run_<n>/` or a staging folder) is refused unless the
//!   caller asked to overwrite; then exactly those entries are removed and
//!   nothing else in the folder is touched.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// The top-level files every report folder gets.
pub const SUMMARY_JSON: &str = "summary.json";
pub const SUMMARY_MD: &str = "summary.md";
/// Per run.
pub const METRICS_JSON: &str = "metrics.json";

/// Writes `bytes` to `path` atomically: temporary file in the same folder,
/// fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let write = || -> std::io::Result<()> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(".chimera-").suffix(".tmp");
        // Temporary files are private (0600); a report is an ordinary file,
        // readable as the umask allows (the kernel applies it to 0666).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            builder.permissions(fs::Permissions::from_mode(0o666));
        }
        let mut tmp = builder.tempfile_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// `run_<n>`, the folder of run `n` (1-based).
pub fn run_dir_name(n: usize) -> String {
    format!("run_{n}")
}

fn staging_name(n: usize) -> String {
    format!(".run_{n}.partial")
}

/// Entries of a report folder that belong to an earlier report.
fn is_report_entry(name: &str) -> bool {
    if name == SUMMARY_JSON || name == SUMMARY_MD {
        return true;
    }
    let numbered = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(n) = name.strip_prefix("run_") {
        return numbered(n);
    }
    name.strip_prefix(".run_")
        .and_then(|r| r.strip_suffix(".partial"))
        .is_some_and(numbered)
}

/// A report folder: `summary.json`, `summary.md` and `run_<n>/` folders.
#[derive(Debug, Clone)]
pub struct OutputDir {
    root: PathBuf,
}

impl OutputDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Entries left by an earlier report, sorted by name.
    pub fn existing_report(&self) -> Result<Vec<String>> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.root.display()))
            }
        };
        let mut found = Vec::new();
        for entry in rd {
            let entry = entry.with_context(|| format!("cannot read {}", self.root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_report_entry(&name) {
                found.push(name);
            }
        }
        found.sort();
        Ok(found)
    }

    /// Fails when the folder already holds a report, naming what is there.
    /// Also refuses a path that exists but is not a folder.
    pub fn refuse_existing(&self) -> Result<()> {
        if self.root.exists() && !self.root.is_dir() {
            anyhow::bail!(
                "output folder {} exists and is not a folder",
                self.root.display()
            );
        }
        let found = self.existing_report()?;
        if !found.is_empty() {
            let shown: Vec<&str> = found.iter().take(4).map(String::as_str).collect();
            let more = if found.len() > 4 { ", ..." } else { "" };
            anyhow::bail!(
                "output folder {} already holds a report ({}{more}); choose another --output-dir or pass --overwrite to replace it",
                self.root.display(),
                shown.join(", ")
            );
        }
        Ok(())
    }

    /// Removes an earlier report's entries (and only those), then makes sure
    /// the folder exists.
    pub fn clear_existing(&self) -> Result<()> {
        for name in self.existing_report()? {
            let p = self.root.join(&name);
            let removed = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            removed.with_context(|| format!("cannot remove {}", p.display()))?;
        }
        self.create()
    }

    pub fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create output folder {}", self.root.display()))
    }

    pub fn run_dir(&self, n: usize) -> PathBuf {
        self.root.join(run_dir_name(n))
    }

    /// A fresh, empty staging folder for run `n`.
    pub fn stage_run(&self, n: usize) -> Result<PathBuf> {
        let p = self.root.join(staging_name(n));
        if p.exists() {
            fs::remove_dir_all(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
        fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(p)
    }

    /// Renames run `n`'s staging folder to `run_<n>`; refuses to replace an
    /// existing run.
    pub fn commit_run(&self, n: usize) -> Result<PathBuf> {
        let from = self.root.join(staging_name(n));
        let to = self.run_dir(n);
        anyhow::ensure!(
            !to.exists(),
            "{} appeared while this report was running; not replacing it",
            to.display()
        );
        fs::rename(&from, &to)
            .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
        Ok(to)
    }

    /// Removes run `n`'s staging folder, if any (after an interruption).
    pub fn discard_staging(&self, n: usize) {
        let _ = fs::remove_dir_all(self.root.join(staging_name(n)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_entries() {
        for yes in [
            "summary.json",
            "summary.md",
            "run_1",
            "run_12",
            ".run_3.partial",
        ] {
            assert!(is_report_entry(yes), "{yes}");
        }
        for no in [
            "run_",
            "run_x",
            "run_1a",
            "notes.md",
            ".run_.partial",
            "summary.txt",
        ] {
            assert!(!is_report_entry(no), "{no}");
        }
    }

    #[test]
    fn atomic_write_refusal_and_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let out = OutputDir::new(tmp.path().join("out"));
        out.refuse_existing().unwrap();
        out.create().unwrap();
        write_atomic(&out.root().join("keep.txt"), b"mine").unwrap();
        out.refuse_existing().unwrap();

        let staged = out.stage_run(1).unwrap();
        write_atomic(&staged.join("a.md"), b"first").unwrap();
        write_atomic(&staged.join("a.md"), b"second").unwrap();
        let run = out.commit_run(1).unwrap();
        assert_eq!(fs::read_to_string(run.join("a.md")).unwrap(), "second");
        // No temporary files are left behind.
        let names: Vec<String> = fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.md"]);

        let err = out.refuse_existing().unwrap_err().to_string();
        assert!(err.contains("already holds a report (run_1)"), "{err}");
        assert!(err.contains("--overwrite"), "{err}");
        assert!(out.stage_run(1).is_ok());
        assert!(
            out.commit_run(1).is_err(),
            "an existing run is never replaced"
        );

        out.clear_existing().unwrap();
        out.refuse_existing().unwrap();
        assert_eq!(
            fs::read_to_string(out.root().join("keep.txt")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn a_file_is_not_an_output_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, "x").unwrap();
        let err = OutputDir::new(&f)
            .refuse_existing()
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a folder"), "{err}");
    }
}
