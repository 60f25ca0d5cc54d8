//! Detection heads: from backbone maps and text features to region–token logits and boxes.
//!
//! - [`glip`]: GLIP's VL-DyHead tower and ATSS predictions with region–word alignment logits.
//!
//! - [`grounding_dino`]: feature enhancer, language-guided query selection, cross-modality
//!   decoder and contrastive head of Grounding DINO.

pub mod glip;
pub mod grounding_dino;
