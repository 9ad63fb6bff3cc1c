//! The tokenizer a GGUF file carries in its own `tokenizer.ggml.*`
//! metadata, rebuilt as the Hugging Face tokenizer it was converted from,
//! so that a single `.gguf` file is a complete model (as llama.cpp and
//! Ollama treat it).
//!
//! Gemma's GGUFs hold a SentencePiece BPE vocabulary (`tokenizer.ggml.model
//! = llama`): pieces, scores and piece types, but no merge list. Hugging
//! Face's converter (`transformers`' `convert_slow_tokenizer`) turns the same
//! SentencePiece model into a `tokenizers` BPE by deriving merges from the
//! scores; we derive them the same way, in the same order, so the result
//! encodes and decodes exactly as the model's `tokenizer.json` does (the
//! tests compare the two structure by structure and on real text).

use super::gguf::GgufFile;
use super::spm::{CONTROL, GEMMA_SPECIAL, NORMAL, SPACE, UNKNOWN, USER_DEFINED};
use ahash::AHashMap;
use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use std::collections::{HashMap, HashSet};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, SplitDelimiterBehavior, TokenizerBuilder,
};

/// The tokenizer carried by the GGUF file at `path`.
pub fn load_path(path: &std::path::Path) -> Result<super::Tokenizer> {
    load(&GgufFile::open(path)?)
}

/// The tokenizer of a GGUF file, ready for the engine.
pub fn load(file: &GgufFile) -> Result<super::Tokenizer> {
    let inner = build(file.metadata())
        .with_context(|| format!("tokenizer of {}", file.path().display()))?;
    super::Tokenizer::from_tokenizer(inner)
        .with_context(|| format!("tokenizer of {}", file.path().display()))
}

/// Builds the Hugging Face tokenizer from `tokenizer.ggml.*` metadata.
pub fn build(meta: &HashMap<String, Value>) -> Result<tokenizers::Tokenizer> {
    let model = match meta.get("tokenizer.ggml.model") {
        Some(Value::String(m)) => m.as_str(),
        Some(_) => bail!("tokenizer.ggml.model is not a string"),
        None => bail!(
            "the file carries no tokenizer (no tokenizer.ggml.* metadata); pass --tokenizer PATH to a tokenizer.json"
        ),
    };
    if model != "llama" {
        bail!(
            "tokenizer.ggml.model `{model}` is not supported (only SentencePiece `llama` vocabularies, as Gemma's); pass --tokenizer PATH to a tokenizer.json"
        );
    }
    let mut vocab = Vocab::read(meta)?;
    let flag = |key: &str, default: bool| match meta.get(key) {
        Some(v) => v.to_bool().unwrap_or(default),
        None => default,
    };
    let id = |key: &str| -> Option<u32> {
        let v = meta.get(key)?;
        v.to_u32()
            .ok()
            .or_else(|| v.to_i32().ok().and_then(|x| u32::try_from(x).ok()))
            .or_else(|| v.to_u64().ok().and_then(|x| u32::try_from(x).ok()))
            .filter(|&i| (i as usize) < vocab.pieces.len())
    };
    let bos = id("tokenizer.ggml.bos_token_id");
    let eos = id("tokenizer.ggml.eos_token_id");
    let unk = id("tokenizer.ggml.unknown_token_id");
    let pad = id("tokenizer.ggml.padding_token_id");
    let add_bos = flag("tokenizer.ggml.add_bos_token", true);
    let add_eos = flag("tokenizer.ggml.add_eos_token", false);
    // llama.cpp defaults to a space prefix for SentencePiece files that do
    // not say; every Gemma converter writes `false`, and a Gemma tokenizer
    // never adds one, so an absent key means Gemma's behaviour here.
    let add_space_prefix = flag("tokenizer.ggml.add_space_prefix", false);

    let merges = vocab.merges();
    let mut bpe = BPE::builder()
        .vocab_and_merges(std::mem::take(&mut vocab.ids), merges)
        .fuse_unk(true)
        .byte_fallback(true);
    if let Some(u) = unk {
        bpe = bpe.unk_token(vocab.pieces[u as usize].clone());
    }
    let bpe = bpe
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the BPE model: {e}"))?;

    // Gemma's tokenizer.json: spaces become the marker before the model sees
    // the text; the Split on " " that follows is what the converter writes
    // (a no-op once spaces are gone, kept for identical pipelines).
    let replace = Replace::new(" ", SPACE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let normalizer: NormalizerWrapper = if add_space_prefix {
        NormalizerSequence::new(vec![Prepend::new(SPACE.into()).into(), replace.into()]).into()
    } else {
        replace.into()
    };
    let pre_tokenizer: PreTokenizerWrapper = Split::new(
        SplitPattern::String(" ".into()),
        SplitDelimiterBehavior::MergedWithPrevious,
        false,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .into();
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPACE, " ")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    let decoder: DecoderWrapper = DecoderSequence::new(decoders).into();
    let post = template(
        &vocab,
        add_bos.then_some(bos).flatten(),
        add_eos.then_some(eos).flatten(),
    )?;

    let mut tok: tokenizers::Tokenizer = TokenizerBuilder::<
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(bpe.into())
    .with_normalizer(Some(normalizer))
    .with_pre_tokenizer(Some(pre_tokenizer))
    .with_post_processor(Some(post))
    .with_decoder(Some(decoder))
    .build()
    .map_err(|e| anyhow::anyhow!("cannot assemble the tokenizer: {e}"))?
    .into();

    // Control and user-defined pieces are matched whole in the raw text
    // before the model runs, as the converter's added tokens are. One call:
    // each call rebuilds the matcher over all of them.
    let special_ids: HashSet<u32> = [bos, eos, unk, pad].into_iter().flatten().collect();
    let added: Vec<AddedToken> = vocab
        .types
        .iter()
        .enumerate()
        .filter(|(_, &t)| matches!(t, UNKNOWN | CONTROL | USER_DEFINED))
        .map(|(i, _)| {
            let piece = &vocab.pieces[i];
            let special =
                special_ids.contains(&(i as u32)) || GEMMA_SPECIAL.contains(&piece.as_str());
            AddedToken::from(piece.clone(), special).normalized(false)
        })
        .collect();
    tok.add_tokens(added)
        .map_err(|e| anyhow::anyhow!("cannot add the control tokens: {e}"))?;
    Ok(tok)
}

/// `<bos> $A` (and for pairs `<bos> $A <bos> $B`), as Hugging Face writes
/// the template of a SentencePiece tokenizer that adds BOS and not EOS.
fn template(vocab: &Vocab, bos: Option<u32>, eos: Option<u32>) -> Result<PostProcessorWrapper> {
    let name = |id: u32| vocab.pieces[id as usize].clone();
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Vec::new();
    if let Some(b) = bos {
        single.push(format!("{}:0", name(b)));
        specials.push((name(b), b));
    }
    single.push("$A:0".to_string());
    if let Some(e) = eos {
        single.push(format!("{}:0", name(e)));
        specials.push((name(e), e));
    }
    pair.extend(single.iter().cloned());
    if let Some(b) = bos {
        pair.push(format!("{}:1", name(b)));
    }
    pair.push("$B:1".to_string());
    if let Some(e) = eos {
        pair.push(format!("{}:1", name(e)));
    }
    specials.dedup();
    let t = TemplateProcessing::builder()
        .try_single(single.join(" "))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .try_pair(pair.join(" "))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .special_tokens(specials)
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(t.into())
}

/// The SentencePiece vocabulary as Hugging Face's converter saw it.
struct Vocab {
    pieces: Vec<String>,
    /// The piece scores of the SentencePiece model: llama.cpp's converter
    /// overwrites those of control and user-defined pieces with -1000, but
    /// in the model every piece other than a normal one scores 0, and the
    /// merge order depends on it.
    scores: Vec<f32>,
    types: Vec<i32>,
    /// First id of each piece (what the BPE model is built from).
    ids: AHashMap<String, u32>,
}

/// One merge before it is spelled out: ids of its halves, and its sort key.
struct Merge {
    left: u32,
    right: u32,
    score: f32,
    left_chars: u32,
    right_chars: u32,
}

impl Vocab {
    fn read(meta: &HashMap<String, Value>) -> Result<Self> {
        let array = |key: &str| -> Result<&Vec<Value>> {
            meta.get(key)
                .with_context(|| format!("missing {key} in the GGUF metadata"))?
                .to_vec()
                .map_err(|_| anyhow::anyhow!("{key} is not an array"))
        };
        let tokens = array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let types: Vec<i32> = match meta.get("tokenizer.ggml.token_type") {
            Some(_) => array("tokenizer.ggml.token_type")?
                .iter()
                .map(|v| v.to_i32().map_err(|_| anyhow::anyhow!("bad token type")))
                .collect::<Result<_>>()?,
            None => vec![NORMAL; n],
        };
        let raw_scores: Vec<f32> = match meta.get("tokenizer.ggml.scores") {
            Some(_) => array("tokenizer.ggml.scores")?
                .iter()
                .map(|v| v.to_f32().map_err(|_| anyhow::anyhow!("bad token score")))
                .collect::<Result<_>>()?,
            None => bail!(
                "missing tokenizer.ggml.scores: a SentencePiece BPE vocabulary needs them to order its merges"
            ),
        };
        anyhow::ensure!(
            types.len() == n && raw_scores.len() == n,
            "{n} tokens but {} types and {} scores",
            types.len(),
            raw_scores.len()
        );
        let mut pieces = Vec::with_capacity(n);
        let mut scores = Vec::with_capacity(n);
        for (i, v) in tokens.iter().enumerate() {
            let s = v
                .to_string()
                .map_err(|_| anyhow::anyhow!("token {i} is not a string"))?;
            // llama.cpp's converter writes user-defined pieces with real
            // spaces ("pre-normalized"); the model and tokenizer.json spell
            // them with the marker, as every other piece.
            let piece = if types[i] == USER_DEFINED {
                s.replace(' ', SPACE)
            } else {
                s.clone()
            };
            pieces.push(piece);
            let score = if types[i] == NORMAL {
                raw_scores[i]
            } else {
                0.0
            };
            anyhow::ensure!(!score.is_nan(), "token {i} has a NaN score");
            scores.push(score);
        }
        let mut ids = AHashMap::with_capacity(n);
        for (i, p) in pieces.iter().enumerate() {
            ids.entry(p.clone()).or_insert(i as u32);
        }
        Ok(Self {
            pieces,
            scores,
            types,
            ids,
        })
    }

    /// The merge list of Hugging Face's SentencePiece converter
    /// (`generate_merges`): every split of every piece into two pieces of
    /// the vocabulary, each piece's splits ordered by the ids of their
    /// halves, then all of them stably sorted by the piece's score, the
    /// left half's length and the right half's length, highest first.
    /// The BPE model then merges the best-ranked adjacent pair first, which
    /// is SentencePiece's "highest-scoring concatenation" rule.
    ///
    /// Pieces are searched on every core (this runs at each model load).
    fn merges(&self) -> Vec<(String, String)> {
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let per = self.pieces.len().div_ceil(threads).max(1);
        let mut merges: Vec<Merge> = std::thread::scope(|s| {
            let parts: Vec<_> = (0..self.pieces.len())
                .step_by(per)
                .map(|start| {
                    s.spawn(move || self.splits(start..(start + per).min(self.pieces.len())))
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|h| h.join().expect("merge search panicked"))
                .collect()
        });
        // Python's sort with reverse=True keeps equal keys in their original
        // order, as a stable sort on the reversed comparison does. Scores
        // compare as floats (-0.0 equals 0.0, as in Python).
        merges.sort_by(|a, b| {
            b.score
                .partial_cmp(&a.score)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(b.left_chars.cmp(&a.left_chars))
                .then(b.right_chars.cmp(&a.right_chars))
        });
        let per = merges.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let parts: Vec<_> = merges
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|m| {
                                (
                                    self.pieces[m.left as usize].clone(),
                                    self.pieces[m.right as usize].clone(),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|h| h.join().expect("merge spelling panicked"))
                .collect()
        })
    }

    /// The splits of pieces `range` into two vocabulary pieces, in the
    /// converter's order.
    fn splits(&self, range: std::ops::Range<usize>) -> Vec<Merge> {
        let mut out = Vec::with_capacity(range.len() * 2);
        let mut local: Vec<Merge> = Vec::new();
        for i in range {
            let piece = &self.pieces[i];
            // Duplicates only count once, as in the converter's dict.
            if self.ids[piece] != i as u32 {
                continue;
            }
            let chars = piece.chars().count() as u32;
            for (left_chars, (k, _)) in (1..).zip(piece.char_indices().skip(1)) {
                let (l, r) = piece.split_at(k);
                let Some(&left) = self.ids.get(l) else {
                    continue;
                };
                if let Some(&right) = self.ids.get(r) {
                    local.push(Merge {
                        left,
                        right,
                        score: self.scores[i],
                        left_chars,
                        right_chars: chars - left_chars,
                    });
                }
            }
            local.sort_by_key(|m| (m.left, m.right));
            out.append(&mut local);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::spm::tests::meta;

    /// A toy SentencePiece vocabulary: specials, two bytes, letters and
    /// merged pieces scored by merge order.
    fn toy() -> HashMap<String, Value> {
        let mut p: Vec<(&str, f32, i32)> = vec![
            ("<pad>", -1000.0, CONTROL),
            ("<eos>", -1000.0, CONTROL),
            ("<bos>", -1000.0, CONTROL),
            ("<unk>", -1000.0, CONTROL),
            ("<start_of_turn>", -1000.0, CONTROL),
            ("  ", -1000.0, USER_DEFINED),
            ("<0x41>", 0.0, 6),
            ("<0xC3>", 0.0, 6),
            ("<0xA9>", 0.0, 6),
        ];
        p.extend([
            ("\u{2581}t", -0.0, NORMAL),
            ("he", -1.0, NORMAL),
            ("\u{2581}the", -2.0, NORMAL),
            ("ab", -3.0, NORMAL),
            ("aba", -4.0, NORMAL),
            ("ba", -5.0, NORMAL),
            ("\u{2581}", -6.0, NORMAL),
            ("t", -7.0, NORMAL),
            ("h", -8.0, NORMAL),
            ("e", -9.0, NORMAL),
            ("a", -10.0, NORMAL),
            ("b", -11.0, NORMAL),
        ]);
        meta(&p)
    }

    #[test]
    fn merges_follow_the_scores_of_the_merged_pieces() {
        let tok = build(&toy()).unwrap();
        let ids = |s: &str| tok.encode(s, false).unwrap().get_ids().to_vec();
        let id = |s: &str| tok.token_to_id(s).unwrap();
        assert_eq!(ids(" the"), vec![id("\u{2581}the")]);
        assert_eq!(ids("aba"), vec![id("aba")]);
        // Unknown characters fall back to their bytes; a character without
        // byte pieces is <unk>.
        assert_eq!(ids("A"), vec![id("<0x41>")]);
        assert_eq!(ids("é"), vec![id("<0xC3>"), id("<0xA9>")]);
        assert_eq!(tok.decode(&ids("A é the"), true).unwrap(), "A é the");
        // Control pieces are matched whole; BOS comes first with special
        // tokens on, and special tokens are left out when decoding.
        let with_bos = tok.encode("<start_of_turn>the", true).unwrap();
        assert_eq!(with_bos.get_ids()[..2], [2, id("<start_of_turn>")]);
        assert_eq!(tok.decode(with_bos.get_ids(), true).unwrap(), "the");
    }

    #[test]
    fn user_defined_spaces_are_spelled_with_the_marker() {
        let tok = build(&toy()).unwrap();
        assert_eq!(tok.token_to_id("\u{2581}\u{2581}"), Some(5));
        assert_eq!(tok.token_to_id("  "), None);
    }

    #[test]
    fn missing_or_foreign_tokenizers_are_clear_errors() {
        let err = build(&HashMap::new()).unwrap_err().to_string();
        assert!(err.contains("no tokenizer"), "{err}");
        let mut m = toy();
        m.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
        let err = build(&m).unwrap_err().to_string();
        assert!(err.contains("`gpt2` is not supported"), "{err}");
    }
}
