//! Positive maps: which tokens of a tokenised caption each phrase covers.
//!
//! A phrase is given as character spans of the caption (a [`Prompt`]'s phrase spans, or a
//! dataset's `tokens_positive`). Each span becomes a run of tokens exactly as GLIP's
//! `create_positive_map` and Grounding DINO's `create_positive_map_from_span` compute it:
//!
//! - the first token is the one holding the span's first character; if that character has no
//!   token (a space, a removed accent) the next character's token, else the one after that;
//! - the last token is the one holding the span's last character, else the character before,
//!   else the one before that;
//! - if either end is still unresolved the span is skipped; otherwise every token from first to
//!   last inclusive is positive (none if last comes before first).
//!
//! Where the reference raises (a span ending at character 0) this module skips the span instead.

use std::ops::Range;

use super::Prompt;
use super::tokenizer::TokenizedCaption;

/// The tokens each phrase covers, sparse, in phrase order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PositiveMap {
    num_tokens: usize,
    phrase_tokens: Vec<Vec<usize>>,
}

/// How a phrase's score is made from its tokens' scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhraseReduction {
    /// The best token's score (Grounding DINO; glint's default).
    #[default]
    Max,
    /// The mean over the phrase's tokens (GLIP).
    Mean,
}

impl PositiveMap {
    /// Maps each phrase's character spans to the tokens they cover. `phrase_spans[p]` holds the
    /// spans of phrase `p` (one or more; a phrase may occur several times in a caption).
    pub fn from_spans<S: AsRef<[Range<usize>]>>(caption: &TokenizedCaption, phrase_spans: &[S]) -> Self {
        let phrase_tokens = phrase_spans
            .iter()
            .map(|spans| {
                let mut tokens: Vec<usize> =
                    spans.as_ref().iter().filter_map(|span| span_tokens(caption, span)).flatten().collect();
                tokens.sort_unstable();
                tokens.dedup();
                tokens
            })
            .collect();
        Self { num_tokens: caption.len(), phrase_tokens }
    }

    /// The positive map of a prompt's phrases; `caption` must be the tokenised
    /// [`Prompt::caption`] (as [`super::TextTokenizer::encode_prompt`] does).
    pub fn from_prompt(caption: &TokenizedCaption, prompt: &Prompt) -> Self {
        let spans: Vec<[Range<usize>; 1]> = prompt.phrase_spans().into_iter().map(|s| [s]).collect();
        Self::from_spans(caption, &spans)
    }

    /// The map with `count` more phrases after these, phrase `num_phrases + i` being a single
    /// new token `num_tokens + i` (scores appended after the caption's tokens: exemplars).
    pub fn with_appended_phrases(&self, count: usize) -> Self {
        let mut phrase_tokens = self.phrase_tokens.clone();
        phrase_tokens.extend((0..count).map(|i| vec![self.num_tokens + i]));
        Self { num_tokens: self.num_tokens + count, phrase_tokens }
    }

    pub fn num_phrases(&self) -> usize {
        self.phrase_tokens.len()
    }

    /// Number of tokens in the caption, special tokens included.
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }

    /// The sorted token indices of phrase `phrase` (empty for an unknown phrase).
    pub fn tokens(&self, phrase: usize) -> &[usize] {
        self.phrase_tokens.get(phrase).map_or(&[], Vec::as_slice)
    }

    /// The sorted token indices of every phrase.
    pub fn phrase_tokens(&self) -> &[Vec<usize>] {
        &self.phrase_tokens
    }

    /// Phrases whose spans cover no token: they can never be detected or trained.
    pub fn phrases_without_tokens(&self) -> Vec<usize> {
        (0..self.num_phrases()).filter(|&p| self.phrase_tokens[p].is_empty()).collect()
    }

    /// The dense map, `[num_phrases][num_tokens]` row-major, normalised as GLIP and Grounding
    /// DINO do for training targets: each row divided by (its number of tokens + 1e-6), so a row
    /// sums to just under 1 and a phrase without tokens is all zeros.
    pub fn dense(&self) -> Vec<f32> {
        self.dense_with_width(self.num_tokens)
    }

    /// [`PositiveMap::dense`] with `width` columns (e.g. [`super::MAX_TEXT_LEN`], as the
    /// reference's fixed 256-wide tensors): extra columns are zero, tokens at or past `width` are
    /// left out before normalising.
    pub fn dense_with_width(&self, width: usize) -> Vec<f32> {
        let mut dense = vec![0.0f32; self.num_phrases() * width];
        for (row, tokens) in dense.chunks_mut(width.max(1)).zip(&self.phrase_tokens) {
            let kept: Vec<usize> = tokens.iter().copied().filter(|&t| t < width).collect();
            let value = 1.0f32 / (kept.len() as f32 + 1e-6f32);
            for t in kept {
                row[t] = value;
            }
        }
        dense
    }
}

/// The tokens one character span covers (see the module docs), `None` when the span is skipped.
fn span_tokens(caption: &TokenizedCaption, span: &Range<usize>) -> Option<Range<usize>> {
    let token_at = |char: Option<usize>| char.and_then(|c| caption.char_to_token(c));
    let first = token_at(Some(span.start))
        .or_else(|| token_at(span.start.checked_add(1)))
        .or_else(|| token_at(span.start.checked_add(2)))?;
    let last = token_at(span.end.checked_sub(1))
        .or_else(|| token_at(span.end.checked_sub(2)))
        .or_else(|| token_at(span.end.checked_sub(3)))?;
    Some(first..last + 1)
}

/// Each phrase's score from per-token scores (probabilities or logits; entries past the caption,
/// such as the padding of a 256-wide output, are simply not read). A phrase with no token, or
/// whose tokens lie past `token_scores`, scores `-inf`, so no threshold or arg-max picks it.
pub fn phrase_scores(token_scores: &[f32], map: &PositiveMap, reduction: PhraseReduction) -> Vec<f32> {
    map.phrase_tokens()
        .iter()
        .map(|tokens| {
            // One pass over the phrase's scored tokens: their count, sum and max.
            let (count, sum, max) = tokens
                .iter()
                .filter_map(|&t| token_scores.get(t))
                .fold((0usize, 0.0f32, f32::NEG_INFINITY), |(count, sum, max), &score| {
                    (count + 1, sum + score, max.max(score))
                });
            match (count, reduction) {
                (0, _) => f32::NEG_INFINITY,
                (_, PhraseReduction::Max) => max,
                (_, PhraseReduction::Mean) => sum / count as f32,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // a phrase's spans are a list of ranges, often of one
mod tests {
    use super::*;
    use crate::prompt::tokenizer::fixture_tokenizer;

    #[test]
    fn prompt_phrases_cover_their_word_pieces() {
        let prompt = Prompt::new(["cat", "crème brûlée", "traffic light"]).unwrap();
        let tokens = fixture_tokenizer().encode(&prompt.caption()).unwrap();
        // [CLS] cat . cr ##eme br ##ule ##e . traffic light . [SEP]
        let map = PositiveMap::from_prompt(&tokens, &prompt);
        assert_eq!(map.phrase_tokens(), [vec![1], vec![3, 4, 5, 6, 7], vec![9, 10]]);
        assert_eq!(map.num_tokens(), 13);
        assert!(map.phrases_without_tokens().is_empty());
    }

    #[test]
    fn spans_falling_on_spaces_use_the_fallbacks() {
        let tokens = fixture_tokenizer().encode("a  cat   sits .").unwrap();
        // [CLS] a cat sits . [SEP]; "cat" is chars 3..6, "sits" 9..13.
        let spans: [&[Range<usize>]; 5] = [&[1..6], &[3..8], &[5..9], &[6..9], &[0..1, 9..13]];
        let map = PositiveMap::from_spans(&tokens, &spans);
        assert_eq!(map.phrase_tokens(), [vec![2], vec![2], vec![], vec![], vec![1, 3]]);
        assert_eq!(map.phrases_without_tokens(), [2, 3]);
        assert_eq!(map.tokens(9), &[] as &[usize]);
    }

    #[test]
    fn dense_rows_are_normalised() {
        let tokens = fixture_tokenizer().encode("cat . remote control .").unwrap();
        let map = PositiveMap::from_spans(&tokens, &[[0..3], [6..20], [30..40]]);
        let dense = map.dense();
        assert_eq!(dense.len(), 3 * 7);
        let row1 = &dense[7..14];
        assert_eq!(row1[3], 1.0 / (2.0 + 1e-6));
        assert_eq!(row1.iter().filter(|&&v| v > 0.0).count(), 2);
        assert!(dense[14..].iter().all(|&v| v == 0.0));
        let wide = map.dense_with_width(256);
        assert_eq!(wide.len(), 3 * 256);
        assert_eq!(wide[256 + 4], row1[4]);
    }

    #[test]
    fn max_and_mean_reductions() {
        let tokens = fixture_tokenizer().encode("cat . remote control .").unwrap();
        let spans: [&[Range<usize>]; 3] = [&[0..3], &[6..20], &[]];
        let map = PositiveMap::from_spans(&tokens, &spans);
        let scores = [0.0, 0.9, 0.1, 0.2, 0.6, 0.0, 0.0];
        assert_eq!(phrase_scores(&scores, &map, PhraseReduction::Max), [0.9, 0.6, f32::NEG_INFINITY]);
        let mean = phrase_scores(&scores, &map, PhraseReduction::Mean);
        assert_eq!((mean[0], mean[2]), (0.9, f32::NEG_INFINITY));
        assert!((mean[1] - 0.4).abs() < 1e-6, "{mean:?}");
        // Tokens past the given scores are not read.
        assert_eq!(phrase_scores(&scores[..4], &map, PhraseReduction::Mean)[1], 0.2);
    }
}
