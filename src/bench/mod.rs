//! Whole-model benchmarks, shared by `chimera bench` and `cargo bench --bench
//! gemma`: the tests llama-bench runs, under its names, plus time to first
//! token, load time and memory.
//!
//! # What each number times
//!
//! * **`pp<N>`** (prompt processing, llama-bench's `pp`): `N` token ids
//!   (spread over the vocabulary, not text) through the model's forward
//!   passes, in batches of `--ubatch`, from an empty cache, logits for the
//!   last position only. No tokenization, no sampling. `t/s = N / time`
//!   ([`Engine::time_prompt`]).
//! * **`tg<N>`** (text generation, llama-bench's `tg`): `N` single-token
//!   forward passes with logits, from an empty cache. No sampling.
//!   `t/s = N / time` ([`Engine::time_decode`]).
//! * **`ttft<N>`** (time to first token): [`Engine::generate`] on a raw
//!   prompt of about `N` tokens (the exact count is reported) with
//!   `num_predict = 1`, greedy: from the call's start, tokenization
//!   included, until the first token has been sampled (`metrics.ttft_ms`).
//! * **`load`**: the wall time of [`Engine::load`] (open and map the
//!   weights, build the model, read the tokenizer). Each model is loaded
//!   `repetitions` times; the first load is reported on its own as *cold*
//!   when less than 95% of the weights were in the page cache before it
//!   (measured with `mincore`), and the loads that found the file cached
//!   are the *warm* statistics.
//! * **peak RSS**: `VmHWM` after the model's runs. It is reset (Linux
//!   `clear_refs`) before the model's first load, so it covers that model
//!   alone; where the reset is refused it is the process peak and says so.
//! * **model RSS**: resident memory after the first load and one decode step
//!   (every weight page read once) minus before the load.
//!   Weights used in place from a memory-mapped file count only once they
//!   have been read, so this is what loading itself made resident.
//!
//! Every test runs one warm-up (not counted, unless `--no-warmup`) and then
//! `repetitions` timed runs; the tables show the mean ± the sample standard
//! deviation ([`Stat`]); JSON and CSV carry every sample.
//!
//! # Environment
//!
//! * `CHIMERA_BENCH_MODELS=a,b`: the models to run (names from models.toml
//!   or paths) when no `-m` is given; `cargo bench` otherwise runs every
//!   models.toml model present in the cache and lists the others as
//!   skipped, with the command that fetches them.
//! * `CHIMERA_BENCH_QUICK=1`: small sizes (`pp64`, `tg16`) and one
//!   repetition, for CI; explicit flags still win.
//! * `CHIMERA_LLAMA_BENCH=PATH`: a llama-bench binary to run side by side
//!   (as `--vs-llama-bench PATH`): same file, sizes, repetitions, threads
//!   and ubatch, `-o json`; the tables add its t/s and the ratio
//!   chimera / llama.cpp per test.
//! * `CHIMERA_THREADS=N` (`cargo bench` only): kernel threads.

pub mod llama;
pub mod render;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::engine::metrics::{current_rss_bytes, peak_rss_bytes};
use crate::engine::{Engine, EngineConfig, Options, Prompt, Quiet, Request};
use crate::model::{Config, Tokenizer};
use crate::models::{cached_model, fetch_command, resolve, Fetch, ModelFiles, Registry};
use crate::report::stats::Stat;

pub use llama::{LlamaRun, LlamaTest, Ratio};

/// Names of the environment variables this module reads.
pub const ENV_MODELS: &str = "CHIMERA_BENCH_MODELS";
pub const ENV_QUICK: &str = "CHIMERA_BENCH_QUICK";
pub const ENV_LLAMA_BENCH: &str = "CHIMERA_LLAMA_BENCH";

/// One line per measurement, as the outputs print them.
pub const DEF_PP: &str = "pp N: N prompt token ids through forward passes (batches of ubatch) from an empty cache, logits for the last only; no tokenization, no sampling (llama-bench pp); t/s = N / time";
pub const DEF_TG: &str = "tg N: N single-token forward passes with logits from an empty cache; no sampling (llama-bench tg); t/s = N / time";
pub const DEF_TTFT: &str = "ttft N: generate() on a raw prompt of about N tokens, num_predict 1, greedy: call start (tokenization included) to the first token sampled";
pub const DEF_LOAD: &str = "load: Engine::load wall time (map weights, build the model, read the tokenizer); cold = under 95% of the weights in the page cache before the load, warm = cached";
pub const DEF_PEAK: &str = "peak RSS: VmHWM after the model's runs (reset before its first load where allowed, else the process peak)";
pub const DEF_MODEL_RSS: &str = "model RSS: resident memory after the first load and one decode step (so every memory-mapped weight page has been read) minus before the load; the ratio is to the model file";
pub const DEF_STATS: &str =
    "each test: one warm-up (not counted) then the repetitions; mean ± sample stddev (n - 1)";

/// `CHIMERA_BENCH_QUICK=1`.
pub fn quick_mode() -> bool {
    std::env::var(ENV_QUICK).is_ok_and(|v| v.trim() == "1")
}

/// The model list of `CHIMERA_BENCH_MODELS`, if set and not empty.
pub fn models_from_env() -> Option<Vec<String>> {
    let v = std::env::var(ENV_MODELS).ok()?;
    let list: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    (!list.is_empty()).then_some(list)
}

/// `CHIMERA_LLAMA_BENCH`, if set and not empty.
pub fn llama_bench_from_env() -> Option<PathBuf> {
    std::env::var_os(ENV_LLAMA_BENCH)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Test sizes and repetitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sizes {
    /// Prompt sizes: one `pp` and one `ttft` test each (0 = none).
    pub n_prompt: Vec<usize>,
    /// Generation sizes: one `tg` test each (0 = none).
    pub n_gen: Vec<usize>,
    /// Timed runs per test (and loads per model).
    pub repetitions: usize,
    /// One uncounted run before each test.
    pub warmup: bool,
}

impl Sizes {
    /// llama-bench's defaults: pp512, tg128, five repetitions.
    pub fn standard() -> Self {
        Self {
            n_prompt: vec![512],
            n_gen: vec![128],
            repetitions: 5,
            warmup: true,
        }
    }

    /// `CHIMERA_BENCH_QUICK=1`: pp64, tg16, one repetition.
    pub fn quick() -> Self {
        Self {
            n_prompt: vec![64],
            n_gen: vec![16],
            repetitions: 1,
            warmup: true,
        }
    }

    /// [`Sizes::quick`] under `CHIMERA_BENCH_QUICK=1`, else [`Sizes::standard`].
    pub fn from_env() -> Self {
        if quick_mode() {
            Self::quick()
        } else {
            Self::standard()
        }
    }

    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.repetitions >= 1,
            "invalid repetitions 0: must be at least 1"
        );
        anyhow::ensure!(
            self.n_prompt.iter().chain(&self.n_gen).any(|&n| n > 0),
            "nothing to measure: every prompt and generation size is 0"
        );
        Ok(())
    }
}

/// How to measure.
#[derive(Debug, Clone)]
pub struct Settings {
    pub sizes: Sizes,
    pub engine: EngineConfig,
}

/// Which kind of test a result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pp,
    Tg,
    Ttft,
}

/// One test of one model.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// `pp512`, `tg128`, `ttft512`: llama-bench's names.
    pub test: String,
    pub kind: Kind,
    /// Prompt tokens the test asked for (0 for tg).
    pub n_prompt: usize,
    /// Generated tokens (0 for pp; 1 for ttft).
    pub n_gen: usize,
    /// Tokens the ttft prompt actually had (`<bos>` included); `n_prompt`
    /// for pp, 0 for tg.
    pub prompt_tokens: usize,
    /// Milliseconds per timed run; `values` holds every sample.
    pub ms: Stat,
    /// Tokens per second per timed run (pp, tg); none for ttft.
    pub ts: Option<Stat>,
}

/// Load times of one model.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// The first load in this process.
    pub first_ms: f64,
    /// `cold`, `warm` or `unknown` (no page-cache information).
    pub first_state: String,
    /// Fraction of the weight files in the page cache before the first load.
    pub page_cache_fraction: Option<f64>,
    /// Every load that found the weights cached (the first one too when it did).
    pub warm_ms: Stat,
}

/// Memory of one model.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub peak_rss_bytes: u64,
    /// `model` when VmHWM was reset before this model, `process` when not.
    pub peak_scope: String,
    pub model_rss_bytes: u64,
}

/// Everything measured for one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelResult {
    pub model: String,
    pub file: String,
    pub file_bytes: u64,
    /// Parameters computed from the architecture (embeddings tied to the
    /// output, as every Gemma 3 has them).
    pub params: u64,
    pub backend: String,
    pub isa: String,
    pub threads: usize,
    pub ubatch: usize,
    pub load: LoadResult,
    pub tests: Vec<TestResult>,
    pub memory: Memory,
    pub llama_bench: Option<LlamaRun>,
}

/// A model that was asked for (or is in models.toml) but not measured.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub model: String,
    pub reason: String,
    /// The command that fetches it, when that is what is missing.
    pub fetch: Option<String>,
}

/// What the definitions of the numbers are, carried in the JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct Definitions {
    pub pp: &'static str,
    pub tg: &'static str,
    pub ttft: &'static str,
    pub load: &'static str,
    pub peak_rss: &'static str,
    pub model_rss: &'static str,
    pub statistics: &'static str,
}

impl Default for Definitions {
    fn default() -> Self {
        Self {
            pp: DEF_PP,
            tg: DEF_TG,
            ttft: DEF_TTFT,
            load: DEF_LOAD,
            peak_rss: DEF_PEAK,
            model_rss: DEF_MODEL_RSS,
            statistics: DEF_STATS,
        }
    }
}

/// A whole benchmark: what `-o json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub tool: String,
    pub version: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub definitions: Definitions,
    pub sizes: Sizes,
    pub device: String,
    pub models: Vec<ModelResult>,
    pub skipped: Vec<Skipped>,
}

impl BenchReport {
    pub fn new(sizes: &Sizes, engine: &EngineConfig) -> Self {
        Self {
            tool: "chimera bench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            definitions: Definitions::default(),
            sizes: sizes.clone(),
            device: engine.device.to_string(),
            models: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

/// Parameters of a Gemma 3 of this architecture, embeddings tied.
pub fn param_count(c: &Config) -> u64 {
    let (h, i, q, kv, hd) = (
        c.hidden_size as u64,
        c.intermediate_size as u64,
        c.q_dim() as u64,
        c.kv_dim() as u64,
        c.head_dim as u64,
    );
    let layer = h * q + 2 * h * kv + q * h + 3 * h * i + 4 * h + 2 * hd;
    c.vocab_size as u64 * h + c.num_hidden_layers as u64 * layer + h
}

/// Resets the process's VmHWM to its current RSS (Linux `clear_refs` 5);
/// false where the kernel refuses.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Fraction of the weight files behind `path` that is in the page cache, by
/// `mincore` on a fresh mapping (which reads nothing); `None` where it
/// cannot be told.
pub fn page_cache_fraction(path: &Path) -> Option<f64> {
    let files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    let (mut resident, mut total) = (0u64, 0u64);
    for f in files {
        let (r, t) = resident_pages(&f)?;
        resident += r;
        total += t;
    }
    Some(if total == 0 {
        1.0
    } else {
        resident as f64 / total as f64
    })
}

#[cfg(target_os = "linux")]
fn resident_pages(path: &Path) -> Option<(u64, u64)> {
    let file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len() as usize;
    if len == 0 {
        return Some((0, 0));
    }
    // SAFETY: the mapping is only passed to mincore, never read.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` covers `len` bytes from a page-aligned address and `vec`
    // holds one byte per page of that range.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    let resident = vec.iter().filter(|&&b| b & 1 != 0).count();
    Some((resident as u64, pages as u64))
}

#[cfg(not(target_os = "linux"))]
fn resident_pages(_path: &Path) -> Option<(u64, u64)> {
    None
}

/// Filler text for the TTFT prompt: ordinary prose, about one token a word.
const FILLER: &str = "The benchmark suite measured prompt processing and token generation \
    on every model variant under the same settings. Each run recorded throughput in tokens \
    per second, the time to the first token, the load time of the weights and the peak \
    resident memory of the process. Results were written to comma separated files and JSON \
    documents, one folder per run, so that later analysis could compare quantization types, \
    context sizes and thread counts without running the models again. The report below \
    summarises those measurements, names the fastest configuration for interactive use and \
    lists the changes most likely to reduce latency further.";

/// Raw prompt text of at most `n` tokens (`<bos>` included) and as close
/// to `n` as the tokenizer allows, with its exact token count: prose when
/// the tokenizer reads prose, else the vocabulary's own pieces.
pub fn prompt_of_tokens(tok: &Tokenizer, n: usize) -> Result<(String, usize)> {
    anyhow::ensure!(n >= 2, "a TTFT prompt needs at least 2 tokens, not {n}");
    let count = |s: &str| tok.encode(s, true).map(|v| v.len());
    let words: Vec<&str> = FILLER.split_whitespace().collect();
    let prose = |k: usize| {
        (0..k)
            .map(|i| words[i % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    if let Some(found) = fit(&prose, n, 4 * n + 8, &count)? {
        return Ok(found);
    }
    // A tokenizer that does not split prose into many tokens (a test
    // vocabulary): concatenate ordinary tokens' text.
    let mut pieces = Vec::new();
    for id in 0..tok.base_vocab_size() as u32 {
        let t = tok.decode(&[id])?;
        if !t.is_empty() {
            pieces.push(t);
        }
    }
    anyhow::ensure!(!pieces.is_empty(), "the tokenizer decodes no token to text");
    let vocab = |k: usize| {
        (0..k)
            .map(|i| pieces[i % pieces.len()].as_str())
            .collect::<String>()
    };
    fit(&vocab, n, 4 * n + 8, &count)?
        .with_context(|| format!("cannot build a prompt of {n} tokens with this tokenizer"))
}

/// The longest `make(k)`, `k <= max_k`, of at most `n` tokens, when it has
/// at least 90% of `n`.
fn fit(
    make: &dyn Fn(usize) -> String,
    n: usize,
    max_k: usize,
    count: &dyn Fn(&str) -> Result<usize>,
) -> Result<Option<(String, usize)>> {
    let (mut lo, mut hi) = (0usize, max_k);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if count(&make(mid))? <= n {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let text = make(lo);
    let got = count(&text)?;
    Ok((got * 10 >= n * 9 && got <= n).then_some((text, got)))
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn rate(tokens: usize, ms: f64) -> f64 {
    crate::engine::metrics::rate(tokens, ms)
}

/// Runs `f` once uncounted (when warming up) and then `reps` times.
fn repeat(warmup: bool, reps: usize, mut f: impl FnMut() -> Result<f64>) -> Result<Vec<f64>> {
    if warmup {
        f()?;
    }
    (0..reps).map(|_| f()).collect()
}

/// Measures one model as the module docs describe. `progress` hears what
/// runs next.
pub fn bench_model(
    files: &ModelFiles,
    s: &Settings,
    progress: &mut dyn FnMut(&str),
) -> Result<ModelResult> {
    s.sizes.validate()?;
    let name = files.name.clone();
    let reps = s.sizes.repetitions;
    let peak_scope = if reset_peak_rss() { "model" } else { "process" };
    let cached = page_cache_fraction(&files.weights);
    let first_state = match cached {
        Some(f) if f >= 0.95 => "warm",
        Some(_) => "cold",
        None => "unknown",
    };

    progress(&format!("{name}: load 1/{reps}"));
    let rss_before = current_rss_bytes();
    let t0 = Instant::now();
    let mut engine = Engine::load(files, &s.engine)?;
    let first_ms = ms_since(t0);
    // One decode step reads every weight page of the map once.
    engine.time_decode(1)?;
    let model_rss_bytes = current_rss_bytes().saturating_sub(rss_before);
    let mut warm = Vec::new();
    if first_state == "warm" {
        warm.push(first_ms);
    }
    for i in 2..=reps {
        progress(&format!("{name}: load {i}/{reps}"));
        drop(engine);
        let t0 = Instant::now();
        engine = Engine::load(files, &s.engine)?;
        warm.push(ms_since(t0));
    }

    let max_ctx = engine.model().config().max_position_embeddings;
    // Engine::time_prompt and time_decode draw ids from above the first
    // 1000 (away from special tokens).
    let vocab = engine.model().vocab_size();
    anyhow::ensure!(
        vocab > 1000,
        "{name} has a vocabulary of {vocab} tokens; the pp/tg tests need more than 1000"
    );
    let mut tests = Vec::new();
    for &p in s.sizes.n_prompt.iter().filter(|&&p| p > 0) {
        anyhow::ensure!(
            p <= max_ctx,
            "-p {p} is longer than {name}'s context of {max_ctx} tokens"
        );
        progress(&format!("{name}: pp{p}"));
        let samples = repeat(s.sizes.warmup, reps, || engine.time_prompt(p))?;
        tests.push(timed(Kind::Pp, p, 0, p, samples));
    }
    for &n in s.sizes.n_gen.iter().filter(|&&n| n > 0) {
        anyhow::ensure!(
            n <= max_ctx,
            "-n {n} is longer than {name}'s context of {max_ctx} tokens"
        );
        progress(&format!("{name}: tg{n}"));
        let samples = repeat(s.sizes.warmup, reps, || engine.time_decode(n))?;
        tests.push(timed(Kind::Tg, 0, n, 0, samples));
    }
    for &p in s.sizes.n_prompt.iter().filter(|&&p| p > 0) {
        progress(&format!("{name}: ttft{p}"));
        let (text, prompt_tokens) = prompt_of_tokens(engine.tokenizer(), p)?;
        let num_ctx = (p + 8).min(max_ctx);
        let req = Request {
            prompt: Prompt::Raw(text),
            options: Options {
                num_predict: Some(1),
                temperature: 0.0,
                seed: Some(0),
                num_ctx,
                ..Options::default()
            },
        };
        let samples = repeat(s.sizes.warmup, reps, || {
            Ok(engine.generate(&req, &mut Quiet)?.metrics.ttft_ms)
        })?;
        tests.push(TestResult {
            test: format!("ttft{p}"),
            kind: Kind::Ttft,
            n_prompt: p,
            n_gen: 1,
            prompt_tokens,
            ms: Stat::of(&samples),
            ts: None,
        });
    }
    let peak_rss_bytes = peak_rss_bytes();
    Ok(ModelResult {
        model: name,
        file: files.weights.display().to_string(),
        file_bytes: engine.file_bytes(),
        params: param_count(engine.model().config()),
        // llama-bench names the backend; layers on a GPU say which one.
        backend: match engine.num_gpu() {
            0 => "CPU".into(),
            n => format!("CUDA ({n} layers on {})", engine.device()),
        },
        isa: engine.isa().name().into(),
        threads: engine.threads(),
        ubatch: s.engine.ubatch,
        load: LoadResult {
            first_ms,
            first_state: first_state.into(),
            page_cache_fraction: cached,
            warm_ms: Stat::of(&warm),
        },
        tests,
        memory: Memory {
            peak_rss_bytes,
            peak_scope: peak_scope.into(),
            model_rss_bytes,
        },
        llama_bench: None,
    })
}

fn timed(
    kind: Kind,
    n_prompt: usize,
    n_gen: usize,
    prompt_tokens: usize,
    ms: Vec<f64>,
) -> TestResult {
    let tokens = n_prompt + n_gen;
    let ts: Vec<f64> = ms.iter().map(|&m| rate(tokens, m)).collect();
    let prefix = match kind {
        Kind::Pp => "pp",
        Kind::Tg => "tg",
        Kind::Ttft => "ttft",
    };
    TestResult {
        test: format!("{prefix}{tokens}"),
        kind,
        n_prompt,
        n_gen,
        prompt_tokens,
        ms: Stat::of(&ms),
        ts: Some(Stat::of(&ts)),
    }
}

/// Measures every model in turn (each engine dropped before the next
/// loads), then runs llama-bench on each GGUF file when `llama` names it.
pub fn run_all(
    models: &[ModelFiles],
    s: &Settings,
    llama: Option<&Path>,
    report: &mut BenchReport,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    for files in models {
        let mut r = bench_model(files, s, progress)
            .with_context(|| format!("benchmarking {}", files.name))?;
        if let Some(bin) = llama {
            progress(&format!("{}: llama-bench", files.name));
            let mut l = llama::run(bin, &files.weights, &s.sizes, r.threads, s);
            l.pair(&r.tests);
            r.llama_bench = Some(l);
        }
        report.models.push(r);
    }
    Ok(())
}

/// What `cargo bench` runs: the models of `selection` (names or paths), or
/// every models.toml model, that are present without fetching; the rest
/// skipped with the reason and the fetch command.
pub fn present_models(
    selection: Option<&[String]>,
    tokenizer: Option<&Path>,
) -> Result<(Vec<ModelFiles>, Vec<Skipped>)> {
    let reg = Registry::builtin()?;
    let names: Vec<String> = match selection {
        Some(s) => s.to_vec(),
        None => reg.models.iter().map(|m| m.name.clone()).collect(),
    };
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for name in names {
        let entry = reg.get(&name);
        if let Some(e) = entry {
            if cached_model(e).is_none() {
                skipped.push(Skipped {
                    model: name.clone(),
                    reason: "not in the cache".into(),
                    fetch: Some(fetch_command(&name)),
                });
                continue;
            }
        }
        match resolve(&name, tokenizer, Fetch::Never) {
            Ok(f) => found.push(f),
            Err(e) => skipped.push(Skipped {
                fetch: entry.map(|_| fetch_command(&name)),
                model: name,
                reason: format!("{e:#}"),
            }),
        }
    }
    Ok((found, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_of_gemma3_270m() {
        // llama-bench reports 268098176 for the 270M GGUF.
        let c = Config {
            vocab_size: 262_144,
            hidden_size: 640,
            intermediate_size: 2048,
            num_hidden_layers: 18,
            num_attention_heads: 4,
            num_key_value_heads: 1,
            head_dim: 256,
            ..Config::tiny()
        };
        assert_eq!(param_count(&c), 268_098_176);
    }

    #[test]
    fn sizes_validate() {
        assert!(Sizes::standard().validate().is_ok());
        let mut s = Sizes::quick();
        s.repetitions = 0;
        assert!(s.validate().unwrap_err().to_string().contains("at least 1"));
        let none = Sizes {
            n_prompt: vec![0],
            n_gen: vec![0],
            ..Sizes::standard()
        };
        assert!(none.validate().is_err());
    }

    #[test]
    fn timed_tests_are_named_like_llama_bench() {
        let t = timed(Kind::Pp, 512, 0, 512, vec![500.0, 250.0]);
        assert_eq!(t.test, "pp512");
        assert_eq!(t.ts.as_ref().unwrap().values, [1024.0, 2048.0]);
        assert_eq!(t.ms.mean, 375.0);
        let g = timed(Kind::Tg, 0, 128, 0, vec![1000.0]);
        assert_eq!(g.test, "tg128");
        assert_eq!(g.ts.unwrap().mean, 128.0);
    }

    #[test]
    fn page_cache_of_a_file_just_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.bin");
        std::fs::write(&p, vec![7u8; 1 << 16]).unwrap();
        if let Some(f) = page_cache_fraction(&p) {
            assert!((0.0..=1.0).contains(&f));
        }
        assert_eq!(page_cache_fraction(&dir.path().join("missing")), None);
    }
}
