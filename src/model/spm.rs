//! The SentencePiece tokenizer a GGUF file carries in its `tokenizer.ggml.*`
//! metadata, run directly from the pieces and scores: no Hugging Face
//! pipeline to assemble, no merge list to derive, so it is ready a few
//! milliseconds after the file's header is read (the `tokenizers` rebuild
//! in [`super::gguf_tokenizer`] takes half a second, `tokenizer.json` most
//! of a second).
//!
//! It encodes and decodes exactly as Gemma's `tokenizer.json` does (the
//! tests compare the two on real and adversarial text):
//!
//! 1. Control, user-defined and unknown pieces (`<start_of_turn>`, runs of
//!    newlines, HTML tags, ...) are cut out of the raw text first, leftmost
//!    match first and the longest match at that position.
//! 2. In the text between them spaces become `▁` (no dummy prefix for
//!    Gemma), and each character becomes its piece, or its bytes' `<0xXX>`
//!    pieces when it has none.
//! 3. Adjacent pieces are merged, best pair first, while some pair spells a
//!    piece. "Best" is the order of the merge list Hugging Face's converter
//!    derives from the SentencePiece scores: the merged piece's score, then
//!    the longer left part, then the longer right part, then the lower
//!    piece id; equal pairs merge leftmost first. That is SentencePiece's
//!    "highest-scoring concatenation" rule with its ties broken the way
//!    `tokenizer.json` breaks them; the rank is computed per pair instead
//!    of being looked up in 514,906 merges.
//!
//! Decoding: `▁` becomes a space, runs of byte pieces become their UTF-8
//! text (one U+FFFD per byte when a run is not valid UTF-8), special pieces
//! are left out when asked.

use super::gguf::GgufFile;
use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// SentencePiece's word-boundary marker, which stands for a space.
pub(crate) const SPACE: &str = "\u{2581}";

/// Piece types as llama.cpp's converter writes them
/// (`tokenizer.ggml.token_type`).
pub(crate) const NORMAL: i32 = 1;
pub(crate) const UNKNOWN: i32 = 2;
pub(crate) const CONTROL: i32 = 3;
pub(crate) const USER_DEFINED: i32 = 4;

/// Tokens Gemma's `tokenizer.json` marks special (left out when decoding
/// with special tokens skipped) besides the BOS/EOS/UNK/PAD ids the
/// metadata names. GGUF piece types do not carry this distinction: Gemma's
/// `<unusedN>` and `<mask>` are control pieces too, yet not special.
pub(crate) const GEMMA_SPECIAL: [&str; 4] = [
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
];

/// Piece flags.
/// Matched whole in the raw text before anything else (control,
/// user-defined and unknown pieces).
const ADDED: u8 = 1;
/// Left out when decoding with special tokens skipped.
const SPECIAL: u8 = 2;
/// A later copy of an earlier piece's text: never produced, and (as in
/// `tokenizers`, whose vocabulary is a map) it has no text of its own.
const SHADOWED: u8 = 4;

/// A SentencePiece vocabulary, ready to encode and decode.
pub struct Spm {
    /// Every piece's text, back to back; piece `i` is
    /// `arena[offsets[i]..offsets[i + 1]]`.
    arena: String,
    offsets: Vec<u32>,
    /// The scores merges are ranked by: the model's for normal pieces, 0
    /// for the others (llama.cpp's converter writes -1000 for control and
    /// user-defined pieces, the SentencePiece model and `tokenizer.json`'s
    /// merge order have 0).
    scores: Vec<f32>,
    flags: Vec<u8>,
    table: PieceTable,
    /// Lengths in bytes of the added pieces, longest first, by first
    /// character: the candidates tried at each position of the raw text.
    added_ascii: Vec<Box<[u16]>>,
    added_other: ahash::AHashMap<char, Box<[u16]>>,
    /// `<0xXX>` piece of each byte, `NONE` where the vocabulary lacks it.
    bytes: [u32; 256],
    unk: Option<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    /// Pieces with text of their own (all but the shadowed copies).
    unique: usize,
}

const NONE: u32 = u32::MAX;

impl Spm {
    /// Reads the vocabulary from `tokenizer.ggml.*` metadata.
    pub fn from_metadata(meta: &HashMap<String, Value>) -> Result<Self> {
        match meta.get("tokenizer.ggml.model") {
            Some(Value::String(m)) if m == "llama" => {}
            Some(Value::String(m)) => bail!(
                "tokenizer.ggml.model `{m}` is not supported (only SentencePiece `llama` vocabularies, as Gemma's); pass --tokenizer PATH to a tokenizer.json"
            ),
            Some(_) => bail!("tokenizer.ggml.model is not a string"),
            None => bail!(
                "the file carries no tokenizer (no tokenizer.ggml.* metadata); pass --tokenizer PATH to a tokenizer.json"
            ),
        }
        let array = |key: &str| -> Result<&Vec<Value>> {
            meta.get(key)
                .with_context(|| format!("missing {key} in the GGUF metadata"))?
                .to_vec()
                .map_err(|_| anyhow::anyhow!("{key} is not an array"))
        };
        let tokens = array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        anyhow::ensure!(
            n < (u32::MAX / 2) as usize,
            "{n} tokens: too many for a vocabulary"
        );
        let types: Vec<i32> = match meta.get("tokenizer.ggml.token_type") {
            Some(_) => array("tokenizer.ggml.token_type")?
                .iter()
                .map(|v| v.to_i32().map_err(|_| anyhow::anyhow!("bad token type")))
                .collect::<Result<_>>()?,
            None => vec![NORMAL; n],
        };
        let raw_scores = match meta.get("tokenizer.ggml.scores") {
            Some(_) => array("tokenizer.ggml.scores")?,
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

        let mut arena = String::with_capacity(n * 8);
        let mut offsets = Vec::with_capacity(n + 1);
        let mut scores = Vec::with_capacity(n);
        offsets.push(0u32);
        for (i, (v, s)) in tokens.iter().zip(raw_scores).enumerate() {
            let piece = v
                .to_string()
                .map_err(|_| anyhow::anyhow!("token {i} is not a string"))?;
            // llama.cpp's converter writes user-defined pieces with real
            // spaces ("pre-normalized"); the model and tokenizer.json spell
            // them with the marker, as every other piece.
            if types[i] == USER_DEFINED && piece.contains(' ') {
                arena.push_str(&piece.replace(' ', SPACE));
            } else {
                arena.push_str(piece);
            }
            anyhow::ensure!(
                arena.len() < u32::MAX as usize,
                "the vocabulary's text is too large"
            );
            offsets.push(arena.len() as u32);
            let score = if types[i] == NORMAL {
                s.to_f32().map_err(|_| anyhow::anyhow!("bad token score"))?
            } else {
                0.0
            };
            anyhow::ensure!(!score.is_nan(), "token {i} has a NaN score");
            scores.push(score);
        }

        let mut flags = vec![0u8; n];
        let table = PieceTable::build(&arena, &offsets, &mut flags);
        let mut spm = Self {
            arena,
            offsets,
            scores,
            flags,
            table,
            added_ascii: Vec::new(),
            added_other: ahash::AHashMap::new(),
            bytes: [NONE; 256],
            unk: None,
            bos: None,
            eos: None,
            add_bos: false,
            add_eos: false,
            add_space_prefix: false,
            unique: 0,
        };
        spm.unique = spm.flags.iter().filter(|&&f| f & SHADOWED == 0).count();

        let id = |key: &str| -> Option<u32> {
            let v = meta.get(key)?;
            v.to_u32()
                .ok()
                .or_else(|| v.to_i32().ok().and_then(|x| u32::try_from(x).ok()))
                .or_else(|| v.to_u64().ok().and_then(|x| u32::try_from(x).ok()))
                .filter(|&i| (i as usize) < n)
        };
        let flag = |key: &str, default: bool| match meta.get(key) {
            Some(v) => v.to_bool().unwrap_or(default),
            None => default,
        };
        let unk = id("tokenizer.ggml.unknown_token_id");
        let bos = id("tokenizer.ggml.bos_token_id");
        let eos = id("tokenizer.ggml.eos_token_id");
        let pad = id("tokenizer.ggml.padding_token_id");
        // `<unk>` as the BPE model resolves its name (the first piece of
        // that text); BOS and EOS as the template writes them (the ids).
        spm.unk = unk.and_then(|i| spm.token_to_id(spm.piece(i)));
        spm.bos = bos;
        spm.eos = eos;
        spm.add_bos = flag("tokenizer.ggml.add_bos_token", true);
        spm.add_eos = flag("tokenizer.ggml.add_eos_token", false);
        // llama.cpp defaults to a space prefix for SentencePiece files that
        // do not say; every Gemma converter writes `false`, and a Gemma
        // tokenizer never adds one, so an absent key means Gemma's
        // behaviour here (as in the tokenizers rebuild).
        spm.add_space_prefix = flag("tokenizer.ggml.add_space_prefix", false);

        // Control, user-defined and unknown pieces are matched whole; a
        // copy of an earlier piece's text stands for that piece.
        let specials = [bos, eos, unk, pad];
        let mut ascii: Vec<Vec<u16>> = vec![Vec::new(); 128];
        let mut other: ahash::AHashMap<char, Vec<u16>> = ahash::AHashMap::new();
        for (i, &t) in types.iter().enumerate() {
            if !matches!(t, UNKNOWN | CONTROL | USER_DEFINED) {
                continue;
            }
            let piece = spm.piece(i as u32);
            let Some(c) = piece.chars().next() else {
                continue;
            };
            let Ok(len) = u16::try_from(piece.len()) else {
                continue;
            };
            let canon = spm.table.get(&spm.arena, &spm.offsets, piece.as_bytes());
            let canon = canon.expect("every piece is in the table") as usize;
            let special = specials.contains(&Some(i as u32)) || GEMMA_SPECIAL.contains(&piece);
            spm.flags[canon] |= ADDED | if special { SPECIAL } else { 0 };
            let lens = if c.is_ascii() {
                &mut ascii[c as usize]
            } else {
                other.entry(c).or_default()
            };
            lens.push(len);
        }
        let finish = |mut v: Vec<u16>| -> Box<[u16]> {
            v.sort_unstable_by(|a, b| b.cmp(a));
            v.dedup();
            v.into_boxed_slice()
        };
        spm.added_ascii = ascii.into_iter().map(finish).collect();
        spm.added_other = other.into_iter().map(|(c, v)| (c, finish(v))).collect();

        for b in 0..=255u8 {
            let name = format!("<{b:#04X}>");
            if let Some(id) = spm.token_to_id(&name) {
                spm.bytes[b as usize] = id;
            }
        }
        Ok(spm)
    }

    /// Pieces in the vocabulary (ids run from 0 to `len() - 1`).
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Pieces with text of their own: the vocabulary size `tokenizers`
    /// reports (a copy of an earlier piece's text does not count).
    pub fn vocab_size(&self) -> usize {
        self.unique
    }

    fn piece(&self, id: u32) -> &str {
        let i = id as usize;
        &self.arena[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The id of a piece's text (the first piece spelled so).
    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.table
            .get(&self.arena, &self.offsets, text.as_bytes())
            .map(|i| i as u32)
    }

    /// A piece's text as the vocabulary spells it (`▁` for spaces); `None`
    /// past the vocabulary and for shadowed copies.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        let f = *self.flags.get(id as usize)?;
        (f & SHADOWED == 0).then(|| self.piece(id))
    }

    /// Token ids of `text`; with `add_special` BOS first (and EOS last) as
    /// the metadata asks.
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let mut work = Work::default();
        let mut start = 0;
        let mut skip_to = 0;
        for (i, c) in text.char_indices() {
            if i < skip_to {
                continue;
            }
            let lens: &[u16] = if c.is_ascii() {
                &self.added_ascii[c as usize]
            } else {
                match self.added_other.get(&c) {
                    Some(l) => l,
                    None => continue,
                }
            };
            let rest = &text.as_bytes()[i..];
            let found = lens.iter().find_map(|&len| {
                let cand = rest.get(..len as usize)?;
                let id = self.table.get(&self.arena, &self.offsets, cand)?;
                (self.flags[id] & ADDED != 0).then_some((id as u32, len as usize))
            });
            if let Some((id, len)) = found {
                self.encode_segment(&text[start..i], &mut out, &mut work);
                out.push(id);
                start = i + len;
                skip_to = start;
            }
        }
        self.encode_segment(&text[start..], &mut out, &mut work);
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Text between added pieces: spaces to the marker, characters to
    /// pieces (or bytes), then merges.
    fn encode_segment(&self, seg: &str, out: &mut Vec<u32>, w: &mut Work) {
        if seg.is_empty() {
            return;
        }
        w.text.clear();
        if self.add_space_prefix {
            w.text.push_str(SPACE);
        }
        for (k, part) in seg.split(' ').enumerate() {
            if k > 0 {
                w.text.push_str(SPACE);
            }
            w.text.push_str(part);
        }

        // One symbol per character, as `tokenizers`' BPE builds its word
        // (including its unknown-character handling, where a fused `<unk>`
        // waits for the next known character).
        w.syms.clear();
        let mut unk: Option<u32> = None;
        let text = std::mem::take(&mut w.text);
        for (i, c) in text.char_indices() {
            let s = &text.as_bytes()[i..i + c.len_utf8()];
            if let Some(id) = self.table.get(&self.arena, &self.offsets, s) {
                if let Some(u) = unk.take() {
                    w.push_sym(u);
                }
                w.push_sym(id as u32);
                continue;
            }
            if s.iter().all(|&b| self.bytes[b as usize] != NONE) {
                for &b in s {
                    w.push_sym(self.bytes[b as usize]);
                }
                continue;
            }
            if let Some(u) = self.unk {
                unk = Some(u);
            }
        }
        if let Some(u) = unk {
            w.push_sym(u);
        }
        w.text = text;

        w.heap.clear();
        for pos in 0..w.syms.len().saturating_sub(1) {
            self.push_pair(w, pos, pos + 1);
        }
        while let Some(m) = w.heap.pop() {
            let l = m.pos as usize;
            let left = w.syms[l];
            if !left.live || left.next < 0 {
                continue;
            }
            let r = left.next as usize;
            // A stale entry: one side has merged since.
            if left.id != m.left || w.syms[r].id != m.right {
                continue;
            }
            let next = w.syms[r].next;
            w.syms[r].live = false;
            w.syms[l].id = m.piece;
            w.syms[l].next = next;
            if next >= 0 {
                w.syms[next as usize].prev = l as i32;
            }
            if left.prev >= 0 {
                self.push_pair(w, left.prev as usize, l);
            }
            if next >= 0 {
                self.push_pair(w, l, next as usize);
            }
        }
        out.extend(w.syms.iter().filter(|s| s.live).map(|s| s.id));
    }

    /// Queues the merge of symbols `l` and `r` if their texts together
    /// spell a piece.
    fn push_pair(&self, w: &mut Work, l: usize, r: usize) {
        let (a, b) = (w.syms[l].id, w.syms[r].id);
        let (pa, pb) = (self.piece(a), self.piece(b));
        w.pair.clear();
        w.pair.extend_from_slice(pa.as_bytes());
        w.pair.extend_from_slice(pb.as_bytes());
        let Some(p) = self.table.get(&self.arena, &self.offsets, &w.pair) else {
            return;
        };
        w.heap.push(Merge {
            score: order_key(self.scores[p]),
            left_chars: pa.chars().count() as u32,
            right_chars: pb.chars().count() as u32,
            piece: p as u32,
            pos: l as u32,
            left: a,
            right: b,
        });
    }

    /// Text of `ids`: `▁` as spaces, byte pieces as the UTF-8 they spell;
    /// with `skip_special` special pieces are left out. Ids past the
    /// vocabulary are ignored.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut out = String::with_capacity(ids.len() * 4);
        let mut bytes: Vec<u8> = Vec::new();
        for &id in ids {
            let Some(&f) = self.flags.get(id as usize) else {
                continue;
            };
            if f & SHADOWED != 0 || (skip_special && f & SPECIAL != 0) {
                continue;
            }
            let piece = self.piece(id);
            if let Some(b) = byte_piece(piece) {
                bytes.push(b);
                continue;
            }
            flush_bytes(&mut bytes, &mut out);
            for (k, part) in piece.split(SPACE).enumerate() {
                if k > 0 {
                    out.push(' ');
                }
                out.push_str(part);
            }
        }
        flush_bytes(&mut bytes, &mut out);
        if self.add_space_prefix && out.starts_with(' ') {
            out.remove(0);
        }
        out
    }
}

/// The byte a `<0xXX>` piece stands for, read as `tokenizers`' byte
/// fallback decoder reads it.
fn byte_piece(piece: &str) -> Option<u8> {
    if piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>') {
        u8::from_str_radix(&piece[3..5], 16).ok()
    } else {
        None
    }
}

/// A run of byte pieces: its text if it is UTF-8, else one replacement
/// character per byte (as `tokenizers` decodes it).
fn flush_bytes(bytes: &mut Vec<u8>, out: &mut String) {
    if bytes.is_empty() {
        return;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => out.extend(std::iter::repeat_n('\u{FFFD}', bytes.len())),
    }
    bytes.clear();
}

/// `f32` to an integer of the same order (-0.0 equal to 0.0, as the
/// converter's Python sort compares them).
fn order_key(s: f32) -> u32 {
    let s = if s == 0.0 { 0.0f32 } else { s };
    let bits = s.to_bits();
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// Scratch space of one encode call, reused across its segments.
#[derive(Default)]
struct Work {
    text: String,
    syms: Vec<Sym>,
    heap: BinaryHeap<Merge>,
    pair: Vec<u8>,
}

impl Work {
    fn push_sym(&mut self, id: u32) {
        let i = self.syms.len() as i32;
        if let Some(last) = self.syms.last_mut() {
            last.next = i;
        }
        self.syms.push(Sym {
            id,
            prev: i - 1,
            next: -1,
            live: true,
        });
    }
}

#[derive(Clone, Copy)]
struct Sym {
    id: u32,
    prev: i32,
    next: i32,
    live: bool,
}

/// A candidate merge; the heap pops the best first.
struct Merge {
    score: u32,
    left_chars: u32,
    right_chars: u32,
    piece: u32,
    pos: u32,
    left: u32,
    right: u32,
}

impl Merge {
    /// Higher is better: the merged piece's score, the longer left part,
    /// the longer right part (the converter's sort keys), then the lower
    /// piece id (its stable sort keeps vocabulary order), then the
    /// leftmost position.
    fn key(
        &self,
    ) -> (
        u32,
        u32,
        u32,
        std::cmp::Reverse<u32>,
        std::cmp::Reverse<u32>,
    ) {
        (
            self.score,
            self.left_chars,
            self.right_chars,
            std::cmp::Reverse(self.piece),
            std::cmp::Reverse(self.pos),
        )
    }
}

impl Ord for Merge {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Merge {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Merge {}

/// Piece text to id: open addressing over the arena, no string per piece.
/// Each slot holds 32 bits of the text's hash and the id + 1 (0 = empty).
struct PieceTable {
    slots: Vec<(u32, u32)>,
    mask: usize,
    hasher: ahash::RandomState,
}

impl PieceTable {
    /// Every piece's first occurrence; later copies of the same text are
    /// flagged [`SHADOWED`].
    fn build(arena: &str, offsets: &[u32], flags: &mut [u8]) -> Self {
        let n = offsets.len() - 1;
        let size = (n * 2).next_power_of_two().max(16);
        let mut t = Self {
            slots: vec![(0, 0); size],
            mask: size - 1,
            hasher: ahash::RandomState::with_seeds(
                0x243f_6a88_85a3_08d3,
                0x1319_8a2e_0370_7344,
                0xa409_3822_299f_31d0,
                0x082e_fa98_ec4e_6c89,
            ),
        };
        let bytes = arena.as_bytes();
        for (i, flag) in flags.iter_mut().enumerate() {
            let s = &bytes[offsets[i] as usize..offsets[i + 1] as usize];
            let h = t.hasher.hash_one(s);
            let tag = (h >> 32) as u32;
            let mut k = h as usize & t.mask;
            loop {
                let (st, sid) = t.slots[k];
                if sid == 0 {
                    t.slots[k] = (tag, i as u32 + 1);
                    break;
                }
                let j = sid as usize - 1;
                if st == tag && &bytes[offsets[j] as usize..offsets[j + 1] as usize] == s {
                    *flag |= SHADOWED;
                    break;
                }
                k = (k + 1) & t.mask;
            }
        }
        t
    }

    fn get(&self, arena: &str, offsets: &[u32], s: &[u8]) -> Option<usize> {
        let h = self.hasher.hash_one(s);
        let tag = (h >> 32) as u32;
        let mut k = h as usize & self.mask;
        let bytes = arena.as_bytes();
        loop {
            let (st, sid) = self.slots[k];
            if sid == 0 {
                return None;
            }
            let j = sid as usize - 1;
            if st == tag && &bytes[offsets[j] as usize..offsets[j + 1] as usize] == s {
                return Some(j);
            }
            k = (k + 1) & self.mask;
        }
    }
}

/// The tokenizer carried by the GGUF file at `path`.
pub fn load_path(path: &std::path::Path) -> Result<super::Tokenizer> {
    load(&GgufFile::open(path)?)
}

/// The tokenizer of an open GGUF file, ready for the engine.
pub fn load(file: &GgufFile) -> Result<super::Tokenizer> {
    let spm = Spm::from_metadata(file.metadata())
        .with_context(|| format!("tokenizer of {}", file.path().display()))?;
    super::Tokenizer::from_spm(spm)
        .with_context(|| format!("tokenizer of {}", file.path().display()))
}

/// Whether GGUF metadata carries a tokenizer at all.
pub fn carries_tokenizer(meta: &HashMap<String, Value>) -> bool {
    meta.contains_key("tokenizer.ggml.model")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// GGUF tokenizer metadata for a toy vocabulary of (piece, score, type).
    pub(crate) fn meta(pieces: &[(&str, f32, i32)]) -> HashMap<String, Value> {
        let mut m = HashMap::new();
        m.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
        m.insert(
            "tokenizer.ggml.tokens".into(),
            Value::Array(pieces.iter().map(|p| Value::String(p.0.into())).collect()),
        );
        m.insert(
            "tokenizer.ggml.scores".into(),
            Value::Array(pieces.iter().map(|p| Value::F32(p.1)).collect()),
        );
        m.insert(
            "tokenizer.ggml.token_type".into(),
            Value::Array(pieces.iter().map(|p| Value::I32(p.2)).collect()),
        );
        m.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(2));
        m.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(1));
        m.insert("tokenizer.ggml.unknown_token_id".into(), Value::U32(3));
        m.insert("tokenizer.ggml.padding_token_id".into(), Value::U32(0));
        m.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(true));
        m
    }

    /// A toy vocabulary: specials, a few bytes, letters and merged pieces,
    /// with equal scores where the tie rules decide.
    fn toy() -> Vec<(&'static str, f32, i32)> {
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
            ("<start", -1000.0, USER_DEFINED),
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
            ("x", -12.0, NORMAL),
            ("y", -12.0, NORMAL),
            ("xy", -20.0, NORMAL),
            ("yx", -20.0, NORMAL),
            ("xyx", -20.0, NORMAL),
            ("x", -30.0, NORMAL),
        ]);
        p
    }

    fn both() -> (Spm, tokenizers::Tokenizer) {
        let m = meta(&toy());
        (
            Spm::from_metadata(&m).unwrap(),
            super::super::gguf_tokenizer::build(&m).unwrap(),
        )
    }

    #[test]
    fn encodes_and_decodes_as_the_tokenizers_rebuild() {
        let (spm, hf) = both();
        for text in [
            "",
            " ",
            " the",
            "the the  the",
            "aba",
            "ababab abab",
            "xyx",
            "xyxyx yxy xxyy",
            "A é the",
            "ÿ",
            "<start_of_turn>the",
            "<start<start_of_turn><start_of",
            "▁▁ ▁  ",
            "zzz q",
        ] {
            for special in [true, false] {
                let want = hf.encode(text, special).unwrap().get_ids().to_vec();
                assert_eq!(spm.encode(text, special), want, "{text:?} {special}");
            }
            let ids = spm.encode(text, true);
            for skip in [true, false] {
                assert_eq!(
                    spm.decode(&ids, skip),
                    hf.decode(&ids, skip).unwrap(),
                    "{text:?} {skip}"
                );
            }
        }
        // Invalid byte runs: one replacement character per byte.
        let ids = [7, 7, 6, 7, 8, 10];
        assert_eq!(spm.decode(&ids, true), hf.decode(&ids, true).unwrap());
    }

    #[test]
    fn ties_follow_the_converters_merge_order() {
        let (spm, _) = both();
        let id = |s: &str| spm.token_to_id(s).unwrap();
        // "xy" and "yx" score the same: the lower id merges first, then
        // "xyx" from "xy" + "x".
        assert_eq!(spm.encode("xyx", false), [id("xyx")]);
        // A later copy of "x" has no text of its own: the first "x" is the
        // piece.
        assert_eq!(id("x"), 22);
        assert_eq!(spm.id_to_token(27), None);
        assert_eq!(spm.vocab_size(), spm.len() - 1);
        // Unknown characters without byte pieces become one fused <unk>.
        assert_eq!(spm.encode("zzz", false), [3]);
    }

    #[test]
    fn a_space_prefix_is_added_and_stripped_when_the_file_asks() {
        let mut m = meta(&toy());
        m.insert("tokenizer.ggml.add_space_prefix".into(), Value::Bool(true));
        let spm = Spm::from_metadata(&m).unwrap();
        let hf = super::super::gguf_tokenizer::build(&m).unwrap();
        for text in ["the", " the", "the<start_of_turn>the", ""] {
            let want = hf.encode(text, true).unwrap().get_ids().to_vec();
            assert_eq!(spm.encode(text, true), want, "{text:?}");
            assert_eq!(spm.decode(&want, true), hf.decode(&want, true).unwrap());
        }
    }

    #[test]
    fn missing_or_foreign_tokenizers_are_clear_errors() {
        let err = Spm::from_metadata(&HashMap::new())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no tokenizer"), "{err}");
        let mut m = meta(&toy());
        m.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
        let err = Spm::from_metadata(&m).err().unwrap().to_string();
        assert!(err.contains("`gpt2` is not supported"), "{err}");
    }
}
