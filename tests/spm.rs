//! The SentencePiece tokenizer run straight from the default GGUF's
//! metadata (`src/model/spm.rs`) against Gemma's `tokenizer.json` through
//! the `tokenizers` crate: identical ids on real, templated and adversarial
//! text, identical decoding and streaming, and llama.cpp's golden prompt
//! ids. The engine loads it by default for GGUF models.

mod common;

use chimera::model::gguf::GgufFile;
use chimera::model::spm::{self, Spm};
use chimera::model::tokenizer::ChatPrompt;
use chimera::model::Tokenizer;
use chimera::models::{registry_tokenizer, Fetch, TokenizerFile};
use serde::Deserialize;
use std::path::Path;
use std::sync::OnceLock;

/// The GGUF's tokenizer, raw and wrapped as the engine uses it.
fn ours() -> &'static (Spm, Tokenizer) {
    static T: OnceLock<(Spm, Tokenizer)> = OnceLock::new();
    T.get_or_init(|| {
        let file = GgufFile::open(&common::default_model().weights).unwrap();
        (
            Spm::from_metadata(file.metadata()).unwrap(),
            spm::load(&file).unwrap(),
        )
    })
}

/// Gemma's tokenizer.json, raw and wrapped; `None` (with a `skipped:` line)
/// where it cannot be had.
fn theirs() -> Option<&'static (tokenizers::Tokenizer, Tokenizer)> {
    static T: OnceLock<Option<(tokenizers::Tokenizer, Tokenizer)>> = OnceLock::new();
    let t = T.get_or_init(|| match registry_tokenizer("gemma3", Fetch::IfMissing) {
        Ok(p) => Some((
            tokenizers::Tokenizer::from_file(&p).unwrap(),
            Tokenizer::from_file(&p).unwrap(),
        )),
        Err(e) => {
            eprintln!("skipped: Gemma 3 tokenizer.json unavailable ({e:#})");
            None
        }
    });
    t.as_ref()
}

#[derive(Deserialize)]
struct Golden {
    prompt: String,
    prompt_ids: Vec<u32>,
}

fn goldens() -> Vec<Golden> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("golden-") && name.ends_with(".json") {
            let g: Vec<Golden> = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .expect("golden file parses");
            all.extend(g);
        }
    }
    assert!(!all.is_empty(), "no golden prompts");
    all
}

fn text_files(dir: &Path) -> Vec<(String, String)> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((e.path().display().to_string(), text))
        })
        .collect()
}

/// Characters the vocabulary has no piece for (they go to byte pieces).
fn outside_the_vocabulary(spm: &Spm, n: usize) -> Vec<char> {
    let found: Vec<char> = (0x80u32..0x11_0000)
        .step_by(97)
        .filter_map(char::from_u32)
        .filter(|c| spm.token_to_id(c.encode_utf8(&mut [0; 4])).is_none())
        .take(n)
        .collect();
    assert_eq!(found.len(), n, "every character has a piece?");
    found
}

/// Chat-template text and edge cases: spaces, tabs and newline runs
/// (user-defined pieces), special-token spellings and near misses, markup,
/// the space marker itself, scripts, emoji, combining and control
/// characters, bytes outside the vocabulary, very long words.
fn edge_cases(spm: &Spm) -> Vec<String> {
    let chat = |system: Option<&str>, user: &str| ChatPrompt { system, user }.render();
    let rare: String = outside_the_vocabulary(spm, 40).into_iter().collect();
    let mut v: Vec<String> = vec![
        chat(None, "Why is the sky blue?"),
        chat(
            Some("You are a careful technical writer. Answer in Markdown."),
            "Summarize:\n\n| model | tok/s |\n|---|---|\n| gemma3 | 41.2 |\n",
        ),
        chat(Some(""), "  two leading spaces and a trailing one "),
        format!(
            "{}{}",
            chat(Some("sys"), "first"),
            "It is.<end_of_turn>\n<start_of_turn>user\nAnd then?<end_of_turn>\n<start_of_turn>model\n"
        ),
        String::new(),
        " ".into(),
        "  ".into(),
        " ".repeat(31),
        " ".repeat(32),
        " ".repeat(100),
        "  leading and trailing  ".into(),
        " leading".into(),
        "trailing ".into(),
        "a  b   c    d     e".into(),
        "\t".into(),
        "\t\tx\t \t".into(),
        "\t".repeat(33),
        "\n".into(),
        "\n".repeat(31),
        "\n".repeat(32),
        "\n".repeat(100),
        "a\n\nb\n\n\nc \n \n".into(),
        "\r\n\r\n line\r\n".into(),
        "<start_of_turn>".into(),
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n".into(),
        "say <start_of_turn> literally, and <end_of_turn>too".into(),
        "<<start_of_turn>> <start_of_turn <start_of_tur>n <START_OF_TURN>".into(),
        "<start_of_turn><start_of_turn><end_of_turn><end_of_turn>".into(),
        "<bos><eos><pad><unk><mask>[multimodal]<unused0><unused6241><start_of_image><end_of_image>"
            .into(),
        "<table><tr><td>1</td></tr></table><h1>x</h1><strong>b</strong><b><i>".into(),
        "<0x41><0xFF> <0x0A>".into(),
        "\u{2581}already\u{2581}\u{2581}marked ▁▁ ▁".into(),
        "naïve café Ünïcödé — “quotes” ‘single’ … ½ ² ∑ ∫ ≠".into(),
        "e\u{301} a\u{300}\u{316} n\u{303}\u{303}\u{303} \u{345}\u{345} Z\u{351}\u{36b}\u{343}".into(),
        "日本語のテキスト、中文文本，한국어 텍스트 ไทย עברית العربية".into(),
        "emoji 👩‍💻🚀🏳️‍🌈 and 🇫🇷 👍🏽".into(),
        "\u{0}\u{1}\u{7f}\u{feff}\u{200b}\u{10ffff}\u{e000}\u{fffd}".into(),
        "\u{0}".repeat(10),
        rare.clone(),
        format!("x{rare} {rare}y"),
        "def f(x):\n    return x ** 2  # square\n".into(),
        "1234567890 3.14159 -0.5e-10 0x1F 1,000,000".into(),
        "a".repeat(5000),
        "ab".repeat(3000),
        "supercalifragilisticexpialidocious".repeat(150),
        "https://example.com/a/very/long/path?with=query&and=more#fragment".repeat(40),
        "▁".repeat(100),
    ];
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    // A long word of random letters, and random ASCII including controls.
    v.push(
        (0..8000)
            .map(|_| (b'a' + (next() % 26) as u8) as char)
            .collect(),
    );
    v.push((0..4000).map(|_| (next() % 128) as u8 as char).collect());
    v
}

/// Strings of random vocabulary pieces, with and without spaces between.
fn random_pieces(spm: &Spm, n: usize) -> Vec<String> {
    let vocab = spm.len() as u64;
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..n)
        .map(|_| {
            let k = 1 + next() % 12;
            (0..k)
                .map(|_| {
                    let piece = spm.id_to_token((next() % vocab) as u32).unwrap_or_default();
                    let piece = piece.replace('\u{2581}', " ");
                    if next() % 3 == 0 {
                        format!("{piece} ")
                    } else {
                        piece
                    }
                })
                .collect()
        })
        .collect()
}

/// tokenizer.json's one token the GGUF lacks: Gemma's image placeholder
/// (id 262144, past the embedding table; the vision pipeline swaps it out).
/// Text spelling it is ordinary text to the GGUF's tokenizer.
const IMAGE: &str = "<image_soft_token>";

/// Encodes `text` with both and compares; returns our ids.
fn check_same(hf: &tokenizers::Tokenizer, what: &str, text: &str) -> Vec<u32> {
    let (spm, tok) = ours();
    for bos in [true, false] {
        let got = spm.encode(text, bos);
        assert_eq!(tok.encode(text, bos).unwrap(), got, "{what}: wrapper");
        if text.contains(IMAGE) {
            continue;
        }
        let want = hf.encode(text, bos).unwrap().get_ids().to_vec();
        if got != want {
            let at = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
            let show = |ids: &[u32]| -> Vec<(u32, String)> {
                ids.iter()
                    .skip(at.saturating_sub(3))
                    .take(8)
                    .map(|&i| (i, spm.id_to_token(i).unwrap_or("?").to_string()))
                    .collect()
            };
            panic!(
                "{what}: ids differ (bos {bos}) from token {at}:\n ours   {:?}\n theirs {:?}",
                show(&got),
                show(&want)
            );
        }
    }
    let ids = spm.encode(text, false);
    for skip in [true, false] {
        assert_eq!(
            spm.decode(&ids, skip),
            hf.decode(&ids, skip).unwrap(),
            "{what}: decoding differs (skip special {skip})"
        );
    }
    // Text without the space marker or the image placeholder comes back
    // byte for byte.
    if !text.contains('\u{2581}') {
        assert_eq!(spm.decode(&ids, false), text, "{what}: no round trip");
    }
    ids
}

#[test]
fn fixtures_golden_prompts_chat_and_edge_cases_encode_as_tokenizer_json() {
    let (spm, _) = ours();
    let Some((hf, _)) = theirs() else {
        return;
    };
    let mut texts: Vec<(String, String)> = Vec::new();
    match common::fixture() {
        Some(dir) => {
            let files = text_files(&dir);
            assert!(files.len() > 50, "{} fixture text files", files.len());
            texts.extend(files);
        }
        None => eprintln!("skipped: ../shared absent (the other texts still run)"),
    }
    let fixtures = texts.len();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["src", "tests", "examples", "README.md", "models.toml"] {
        texts.extend(text_files(&root.join(dir)));
    }
    texts.extend(goldens().into_iter().map(|g| ("golden".into(), g.prompt)));
    texts.extend(
        edge_cases(spm)
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("edge case {i}"), t)),
    );
    texts.extend(
        random_pieces(spm, 20_000)
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("random {i}"), t)),
    );
    let mut tokens = 0;
    let mut bytes = 0;
    for (what, text) in &texts {
        let ids = check_same(hf, what, text);
        tokens += ids.len();
        bytes += ids
            .iter()
            .filter(|&&i| spm.id_to_token(i).is_some_and(|p| p.starts_with("<0x")))
            .count();
    }
    // The texts did exercise byte fallback.
    assert!(bytes > 100, "{bytes} byte pieces");
    eprintln!(
        "{} texts ({fixtures} fixture files), {tokens} tokens ({bytes} byte pieces): identical",
        texts.len()
    );
}

#[test]
fn golden_prompts_encode_to_llama_cpps_ids() {
    let (spm, tok) = ours();
    for g in goldens() {
        assert_eq!(spm.encode(&g.prompt, true), g.prompt_ids, "{:?}", g.prompt);
        assert_eq!(tok.encode(&g.prompt, true).unwrap(), g.prompt_ids);
    }
    assert_eq!(
        tok.encode("The capital of France is", true).unwrap(),
        [2, 818, 5279, 529, 7001, 563]
    );
}

#[test]
fn every_token_decodes_and_spells_as_tokenizer_json() {
    let (spm, tok) = ours();
    let Some((hf, htok)) = theirs() else {
        return;
    };
    assert_eq!((tok.bos, tok.eos, tok.end_of_turn), (2, 1, Some(106)));
    assert_eq!(
        (tok.bos, tok.eos, tok.end_of_turn),
        (htok.bos, htok.eos, htok.end_of_turn)
    );
    assert_eq!(tok.base_vocab_size(), 262_144);
    assert_eq!(tok.base_vocab_size(), htok.base_vocab_size());
    for id in 0..spm.len() as u32 {
        assert_eq!(tok.token_text(id), htok.token_text(id), "token_text({id})");
        for skip in [true, false] {
            assert_eq!(
                spm.decode(&[id], skip),
                hf.decode(&[id], skip).unwrap(),
                "decode([{id}], skip {skip})"
            );
        }
    }
    // Past the vocabulary: no text (tokenizer.json's image placeholder
    // aside, which the GGUF does not have).
    assert_eq!(tok.token_text(300_000), htok.token_text(300_000));
    assert_eq!(spm.decode(&[2, 300_000, 818], false), "<bos>The");
}

/// Random id sequences, heavy in byte pieces (valid and broken UTF-8) and
/// special tokens: decoded, and streamed, as tokenizer.json does.
#[test]
fn random_ids_decode_and_stream_as_tokenizer_json() {
    let (spm, tok) = ours();
    let Some((hf, htok)) = theirs() else {
        return;
    };
    let byte = |b: u8| spm.token_to_id(&format!("<0x{b:02X}>")).unwrap();
    let mut s = 0xD1B5_4A32_D192_ED03u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let utf8: Vec<u32> = "é😀中".bytes().map(byte).collect();
    for _ in 0..3000 {
        let n = 1 + next() % 24;
        let ids: Vec<u32> = (0..n)
            .flat_map(|_| match next() % 6 {
                0 => vec![byte((next() % 256) as u8)],
                1 => utf8.clone(),
                2 => vec![[0, 1, 2, 3, 4, 105, 106, 107, 108][(next() % 9) as usize]],
                _ => vec![(next() % spm.len() as u64) as u32],
            })
            .collect();
        for skip in [true, false] {
            assert_eq!(
                spm.decode(&ids, skip),
                hf.decode(&ids, skip).unwrap(),
                "{ids:?} skip {skip}"
            );
        }
        let (mut a, mut b) = (tok.stream(), htok.stream());
        for &id in &ids {
            assert_eq!(
                a.push(tok, id).unwrap(),
                b.push(htok, id).unwrap(),
                "{ids:?}"
            );
        }
    }
}

#[test]
fn the_default_model_loads_the_ggufs_own_tokenizer() {
    let files = common::default_model();
    assert_eq!(files.tokenizer, TokenizerFile::FromGguf);
    let engine = common::engine();
    assert!(engine.tokenizer().is_spm());
    assert_eq!(
        engine
            .tokenizer()
            .encode("The capital of France is", true)
            .unwrap(),
        [2, 818, 5279, 529, 7001, 563]
    );
    // --tokenizer still means a tokenizer.json.
    if let Ok(json) = registry_tokenizer("gemma3", Fetch::Never) {
        let files =
            chimera::models::resolve(files.weights.to_str().unwrap(), Some(&json), Fetch::Never)
                .unwrap();
        let e = chimera::engine::Engine::load(&files, &Default::default()).unwrap();
        assert!(!e.tokenizer().is_spm());
    }
}
