//! COCO AP of a GLIP or Grounding DINO model on a detection set: every image is prompted with
//! all the set's categories, detections become COCO results, and glint-core's COCO evaluation
//! (pycocotools' numbers) scores them against the set's ground truth file.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use glint_core::detection::{CocoResult, Detection};
use glint_core::eval::{EvalReport, evaluate_bbox_results};
use glint_core::prompt::{EncodedPrompt, Prompt, TextTokenizer};
use glint_data::batch::pad_batch_divisible;
use glint_data::preprocess::{ImageTensor, PreprocessConfig, PreprocessedImage};
use glint_data::{Dataset, load_image};
use glint_nn::detector::glip::{Glip, GlipDetectOptions, GlipText, InputFrame};
use glint_nn::detector::grounding_dino::{DetectOptions, GroundingDino, TextBatch, batch_detections};
use image::RgbImage;

use crate::TrainError;

/// Preprocessed images as one padded `[B, 3, H, W]` model input and their frames.
pub fn glip_input(
    images: &[PreprocessedImage],
    divisibility: usize,
    device: &Device,
) -> Result<(Tensor<4>, Vec<InputFrame>), glint_data::DataError> {
    let batch = pad_batch_divisible(images.iter().map(|p| &p.tensor), divisibility)?;
    let pixels =
        Tensor::from_data(TensorData::new(batch.data, [batch.batch, 3, batch.height, batch.width]), device);
    let frames = images
        .iter()
        .map(|p| {
            let (o, r) = (p.original_size, p.resized_size);
            InputFrame {
                original: [o.width as f32, o.height as f32],
                scale: [o.width as f32 / r.width.max(1) as f32, o.height as f32 / r.height.max(1) as f32],
            }
        })
        .collect();
    Ok((pixels, frames))
}

/// Detect every category of `dataset` in each of its images with `detect` (images, the prompt
/// of all categories → detections per image): the detections as COCO results. `progress` gets
/// the number of images done.
pub fn detect_dataset(
    dataset: &Dataset,
    batch_size: usize,
    mut detect: impl FnMut(&[RgbImage], &Prompt) -> Result<Vec<Vec<Detection>>, TrainError>,
    mut progress: impl FnMut(usize),
) -> Result<Vec<CocoResult>, TrainError> {
    let names: Vec<&str> = dataset.categories.iter().map(|c| c.name.as_str()).collect();
    let prompt = Prompt::new(names)
        .map_err(|source| TrainError::Prompt { context: "the dataset's categories".into(), source })?;
    let mut results = Vec::new();
    let mut done = 0;
    for chunk in dataset.samples.chunks(batch_size.max(1)) {
        let images = chunk.iter().map(|s| load_image(&s.image_path)).collect::<Result<Vec<_>, _>>()?;
        let found = detect(&images, &prompt)?;
        for (sample, detections) in chunk.iter().zip(found) {
            results.extend(
                detections.iter().map(|d| d.to_coco(sample.image_id, dataset.categories[d.phrase_index].id)),
            );
        }
        done += chunk.len();
        progress(done);
    }
    Ok(results)
}

/// [`detect_dataset`], scored against the COCO file `ground_truth`.
pub fn evaluate_with(
    dataset: &Dataset,
    ground_truth: &Path,
    batch_size: usize,
    detect: impl FnMut(&[RgbImage], &Prompt) -> Result<Vec<Vec<Detection>>, TrainError>,
    progress: impl FnMut(usize),
) -> Result<EvalReport, TrainError> {
    let results = detect_dataset(dataset, batch_size, detect, progress)?;
    Ok(evaluate_bbox_results(ground_truth, &results)?)
}

/// [`evaluate_with`] a GLIP model in training (GLIP's default post-processing).
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &Glip,
    dataset: &Dataset,
    ground_truth: &Path,
    preprocess: &PreprocessConfig,
    tokenizer: &TextTokenizer,
    batch_size: usize,
    device: &Device,
    progress: impl FnMut(usize),
) -> Result<EvalReport, TrainError> {
    let results = detect_glip(model, dataset, preprocess, tokenizer, batch_size, device, progress)?;
    Ok(evaluate_bbox_results(ground_truth, &results)?)
}

/// [`detect_dataset`] with a GLIP model (GLIP's default post-processing).
pub fn detect_glip(
    model: &Glip,
    dataset: &Dataset,
    preprocess: &PreprocessConfig,
    tokenizer: &TextTokenizer,
    batch_size: usize,
    device: &Device,
    progress: impl FnMut(usize),
) -> Result<Vec<CocoResult>, TrainError> {
    let options = GlipDetectOptions::default();
    let detect = |images: &[RgbImage], prompt: &Prompt| {
        model.check_prompt(&prompt.caption())?;
        let encoded = encode_categories(tokenizer, prompt, model.config.max_text_len)?;
        let ids = encoded.tokens.ids();
        let preprocessed =
            images.iter().map(|image| preprocess.preprocess(image)).collect::<Result<Vec<_>, _>>()?;
        let (pixels, frames) = glip_input(&preprocessed, model.config.size_divisibility(), device)?;
        let text = GlipText::new(&vec![ids; frames.len()], device);
        let output = model.forward(pixels, &text)?;
        Ok(model.detections(&output, &frames, &encoded.positive_map, prompt.phrases(), &options))
    };
    detect_dataset(dataset, batch_size, detect, progress)
}

/// [`evaluate_with`] a Grounding DINO model: every query with its best phrase (no thresholds,
/// no NMS), at most 100 per image, as COCO evaluation counts them.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_grounding_dino(
    model: &GroundingDino,
    dataset: &Dataset,
    ground_truth: &Path,
    preprocess: &PreprocessConfig,
    tokenizer: &TextTokenizer,
    batch_size: usize,
    device: &Device,
    progress: impl FnMut(usize),
) -> Result<EvalReport, TrainError> {
    let options =
        DetectOptions { box_threshold: 0.0, text_threshold: 0.0, nms_iou: None, max_detections: 100 };
    let detect = |images: &[RgbImage], prompt: &Prompt| {
        let encoded = encode_categories(tokenizer, prompt, model.config().max_text_len)?;
        let ids = encoded.tokens.ids();
        let preprocessed =
            images.iter().map(|image| preprocess.preprocess(image)).collect::<Result<Vec<_>, _>>()?;
        let tensors: Vec<Tensor<3>> = preprocessed.iter().map(|p| image_tensor(&p.tensor, device)).collect();
        let sizes: Vec<[f32; 2]> = preprocessed
            .iter()
            .map(|p| [p.original_size.width as f32, p.original_size.height as f32])
            .collect();
        let text = TextBatch::new(&vec![ids; images.len()], tokenizer.delimiter_ids(), device);
        let output = model.forward(&tensors, &text)?;
        Ok(batch_detections(
            &output.head,
            ids.len(),
            &encoded.positive_map,
            prompt.phrases(),
            &sizes,
            &options,
        ))
    };
    evaluate_with(dataset, ground_truth, batch_size, detect, progress)
}

/// One image as a `[3, h, w]` model input.
pub(crate) fn image_tensor(image: &ImageTensor, device: &Device) -> Tensor<3> {
    Tensor::from_data(TensorData::new(image.data.clone(), [3, image.height, image.width]), device)
}

/// The prompt of a dataset's categories, tokenised; an error when it is longer than the model's
/// `max_len` tokens.
fn encode_categories(
    tokenizer: &TextTokenizer,
    prompt: &Prompt,
    max_len: usize,
) -> Result<EncodedPrompt, TrainError> {
    let encoded = tokenizer
        .encode_prompt(prompt)
        .map_err(|source| TrainError::Prompt { context: "the dataset's categories".into(), source })?;
    let len = encoded.tokens.len();
    if len > max_len {
        return Err(TrainError::Detection(format!(
            "the prompt of the dataset's categories is {len} tokens, more than the model's {max_len}"
        )));
    }
    Ok(encoded)
}
