//! Splitting a prompt whose caption is too long for the text encoder.
//!
//! BERT in GLIP / Grounding DINO reads at most [`MAX_TEXT_LEN`](super::MAX_TEXT_LEN) tokens. A
//! longer prompt (LVIS has 1203 classes) is cut into consecutive runs of phrases, each a
//! [`Prompt`] whose caption fits with `[CLS]` and `[SEP]`. Each chunk remembers the index of each
//! of its phrases in the original prompt, so detections made per chunk merge back.

use super::positive_map::PositiveMap;
use super::tokenizer::TextTokenizer;
use super::{Prompt, PromptError, shorten};

/// One chunk: a prompt that fits, and where its phrases sit in the original prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptChunk {
    /// The chunk's phrases as a prompt of their own.
    pub prompt: Prompt,
    /// `phrase_indices[k]` is the original index of the chunk's phrase `k`.
    pub phrase_indices: Vec<usize>,
}

/// A prompt split into chunks that each fit the text encoder; every phrase is in exactly one
/// chunk, in the original order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkedPrompt {
    chunks: Vec<PromptChunk>,
    num_phrases: usize,
}

impl ChunkedPrompt {
    pub fn chunks(&self) -> &[PromptChunk] {
        &self.chunks
    }

    /// Number of chunks (1 when the prompt fits as it is).
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Number of phrases of the original prompt.
    pub fn num_phrases(&self) -> usize {
        self.num_phrases
    }

    /// Puts per-phrase values computed chunk by chunk (`per_chunk[c][k]` for phrase `k` of chunk
    /// `c`) back in the original phrase order. `None` if the shapes do not match the chunks.
    pub fn merge<T>(&self, per_chunk: Vec<Vec<T>>) -> Option<Vec<T>> {
        if per_chunk.len() != self.chunks.len() {
            return None;
        }
        let mut merged: Vec<Option<T>> = (0..self.num_phrases).map(|_| None).collect();
        for (chunk, values) in self.chunks.iter().zip(per_chunk) {
            if values.len() != chunk.phrase_indices.len() {
                return None;
            }
            for (&original, value) in chunk.phrase_indices.iter().zip(values) {
                *merged.get_mut(original)? = Some(value);
            }
        }
        merged.into_iter().collect()
    }
}

/// Splits `prompt` into consecutive chunks whose tokenised captions have at most `max_tokens`
/// tokens (special tokens included), filling each chunk greedily. Fails when a single phrase
/// cannot fit on its own (the error names the phrase and its token count), or with
/// [`PromptError::NoTokens`] naming every phrase that tokenises to nothing.
pub fn chunk_prompt(
    prompt: &Prompt,
    tokenizer: &TextTokenizer,
    max_tokens: usize,
) -> Result<ChunkedPrompt, PromptError> {
    let phrases = prompt.phrases();
    let too_long = |phrase: &str, tokens: usize, needed: usize| PromptError::PhraseTooLong {
        phrase: shorten(phrase, 40),
        tokens,
        needed,
        max_tokens,
    };
    // A caption costs its special tokens plus, per phrase, the phrase's tokens and its " .".
    // WordPiece splits at spaces and punctuation, so these costs add up; each chunk is still
    // checked with the real tokenizer below.
    let special = tokenizer.encode("")?.len();
    let mut costs = Vec::with_capacity(phrases.len());
    for phrase in phrases {
        let phrase_tokens = tokenizer.encode(phrase)?.len().saturating_sub(special);
        let needed = special + phrase_tokens + 1;
        if needed > max_tokens {
            return Err(too_long(phrase, phrase_tokens, needed));
        }
        costs.push(phrase_tokens + 1);
    }

    let mut chunks = Vec::new();
    let mut tokenless = Vec::new();
    let mut start = 0;
    while start < phrases.len() {
        let mut end = start;
        let mut total = special;
        while end < phrases.len() && total + costs[end] <= max_tokens {
            total += costs[end];
            end += 1;
        }
        end = end.max(start + 1);
        // Confirm with the tokenizer; hand phrases on to the next chunk if it disagrees.
        loop {
            let chunk = Prompt::new(&phrases[start..end])?;
            let encoded = tokenizer.encode(&chunk.caption())?;
            let tokens = encoded.len();
            if tokens <= max_tokens {
                let map = PositiveMap::from_prompt(&encoded, &chunk);
                tokenless
                    .extend(map.phrases_without_tokens().into_iter().map(|local| &phrases[start + local]));
                chunks.push(PromptChunk { prompt: chunk, phrase_indices: (start..end).collect() });
                break;
            }
            if end == start + 1 {
                let phrase = &phrases[start];
                return Err(too_long(phrase, tokens.saturating_sub(special + 1), tokens));
            }
            end -= 1;
        }
        start = end;
    }
    if !tokenless.is_empty() {
        return Err(PromptError::NoTokens { phrases: tokenless.into_iter().cloned().collect() });
    }
    Ok(ChunkedPrompt { chunks, num_phrases: phrases.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::MAX_TEXT_LEN;
    use crate::prompt::tokenizer::fixture_tokenizer;

    /// Distinct phrases of 1–3 words, some split into several word pieces.
    fn many_phrases(n: usize) -> Vec<String> {
        let words = ["cat", "remote", "control", "traffic", "light", "hydrant", "pneumonia", "zebra"];
        (0..n)
            .map(|i| {
                let a = words[i % words.len()];
                let b = words[(i / words.len()) % words.len()];
                format!("{a} {b} number {i}")
            })
            .collect()
    }

    #[test]
    fn a_prompt_that_fits_is_one_chunk() {
        let prompt = Prompt::new(["cat", "remote control"]).unwrap();
        let chunked = chunk_prompt(&prompt, &fixture_tokenizer(), MAX_TEXT_LEN).unwrap();
        assert_eq!(chunked.len(), 1);
        assert_eq!(chunked.chunks()[0].prompt, prompt);
        assert_eq!(chunked.chunks()[0].phrase_indices, [0, 1]);
    }

    #[test]
    fn five_hundred_phrases_chunk_without_loss() {
        let tokenizer = fixture_tokenizer();
        let prompt = Prompt::new(many_phrases(500)).unwrap();
        assert!(tokenizer.encode(&prompt.caption()).unwrap().len() > MAX_TEXT_LEN);
        let chunked = chunk_prompt(&prompt, &tokenizer, MAX_TEXT_LEN).unwrap();
        assert!(chunked.len() > 1);
        let mut seen = Vec::new();
        for chunk in chunked.chunks() {
            let tokens = tokenizer.encode(&chunk.prompt.caption()).unwrap().len();
            assert!(tokens <= MAX_TEXT_LEN, "chunk of {tokens} tokens");
            for (local, phrase) in chunk.prompt.phrases().iter().enumerate() {
                let original = chunk.phrase_indices[local];
                assert_eq!(phrase, &prompt.phrases()[original]);
                seen.push(original);
            }
        }
        assert_eq!(seen, (0..500).collect::<Vec<_>>(), "every phrase once, in order");
        // Greedy filling: adding the next chunk's first phrase would overflow.
        for pair in chunked.chunks().windows(2) {
            let mut phrases = pair[0].prompt.phrases().to_vec();
            phrases.push(pair[1].prompt.phrases()[0].clone());
            let grown = Prompt::new(phrases).unwrap().caption();
            assert!(tokenizer.encode(&grown).unwrap().len() > MAX_TEXT_LEN);
        }
    }

    #[test]
    fn merge_restores_the_original_order() {
        let tokenizer = fixture_tokenizer();
        let prompt = Prompt::new(many_phrases(120)).unwrap();
        let chunked = chunk_prompt(&prompt, &tokenizer, 64).unwrap();
        assert!(chunked.len() > 2);
        let per_chunk: Vec<Vec<String>> =
            chunked.chunks().iter().map(|c| c.prompt.phrases().to_vec()).collect();
        assert_eq!(chunked.merge(per_chunk).unwrap(), prompt.phrases());
        assert_eq!(chunked.merge(vec![vec![0]]), None, "wrong shape");
    }

    #[test]
    fn phrases_without_tokens_are_named() {
        let tokenizer = fixture_tokenizer();
        let mut phrases = many_phrases(120);
        phrases.insert(3, "\u{200b}".into());
        phrases.push("\u{301}".into());
        let prompt = Prompt::new(&phrases).unwrap();
        // Small chunks, so the two phrases land in different chunks: both are still named.
        let err = chunk_prompt(&prompt, &tokenizer, 32).unwrap_err();
        assert_eq!(err, PromptError::NoTokens { phrases: vec!["\u{200b}".into(), "\u{301}".into()] });
        assert!(err.to_string().starts_with(r#"phrases "\u{200b}", "\u{301}" give no token"#), "{err}");
        assert!(chunk_prompt(&Prompt::new(&phrases[..3]).unwrap(), &tokenizer, 32).is_ok());
    }

    #[test]
    fn a_phrase_too_long_alone_is_an_error() {
        let tokenizer = fixture_tokenizer();
        let long = "very ".repeat(300);
        let prompt = Prompt::new(["cat", long.as_str()]).unwrap();
        let err = chunk_prompt(&prompt, &tokenizer, MAX_TEXT_LEN).unwrap_err();
        assert_eq!(
            err,
            PromptError::PhraseTooLong {
                phrase: format!("{}…", &long[..40]),
                tokens: 300,
                needed: 303,
                max_tokens: MAX_TEXT_LEN
            }
        );
        let message = err.to_string();
        assert!(message.contains("is 300 tokens") && message.contains("at most 256"), "{message}");
        // Exactly at the limit is fine: [CLS] + 253 + "." + [SEP].
        let fits = "very ".repeat(253);
        assert!(chunk_prompt(&Prompt::new([fits.as_str()]).unwrap(), &tokenizer, MAX_TEXT_LEN).is_ok());
    }
}
