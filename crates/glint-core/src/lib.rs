//! glint-core: the parts of grounded detection that need no tensors.
//!
//! - [`assignment`]: minimum-cost assignment (Hungarian matching), as scipy's
//!   `linear_sum_assignment`.
//! - [`geometry`]: boxes (xyxy / cxcywh, pixel or normalised), IoU, GIoU, NMS.
//! - [`prompt`]: prompts as phrase lists, captions, tokenisation, positive maps, the
//!   sub-sentence text mask and chunking of long prompts.
//! - [`detection`]: detections (box, score, phrase) and COCO results files.
//! - [`eval`]: COCO bbox evaluation (the 12 standard numbers and per-category AP).
//! - [`io`]: atomic file writes, so nothing a user owns is left half-written.

pub mod assignment;
pub mod detection;
pub mod eval;
pub mod geometry;
pub mod io;
pub mod prompt;
