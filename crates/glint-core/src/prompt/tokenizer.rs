//! Tokenisation of captions with a BERT WordPiece `tokenizer.json` (the `tokenizers` crate).
//!
//! [`TextTokenizer`] is a thin wrapper that fixes the choices grounding depends on: padding and
//! truncation are off (prompt length is handled by [`crate::prompt::chunk`]), `[CLS]`/`[SEP]` are
//! added, and offsets are in **characters** of the caption, as Python reports them (the Rust
//! crate's plain `encode` reports bytes).

use std::path::Path;

use tokenizers::Tokenizer;

use super::positive_map::PositiveMap;
use super::text_mask::{TextMask, sub_sentence_mask};
use super::{Prompt, PromptError, shorten};

/// The most tokens (with `[CLS]` and `[SEP]`) the BERT text encoder of GLIP and Grounding DINO
/// takes (`max_text_len = 256`).
pub const MAX_TEXT_LEN: usize = 256;

/// The tokens Grounding DINO splits a caption at for its sub-sentence text mask, in the order of
/// its `SPECIAL_TOKENS` list.
const DELIMITER_TOKENS: [&str; 4] = ["[CLS]", "[SEP]", ".", "?"];

/// The delimiters a prompt's caption always holds, so the vocabulary must have them (`?` never
/// occurs in a [`Prompt`]'s caption).
const REQUIRED_DELIMITERS: [&str; 3] = ["[CLS]", "[SEP]", "."];

/// A WordPiece tokenizer loaded from a Hugging Face `tokenizer.json`.
#[derive(Clone, Debug)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Ids of the [`DELIMITER_TOKENS`] in the vocabulary, in that order.
    delimiters: Vec<u32>,
}

/// A caption split into tokens: one entry per token in every vector, `[CLS]` first and `[SEP]`
/// last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizedCaption {
    caption: String,
    ids: Vec<u32>,
    tokens: Vec<String>,
    offsets: Vec<(usize, usize)>,
    special: Vec<bool>,
}

/// Everything the text side of a detector needs for one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedPrompt {
    /// The tokenised [`Prompt::caption`].
    pub tokens: TokenizedCaption,
    /// Which tokens each phrase of the prompt covers.
    pub positive_map: PositiveMap,
    /// Grounding DINO's sub-sentence attention mask and position ids.
    pub text_mask: TextMask,
}

impl TextTokenizer {
    /// Loads a `tokenizer.json` and turns its padding and truncation off (the MiniLM / BERT
    /// files pad and cut every caption to 128 tokens by default).
    ///
    /// Fails unless the file is laid out as BERT's: `[CLS]`, `[SEP]` and `.` in the vocabulary
    /// and every caption wrapped in `[CLS]` … `[SEP]` (a RoBERTa or GPT file would silently give
    /// a wrong sub-sentence mask).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PromptError> {
        let path = path.as_ref();
        let load_error =
            |message: String| PromptError::TokenizerLoad { path: path.display().to_string(), message };
        let bytes = std::fs::read(path).map_err(|e| load_error(e.to_string()))?;
        let mut inner = Tokenizer::from_bytes(&bytes).map_err(|e| load_error(e.to_string()))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| load_error(e.to_string()))?;
        let delimiters = DELIMITER_TOKENS.iter().filter_map(|t| inner.token_to_id(t)).collect();
        let tokenizer = Self { inner, delimiters };
        tokenizer.check_bert_layout().map_err(load_error)?;
        Ok(tokenizer)
    }

    /// The checks of [`TextTokenizer::from_file`] on a loaded tokenizer: the message says what
    /// is missing.
    fn check_bert_layout(&self) -> Result<(), String> {
        let missing: Vec<String> = REQUIRED_DELIMITERS
            .iter()
            .filter(|t| self.token_id(t).is_none())
            .map(|t| format!("{t:?}"))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "its vocabulary has no {}, which the sub-sentence text mask needs (use a BERT \
                 WordPiece tokenizer.json such as bert-base-uncased's)",
                missing.join(", ")
            ));
        }
        let ids = self.encode("").map_err(|e| e.to_string())?.ids;
        let (cls, sep) = (self.token_id("[CLS]"), self.token_id("[SEP]"));
        if ids.first().copied() != cls || ids.last().copied() != sep || ids.len() != 2 {
            return Err(
                "it does not wrap captions in [CLS] … [SEP] (its post_processor is not BERT's)".to_owned()
            );
        }
        Ok(())
    }

    /// Tokenises a caption with `[CLS]` and `[SEP]`, keeping every token (no truncation).
    pub fn encode(&self, caption: &str) -> Result<TokenizedCaption, PromptError> {
        let encoding = self
            .inner
            .encode_char_offsets(caption, true)
            .map_err(|e| PromptError::Encode { caption: shorten(caption, 60), message: e.to_string() })?;
        Ok(TokenizedCaption {
            caption: caption.to_string(),
            ids: encoding.get_ids().to_vec(),
            tokens: encoding.get_tokens().to_vec(),
            offsets: encoding.get_offsets().to_vec(),
            special: encoding.get_special_tokens_mask().iter().map(|&m| m != 0).collect(),
        })
    }

    /// Tokenises a prompt's caption and derives its positive map and text mask. The caption may
    /// exceed [`MAX_TEXT_LEN`]; split long prompts first with [`crate::prompt::chunk_prompt`].
    /// Fails with [`PromptError::NoTokens`] when a phrase tokenises to nothing.
    pub fn encode_prompt(&self, prompt: &Prompt) -> Result<EncodedPrompt, PromptError> {
        let tokens = self.encode(&prompt.caption())?;
        let positive_map = PositiveMap::from_prompt(&tokens, prompt);
        let tokenless = positive_map.phrases_without_tokens();
        if !tokenless.is_empty() {
            let phrases = tokenless.iter().filter_map(|&p| prompt.phrases().get(p).cloned()).collect();
            return Err(PromptError::NoTokens { phrases });
        }
        let text_mask = sub_sentence_mask(tokens.ids(), &self.delimiters);
        Ok(EncodedPrompt { tokens, positive_map, text_mask })
    }

    /// Turns ids back into text with the tokenizer's decoder (WordPiece: `##` pieces joined,
    /// spaces before punctuation removed).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, PromptError> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| PromptError::Decode {
            ids: shorten(&format!("{ids:?}"), 60),
            message: e.to_string(),
        })
    }

    /// The id of a vocabulary entry, e.g. `"[SEP]"` or `"."`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids of the tokens that end a sub-sentence in Grounding DINO: `[CLS]`, `[SEP]`, `.` and
    /// `?` (for bert-base-uncased, [`crate::prompt::BERT_DELIMITER_IDS`]). The first three are
    /// always there ([`TextTokenizer::from_file`] checks); `?` is left out if the vocabulary
    /// lacks it (no prompt contains it).
    pub fn delimiter_ids(&self) -> &[u32] {
        &self.delimiters
    }
}

impl TokenizedCaption {
    /// The caption that was tokenised.
    pub fn caption(&self) -> &str {
        &self.caption
    }

    /// Vocabulary ids, `[CLS]` first and `[SEP]` last.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Token strings (`"##ing"` for word-piece continuations), for display and debugging.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Each token's half-open `[start, end)` in characters of the caption; `(0, 0)` for the
    /// special tokens the tokenizer adds.
    pub fn offsets(&self) -> &[(usize, usize)] {
        &self.offsets
    }

    /// Whether each token was added by the tokenizer (`[CLS]`, `[SEP]`) rather than read from
    /// the caption.
    pub fn special(&self) -> &[bool] {
        &self.special
    }

    /// Number of tokens, special ones included.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The token holding character `char` of the caption, as Hugging Face's `char_to_token`:
    /// `None` for characters that produced no token (spaces, removed marks) and past the end.
    pub fn char_to_token(&self, char: usize) -> Option<usize> {
        self.offsets
            .iter()
            .zip(&self.special)
            .position(|(&(start, end), &special)| !special && start <= char && char < end)
    }
}

/// The bert-base-uncased tokenizer the repository's test fixtures use.
#[cfg(test)]
pub(crate) fn fixture_tokenizer() -> TextTokenizer {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tokenizer/tokenizer.json");
    TextTokenizer::from_file(path).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_char_offsets_and_specials() {
        let tokens = fixture_tokenizer().encode("Café . crème brûlée .").unwrap();
        assert_eq!(
            tokens.tokens(),
            ["[CLS]", "cafe", ".", "cr", "##eme", "br", "##ule", "##e", ".", "[SEP]"]
        );
        // "brûlée" starts at character 13 (byte 15): offsets are characters.
        assert_eq!(tokens.offsets()[5], (13, 15));
        assert_eq!(tokens.special(), [true, false, false, false, false, false, false, false, false, true]);
        assert_eq!(tokens.char_to_token(14), Some(5));
        assert_eq!(tokens.char_to_token(4), None, "a space has no token");
        assert_eq!(tokens.char_to_token(0), Some(1), "[CLS] owns no character");
    }

    #[test]
    fn long_captions_are_not_truncated_or_padded() {
        let tokenizer = fixture_tokenizer();
        let caption = "cat . ".repeat(200);
        assert_eq!(tokenizer.encode(&caption).unwrap().len(), 402);
        assert_eq!(tokenizer.encode("cat").unwrap().len(), 3);
    }

    #[test]
    fn missing_or_bad_file_names_the_file() {
        let err = TextTokenizer::from_file("/no/such/tokenizer.json").unwrap_err();
        assert!(err.to_string().contains("/no/such/tokenizer.json"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("tokenizer.json");
        std::fs::write(&bad, "{not json").unwrap();
        let err = TextTokenizer::from_file(&bad).unwrap_err().to_string();
        assert!(err.starts_with("cannot load tokenizer ") && err.contains("tokenizer.json"), "{err}");
    }

    #[test]
    fn delimiters_are_berts() {
        assert_eq!(fixture_tokenizer().delimiter_ids(), crate::prompt::BERT_DELIMITER_IDS);
    }

    /// A tiny WordPiece `tokenizer.json` with this vocabulary and post-processor.
    fn tiny_tokenizer_json(vocab: &[&str], post_processor: &str) -> String {
        let vocab: Vec<String> =
            vocab.iter().enumerate().map(|(id, token)| format!("{token:?}: {id}")).collect();
        format!(
            r###"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
                "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                                "strip_accents": null, "lowercase": true}},
                "pre_tokenizer": {{"type": "BertPreTokenizer"}},
                "post_processor": {post_processor},
                "decoder": {{"type": "WordPiece", "prefix": "##", "cleanup": true}},
                "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                           "max_input_chars_per_word": 100, "vocab": {{{}}}}}}}"###,
            vocab.join(", ")
        )
    }

    const BERT_POST_PROCESSOR: &str =
        r#"{"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}"#;

    #[test]
    fn a_tokenizer_without_bert_delimiters_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");

        std::fs::write(&path, tiny_tokenizer_json(&["[UNK]", "cat", "<s>", "</s>"], "null")).unwrap();
        let err = TextTokenizer::from_file(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot load tokenizer {}: ", path.display())), "{err}");
        assert!(err.contains(r#"vocabulary has no "[CLS]", "[SEP]", ".""#), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");

        // The tokens are there but captions are not wrapped in them.
        std::fs::write(&path, tiny_tokenizer_json(&["[UNK]", "cat", "[CLS]", "[SEP]", "."], "null")).unwrap();
        let err = TextTokenizer::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("does not wrap captions in [CLS]"), "{err}");

        // With BERT's post-processor it loads; `?` is optional.
        let vocab = ["[UNK]", "cat", "[CLS]", "[SEP]", "."];
        std::fs::write(&path, tiny_tokenizer_json(&vocab, BERT_POST_PROCESSOR)).unwrap();
        let tokenizer = TextTokenizer::from_file(&path).unwrap();
        assert_eq!(tokenizer.delimiter_ids(), [2, 3, 4]);
        assert_eq!(tokenizer.encode("cat .").unwrap().ids(), [2, 1, 4, 3]);
    }

    #[test]
    fn encode_prompt_names_phrases_without_tokens() {
        let tokenizer = fixture_tokenizer();
        let prompt = Prompt::new(["cat", "\u{200b}", "remote control"]).unwrap();
        let err = tokenizer.encode_prompt(&prompt).unwrap_err();
        assert_eq!(err, PromptError::NoTokens { phrases: vec!["\u{200b}".into()] });
        assert_eq!(
            err.to_string(),
            r#"phrase "\u{200b}" gives no token with this tokenizer (its normaliser deletes every character), so it could never be detected; remove or reword it"#
        );
        let prompt = Prompt::new(["\u{301}", "e\u{301}clair", "\u{200b}\u{200b}"]).unwrap();
        let err = tokenizer.encode_prompt(&prompt).unwrap_err();
        assert_eq!(err, PromptError::NoTokens { phrases: vec!["\u{301}".into(), "\u{200b}\u{200b}".into()] });
    }
}
