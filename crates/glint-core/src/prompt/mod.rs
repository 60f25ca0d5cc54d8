//! Prompts: what the user asks to find, as an ordered list of phrases.
//!
//! A prompt becomes a caption the way GLIP and Grounding DINO build it: phrases lower-cased and
//! joined by `" . "`, with a trailing `" ."` (`"cat . remote control ."`). Every span in this
//! module is in **characters** (Unicode scalar values) of the caption, as Python and the ODVG
//! `tokens_positive` field count them, half-open `[start, end)`.
//!
//! From caption to model inputs and back:
//! - [`tokenizer`]: [`TextTokenizer`] (a BERT WordPiece `tokenizer.json`) turns a caption into a
//!   [`TokenizedCaption`] (ids, character offsets, special-token flags).
//! - [`positive_map`]: which tokens each phrase covers ([`PositiveMap`], as GLIP / Grounding DINO
//!   compute it), and phrase scores from token scores ([`phrase_scores`]).
//! - [`text_mask`]: Grounding DINO's sub-sentence self-attention mask and position ids.
//! - [`chunk`]: splitting a prompt past the text encoder's token limit into prompts that fit.
//! - [`phrases`]: from a box's token probabilities back to a phrase (glint's way) or to the label
//!   text transformers prints (for parity).

pub mod chunk;
pub mod phrases;
pub mod positive_map;
pub mod text_mask;
pub mod tokenizer;

pub use chunk::{ChunkedPrompt, PromptChunk, chunk_prompt};
pub use phrases::{best_phrase, transformers_label_text};
pub use positive_map::{PhraseReduction, PositiveMap, phrase_scores};
pub use text_mask::{BERT_DELIMITER_IDS, TextMask, sub_sentence_mask};
pub use tokenizer::{EncodedPrompt, MAX_TEXT_LEN, TextTokenizer, TokenizedCaption};

use std::collections::HashSet;
use std::ops::Range;

/// Why a prompt could not be built, tokenised or chunked.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PromptError {
    #[error("the prompt has no phrases (give phrases separated by \" . \", e.g. \"cat . remote control .\")")]
    Empty,
    /// The tokenizer file could not be read or is not a valid `tokenizer.json`.
    #[error("cannot load tokenizer {path}: {message}")]
    TokenizerLoad { path: String, message: String },
    /// The tokenizer failed on a caption (the caption is shortened in the message).
    #[error("cannot tokenize caption \"{caption}\": {message}")]
    Encode { caption: String, message: String },
    /// Token ids could not be turned back into text.
    #[error("cannot decode token ids {ids}: {message}")]
    Decode { ids: String, message: String },
    /// One phrase alone does not fit in the text encoder, so no chunking can help.
    #[error(
        "phrase \"{phrase}\" is {tokens} tokens; with [CLS], its \" .\" and [SEP] it needs {needed}, \
         but the text encoder takes at most {max_tokens} (shorten the phrase)"
    )]
    PhraseTooLong { phrase: String, tokens: usize, needed: usize, max_tokens: usize },
    /// A phrase contains `.` or `?`: the caption uses `.` between phrases and Grounding DINO's
    /// text mask cuts at both, so the phrase would be split in two.
    #[error("phrase \"{phrase}\" contains '{delimiter}', which separates phrases; remove it")]
    Delimiter { phrase: String, delimiter: char },
    /// Phrases the tokenizer turns into no token at all (e.g. only zero-width or combining
    /// characters, which BERT's normaliser deletes): no box could ever be matched to them.
    #[error(
        "{} no token with this tokenizer (its normaliser deletes every character), so {} never be \
         detected; remove or reword {}",
        tokenless_subject(phrases),
        if phrases.len() == 1 { "it could" } else { "they could" },
        if phrases.len() == 1 { "it" } else { "them" }
    )]
    NoTokens {
        /// The phrases, as in the prompt.
        phrases: Vec<String>,
    },
}

/// `phrase "\u{200b}" gives` / `phrases "\u{200b}", "\u{301}" give`, escaping invisible
/// characters so the message shows what is wrong; long lists end with a count.
fn tokenless_subject(phrases: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut listed: Vec<String> =
        phrases.iter().take(SHOWN).map(|p| format!("{:?}", shorten(p, 40))).collect();
    if phrases.len() > SHOWN {
        listed.push(format!("and {} more", phrases.len() - SHOWN));
    }
    match phrases.len() {
        1 => format!("phrase {} gives", listed.join(", ")),
        _ => format!("phrases {} give", listed.join(", ")),
    }
}

/// Shortens text for an error message: at most `max_chars` characters, `…` marking a cut.
pub(crate) fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut short: String = text.chars().take(max_chars).collect();
    short.push('…');
    short
}

/// The characters that end a sub-sentence in Grounding DINO's text mask (with `[CLS]` and
/// `[SEP]`); `.` also separates phrases in a caption. No phrase may contain them.
pub const PHRASE_DELIMITERS: [char; 2] = ['.', '?'];

/// An ordered list of distinct, non-empty, lower-cased phrases, none containing a
/// [`PHRASE_DELIMITERS`] character, so `Prompt::parse(&p.caption()) == Ok(p)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    phrases: Vec<String>,
}

impl Prompt {
    /// Builds a prompt from phrases. Each phrase is lower-cased and its whitespace collapsed;
    /// empty phrases are dropped and a repeated phrase keeps its first position (it is the same
    /// class). Fails when nothing is left, or with [`PromptError::Delimiter`] when a phrase
    /// contains `.` or `?`.
    pub fn new<I, S>(phrases: I) -> Result<Self, PromptError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut kept: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for phrase in phrases {
            let clean = normalize_phrase(phrase.as_ref());
            if let Some(delimiter) = clean.chars().find(|c| PHRASE_DELIMITERS.contains(c)) {
                return Err(PromptError::Delimiter { phrase: shorten(&clean, 60), delimiter });
            }
            if !clean.is_empty() && seen.insert(clean.clone()) {
                kept.push(clean);
            }
        }
        if kept.is_empty() {
            return Err(PromptError::Empty);
        }
        Ok(Self { phrases: kept })
    }

    /// Parses a user caption such as `"Cat. remote  control . cat"`: split at `.`, tolerating a
    /// missing trailing dot, extra spaces, empty pieces and duplicates. A `?` is an error, as in
    /// [`Prompt::new`].
    pub fn parse(caption: &str) -> Result<Self, PromptError> {
        Self::new(caption.split('.'))
    }

    pub fn phrases(&self) -> &[String] {
        &self.phrases
    }

    pub fn len(&self) -> usize {
        self.phrases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.phrases.is_empty()
    }

    /// The caption the text encoder reads: `"cat . remote control ."`.
    pub fn caption(&self) -> String {
        let mut caption = self.phrases.join(" . ");
        caption.push_str(" .");
        caption
    }

    /// Each phrase's character span in [`Prompt::caption`], in phrase order.
    pub fn phrase_spans(&self) -> Vec<Range<usize>> {
        let mut spans = Vec::with_capacity(self.phrases.len());
        let mut start = 0;
        for phrase in &self.phrases {
            let end = start + phrase.chars().count();
            spans.push(start..end);
            start = end + " . ".len();
        }
        spans
    }
}

/// Lower-cases a phrase and collapses runs of whitespace to one space.
fn normalize_phrase(phrase: &str) -> String {
    phrase.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caption_and_spans() {
        let p = Prompt::new(["Cat", "remote control"]).unwrap();
        assert_eq!(p.caption(), "cat . remote control .");
        let caption: Vec<char> = p.caption().chars().collect();
        let spans = p.phrase_spans();
        assert_eq!(spans, vec![0..3, 6..20]);
        for (span, phrase) in spans.iter().zip(p.phrases()) {
            assert_eq!(caption[span.clone()].iter().collect::<String>(), *phrase);
        }
    }

    #[test]
    fn spans_count_characters_not_bytes() {
        let p = Prompt::new(["café", "crème brûlée"]).unwrap();
        assert_eq!(p.phrase_spans(), vec![0..4, 7..19]);
    }

    #[test]
    fn parse_tolerates_sloppy_input() {
        let p = Prompt::parse("  Cat.remote   control . . cat ").unwrap();
        assert_eq!(p.phrases(), ["cat", "remote control"]);
        assert_eq!(p.caption(), "cat . remote control .");
        assert_eq!(Prompt::parse("dog").unwrap().caption(), "dog .");
    }

    #[test]
    fn delimiters_in_a_phrase_are_an_error() {
        let err = Prompt::new(["dog", "St. Bernard"]).unwrap_err();
        assert_eq!(err, PromptError::Delimiter { phrase: "st. bernard".into(), delimiter: '.' });
        assert_eq!(
            err.to_string(),
            "phrase \"st. bernard\" contains '.', which separates phrases; remove it"
        );
        let err = Prompt::parse("cat . what is this? .").unwrap_err();
        assert_eq!(err, PromptError::Delimiter { phrase: "what is this?".into(), delimiter: '?' });
        assert!(err.to_string().contains("contains '?'"), "{err}");
    }

    #[test]
    fn parsing_a_caption_gives_back_the_prompt() {
        for phrases in [&["cat", "remote control"][..], &["Café  Crème", "e\u{301}clair", "1,000 / 2!"]] {
            let prompt = Prompt::new(phrases).unwrap();
            assert_eq!(Prompt::parse(&prompt.caption()), Ok(prompt));
        }
    }

    #[test]
    fn duplicates_keep_their_first_position_in_a_huge_prompt() {
        // 100k distinct phrases, each given twice: linear dedup keeps this fast.
        let phrases: Vec<String> = (0..200_000).map(|i| format!("object {}", (i * 7919) % 100_000)).collect();
        let prompt = Prompt::new(&phrases).unwrap();
        assert_eq!(prompt.len(), 100_000);
        assert_eq!(prompt.phrases()[..3], ["object 0", "object 7919", "object 15838"]);
    }

    #[test]
    fn empty_prompt_is_an_error() {
        assert_eq!(Prompt::parse(" . .  . "), Err(PromptError::Empty));
        assert_eq!(Prompt::parse(""), Err(PromptError::Empty));
    }
}
