//! Detection heads: from backbone maps and text features to region–token logits and boxes.
//!
//! - [`grounding_dino`]: feature enhancer, language-guided query selection, cross-modality
//!   decoder and contrastive head of Grounding DINO.

pub mod grounding_dino;
