//! glint: grounded, open-vocabulary object detection.
//!
//! A prompt is a list of phrases; a detector scores each region against the prompt's tokens, and
//! the positive map turns token scores into phrase scores. The crates behind glint are
//! re-exported: [`core`] (geometry, prompts and positive maps, detections, COCO evaluation),
//! [`data`] (datasets, the synthetic set, image decoding and preprocessing, transforms),
//! [`nn`] (the neural stages on Burn, and checkpoint loading) and [`train`] (training GLIP,
//! checkpoints, evaluation).
//!
//! ```
//! use glint::core::prompt::{PhraseReduction, Prompt, TextTokenizer, phrase_scores};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let prompt = Prompt::parse("Cat. remote  control")?;
//! assert_eq!(prompt.caption(), "cat . remote control .");
//!
//! let tokenizer = TextTokenizer::from_file("tests/fixtures/tokenizer/tokenizer.json")?;
//! let encoded = tokenizer.encode_prompt(&prompt)?;
//! // [CLS] cat . remote control . [SEP]: "remote control" covers tokens 3 and 4.
//! assert_eq!(encoded.positive_map.tokens(1), &[3, 4]);
//!
//! // One region's token probabilities, as a detector head would give them.
//! let token_probs = [0.0, 0.1, 0.0, 0.7, 0.9, 0.0, 0.0];
//! let scores = phrase_scores(&token_probs, &encoded.positive_map, PhraseReduction::Max);
//! assert_eq!(scores, vec![0.1, 0.9]);
//! # Ok(())
//! # }
//! ```

mod detector;
pub mod device;

pub use burn::tensor::Device;
pub use detector::{Detector, DetectorError, Exemplar, GROUNDING_DINO_FILES, Model, Profile};
pub use glint_core as core;
pub use glint_data as data;
pub use glint_nn as nn;
pub use glint_train as train;
