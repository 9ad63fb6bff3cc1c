//! Text to token ids and back, through a Hugging Face `tokenizer.json` or
//! a GGUF file's own SentencePiece vocabulary, and the Gemma chat template.

use super::spm::Spm;
use anyhow::{Context, Result};
use std::path::Path;

pub struct Tokenizer {
    inner: Inner,
    pub bos: u32,
    pub eos: u32,
    /// `<end_of_turn>`, which ends a model turn in chat mode.
    pub end_of_turn: Option<u32>,
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            anyhow::bail!(
                "tokenizer file {} not found (pass --tokenizer PATH or run `chimera fetch`)",
                path.display()
            );
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("cannot read tokenizer {}: {e}", path.display()))?;
        Self::from_tokenizer(inner).with_context(|| format!("tokenizer {}", path.display()))
    }

    pub fn from_tokenizer(inner: tokenizers::Tokenizer) -> Result<Self> {
        Self::new(Inner::Hf(Box::new(inner)))
    }

    /// A GGUF file's SentencePiece vocabulary (see [`super::spm`]).
    pub fn from_spm(spm: Spm) -> Result<Self> {
        Self::new(Inner::Spm(Box::new(spm)))
    }

    fn new(inner: Inner) -> Result<Self> {
        let id = |t: &str| inner.token_to_id(t);
        Ok(Self {
            bos: id("<bos>").context("no <bos> token: not a Gemma tokenizer")?,
            eos: id("<eos>").context("no <eos> token: not a Gemma tokenizer")?,
            end_of_turn: id("<end_of_turn>"),
            inner,
        })
    }

    /// The id of a token's text (`▁` for spaces), special tokens included.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokens of the model vocabulary proper (added tokens such as Gemma's
    /// image placeholder may lie beyond the model's embedding table).
    pub fn base_vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Hf(t) => t.get_vocab_size(false),
            Inner::Spm(t) => t.vocab_size(),
        }
    }

    /// Token ids of `text`; with `add_bos` the tokenizer's own template puts
    /// `<bos>` first (exactly as `tokenizer.json` encodes with special tokens).
    /// Special-token text such as `<start_of_turn>` maps to its id.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        match &self.inner {
            Inner::Hf(t) => {
                let enc = t
                    .encode(text, add_bos)
                    .map_err(|e| anyhow::anyhow!("cannot tokenize the prompt: {e}"))?;
                Ok(enc.get_ids().to_vec())
            }
            Inner::Spm(t) => Ok(t.encode(text, add_bos)),
        }
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.inner {
            Inner::Hf(t) => t
                .decode(ids, true)
                .map_err(|e| anyhow::anyhow!("cannot decode tokens: {e}")),
            Inner::Spm(t) => Ok(t.decode(ids, true)),
        }
    }

    /// The text of one token as the vocabulary spells it (for diagnostics).
    pub fn token_text(&self, id: u32) -> String {
        match &self.inner {
            Inner::Hf(t) => t.id_to_token(id).unwrap_or_default(),
            Inner::Spm(t) => t.id_to_token(id).unwrap_or_default().to_string(),
        }
    }

    /// Whether this is a GGUF file's own vocabulary (not a `tokenizer.json`).
    pub fn is_spm(&self) -> bool {
        matches!(self.inner, Inner::Spm(_))
    }

    /// An incremental decoder: yields text only once it forms whole UTF-8
    /// characters, so multi-byte characters split over byte-fallback tokens
    /// print correctly while streaming.
    pub fn stream(&self) -> TextStream {
        TextStream::default()
    }
}

/// The two implementations behind [`Tokenizer`]; they encode and decode
/// Gemma's vocabulary identically.
enum Inner {
    /// A Hugging Face `tokenizer.json` (or the `tokenizers` rebuild of a
    /// GGUF vocabulary, [`super::gguf_tokenizer`]).
    Hf(Box<tokenizers::Tokenizer>),
    /// A GGUF file's SentencePiece vocabulary, run directly.
    Spm(Box<Spm>),
}

impl Inner {
    fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Inner::Hf(t) => t.token_to_id(token),
            Inner::Spm(t) => t.token_to_id(token),
        }
    }
}

/// See [`Tokenizer::stream`]. Gemma's decoder (space marker, byte fallback,
/// fuse) is concatenative, so only the ids since the last complete
/// character need decoding: each step costs O(1), not O(text).
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    pending: Vec<u32>,
}

impl TextStream {
    /// Adds a token; returns the new text it completes (maybe empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.pending.push(id);
        let text = tok.decode(&self.pending)?;
        // A trailing replacement character means a character is still
        // incomplete; a long run of them is garbage and is let through.
        if text.ends_with('\u{FFFD}') && self.pending.len() < 4 {
            return Ok(String::new());
        }
        self.pending.clear();
        Ok(text)
    }
}

/// Gemma's chat template for one user turn, with the optional system text
/// folded into it as Gemma's own template does. `<bos>` is left to the
/// tokenizer.
pub struct ChatPrompt<'a> {
    pub system: Option<&'a str>,
    pub user: &'a str,
}

impl ChatPrompt<'_> {
    pub const USER_PREFIX: &'static str = "<start_of_turn>user\n";
    pub const MODEL_PREFIX: &'static str = "<end_of_turn>\n<start_of_turn>model\n";

    /// The template text before the user's own text.
    pub fn head(&self) -> String {
        match self.system {
            Some(s) if !s.is_empty() => format!("{}{s}\n\n", Self::USER_PREFIX),
            _ => Self::USER_PREFIX.to_string(),
        }
    }

    pub fn render(&self) -> String {
        format!("{}{}{}", self.head(), self.user, Self::MODEL_PREFIX)
    }
}
