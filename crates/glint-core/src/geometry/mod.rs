//! Boxes and the operations detection needs on them.

mod boxes;
mod iou;
mod nms;

pub use boxes::{BoxCxcywh, BoxXyxy};
pub use iou::{box_iou, generalized_box_iou, giou, iou};
pub use nms::{NmsOptions, batched_nms, nms};
