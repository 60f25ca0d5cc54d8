//! From a box's per-token scores back to what it found.
//!
//! glint names a box by a phrase *index*: the phrase whose tokens score highest
//! ([`best_phrase`], max reduction over the positive map). transformers' Grounding DINO
//! post-processing instead prints the *text* of every token above `text_threshold`, which may mix
//! words of several phrases, and even `.` or `[SEP]`; [`transformers_label_text`] reproduces it
//! for parity checks and for users comparing outputs.

use super::PromptError;
use super::positive_map::{PhraseReduction, PositiveMap, phrase_scores};
use super::tokenizer::{TextTokenizer, TokenizedCaption};

/// glint's label for a box: the phrase with the highest max-over-tokens score, and that score.
/// Ties go to the earlier phrase; `None` when no phrase has a token with a score.
pub fn best_phrase(token_scores: &[f32], map: &PositiveMap) -> Option<(usize, f32)> {
    phrase_scores(token_scores, map, PhraseReduction::Max)
        .into_iter()
        .enumerate()
        .filter(|(_, score)| score.is_finite())
        .fold(None, |best, (phrase, score)| match best {
            Some((_, best_score)) if best_score >= score => best,
            _ => Some((phrase, score)),
        })
}

/// The label text transformers' `GroundingDinoProcessor.post_process_grounded_object_detection`
/// prints for one box, given the box's token probabilities (sigmoid of its logits, as wide as
/// the model's output, e.g. 256) and the tokenised caption.
///
/// As the reference does: positions above `text_threshold` are kept, except the first position
/// and the *last position of `token_probs`* (with a 256-wide output that is not the caption's
/// `[SEP]`, which can therefore appear in the text); the kept ids are decoded without skipping
/// special tokens. Positions past the caption carry no token and are ignored.
pub fn transformers_label_text(
    tokenizer: &TextTokenizer,
    caption: &TokenizedCaption,
    token_probs: &[f32],
    text_threshold: f32,
) -> Result<String, PromptError> {
    let width = token_probs.len();
    let ids: Vec<u32> = token_probs
        .iter()
        .enumerate()
        .filter(|&(position, &prob)| position >= 1 && position + 1 < width && prob > text_threshold)
        .filter_map(|(position, _)| caption.ids().get(position).copied())
        .collect();
    tokenizer.decode(&ids, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::Prompt;
    use crate::prompt::tokenizer::fixture_tokenizer;

    #[test]
    fn best_phrase_uses_the_max_token() {
        let tokenizer = fixture_tokenizer();
        let prompt = Prompt::new(["cat", "remote control"]).unwrap();
        let encoded = tokenizer.encode_prompt(&prompt).unwrap();
        // [CLS] cat . remote control . [SEP]
        let probs = [0.9, 0.5, 0.95, 0.1, 0.7, 0.0, 0.99];
        assert_eq!(best_phrase(&probs, &encoded.positive_map), Some((1, 0.7)));
        let tie = [0.0, 0.7, 0.0, 0.7, 0.0, 0.0, 0.0];
        assert_eq!(best_phrase(&tie, &encoded.positive_map), Some((0, 0.7)));
        assert_eq!(best_phrase(&[], &encoded.positive_map), None);
    }

    #[test]
    fn label_text_keeps_tokens_over_threshold() {
        let tokenizer = fixture_tokenizer();
        let caption = tokenizer.encode("cat . remote control .").unwrap();
        let mut probs = vec![0.0f32; 256];
        probs[..7].copy_from_slice(&[0.9, 0.3, 0.2, 0.1, 0.8, 0.4, 0.6]);
        // [CLS] is never kept; [SEP] is, since the 256-wide output ends later.
        assert_eq!(
            transformers_label_text(&tokenizer, &caption, &probs, 0.25).unwrap(),
            "cat control. [SEP]"
        );
        // As wide as the caption: the last position ([SEP]) is dropped.
        assert_eq!(transformers_label_text(&tokenizer, &caption, &probs[..7], 0.25).unwrap(), "cat control.");
        assert_eq!(transformers_label_text(&tokenizer, &caption, &probs, 0.95).unwrap(), "");
    }
}
