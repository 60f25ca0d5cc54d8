//! glint-data: everything between files on disk and a model's input.
//!
//! - [`sample`]: the one in-memory annotated-image type every loader produces.
//! - [`error`]: data errors, each naming the file (and record) at fault.
//! - [`image_io`]: decoding image files to upright 8-bit RGB, as PIL does.
//! - [`preprocess`]: resize + normalise exactly as Grounding DINO's (transformers) or GLIP's recipe.
//! - [`batch`]: padding images into one batch tensor with a pixel mask.
//! - [`fewshot`]: K-shot training splits (K instances per category, deterministic per seed).
//! - [`transforms`]: seeded training augmentation (resize, flip, crop) keeping boxes and spans consistent.

pub mod annotate;
pub mod batch;
pub mod coco;
pub mod dataset;
pub mod error;
pub mod fewshot;
pub mod hub;
pub mod image_io;
pub mod odvg;
pub mod preprocess;
pub mod sample;
pub mod synth;
pub mod transforms;

pub use batch::{ImageBatch, pad_batch};
pub use dataset::{Category, Dataset};
pub use error::DataError;
pub use image_io::{decode_image_bytes, load_image};
pub use preprocess::{ChannelOrder, ImageSize, ImageTensor, PreprocessConfig, PreprocessedImage, SizeRule};
pub use sample::{Phrase, Region, Sample};
pub use transforms::TrainTransforms;
