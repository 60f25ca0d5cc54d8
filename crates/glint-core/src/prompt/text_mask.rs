//! Grounding DINO's sub-sentence text self-attention mask and position ids.
//!
//! Grounding DINO lets each phrase's tokens attend only to the tokens of the same phrase, and
//! restarts BERT's position ids at every phrase, so phrases do not influence each other. The
//! caption is cut at delimiter tokens (`[CLS]`, `[SEP]`, `.`, `?`). This module reproduces
//! transformers' `generate_masks_with_special_tokens_and_transfer_map` exactly:
//!
//! - a block is the run of tokens after one delimiter up to and including the next one;
//! - tokens of a block attend to each other and their position ids count 0, 1, 2… from the
//!   block's start (the closing delimiter included);
//! - a block closed by the first token (`[CLS]`), by the last token (`[SEP]` of an unpadded
//!   caption) or by no delimiter at all (text after the last `.`, padding) is not a block: each
//!   of its tokens attends only to itself and has position id 0.
//!
//! Every token may always attend to itself.

/// Delimiter ids of bert-base-uncased: `[CLS]`, `[SEP]`, `.`, `?` (Grounding DINO's
/// `SPECIAL_TOKENS`).
pub const BERT_DELIMITER_IDS: [u32; 4] = [101, 102, 1012, 1029];

/// A square attention mask over a token sequence and the matching position ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextMask {
    len: usize,
    mask: Vec<bool>,
    position_ids: Vec<u32>,
}

impl TextMask {
    /// Number of tokens (the mask is `len × len`).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row-major `len × len`: `mask[i * len + j]` is true when token `i` may attend to `j`.
    pub fn mask(&self) -> &[bool] {
        &self.mask
    }

    /// Whether token `query` may attend to token `key` (false outside the sequence).
    pub fn allowed(&self, query: usize, key: usize) -> bool {
        query < self.len && key < self.len && self.mask[query * self.len + key]
    }

    /// BERT position id of each token.
    pub fn position_ids(&self) -> &[u32] {
        &self.position_ids
    }
}

/// Builds the sub-sentence mask and position ids of one token sequence (padding included, if
/// any) given the delimiter ids (usually [`crate::prompt::TextTokenizer::delimiter_ids`]).
pub fn sub_sentence_mask(ids: &[u32], delimiters: &[u32]) -> TextMask {
    let len = ids.len();
    let mut mask = vec![false; len * len];
    for i in 0..len {
        mask[i * len + i] = true;
    }
    let mut position_ids = vec![0u32; len];

    // Walk the blocks: each starts right after the previous delimiter and ends at a delimiter.
    let mut block_start = 0;
    for (end, id) in ids.iter().enumerate() {
        if !delimiters.contains(id) {
            continue;
        }
        let is_block = end != 0 && end != len - 1;
        if is_block {
            for i in block_start..=end {
                for j in block_start..=end {
                    mask[i * len + j] = true;
                }
                position_ids[i] = (i - block_start) as u32;
            }
        }
        block_start = end + 1;
    }
    TextMask { len, mask, position_ids }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(mask: &TextMask) -> Vec<String> {
        mask.mask()
            .chunks(mask.len())
            .map(|row| row.iter().map(|&b| if b { '1' } else { '0' }).collect())
            .collect()
    }

    #[test]
    fn phrases_attend_within_their_block() {
        // [CLS] cat . remote control . [SEP]
        let mask = sub_sentence_mask(&[101, 4937, 1012, 6556, 2491, 1012, 102], &BERT_DELIMITER_IDS);
        assert_eq!(
            rows(&mask),
            ["1000000", "0110000", "0110000", "0001110", "0001110", "0001110", "0000001"]
        );
        assert_eq!(mask.position_ids(), [0, 0, 1, 0, 1, 2, 0]);
        assert!(mask.allowed(3, 5) && !mask.allowed(1, 3) && !mask.allowed(7, 0));
    }

    #[test]
    fn text_after_the_last_delimiter_is_left_alone() {
        // [CLS] cat . dog [SEP]: "dog" ends at the final [SEP], so it is not a block.
        let mask = sub_sentence_mask(&[101, 4937, 1012, 3899, 102], &BERT_DELIMITER_IDS);
        assert_eq!(rows(&mask), ["10000", "01100", "01100", "00010", "00001"]);
        assert_eq!(mask.position_ids(), [0, 0, 1, 0, 0]);
    }

    #[test]
    fn padded_sequence_closes_at_sep() {
        // [CLS] cat . [SEP] [PAD] [PAD]: [SEP] is not last, so it is a one-token block.
        let mask = sub_sentence_mask(&[101, 4937, 1012, 102, 0, 0], &BERT_DELIMITER_IDS);
        assert_eq!(rows(&mask), ["100000", "011000", "011000", "000100", "000010", "000001"]);
        assert_eq!(mask.position_ids(), [0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn empty_sequence() {
        let mask = sub_sentence_mask(&[], &BERT_DELIMITER_IDS);
        assert!(mask.is_empty() && mask.mask().is_empty() && mask.position_ids().is_empty());
    }
}
