//! Exemplar prompts on a GLIP model: embed marked boxes, then detect their kinds beside (or
//! instead of) a text prompt's phrases. How a box becomes a phrase is in
//! [`glint_nn::detector::exemplar`]; this is the image and prompt plumbing around it.

use burn::tensor::Device;
use glint_core::detection::Detection;
use glint_core::geometry::BoxXyxy;
use glint_core::prompt::{EncodedPrompt, Prompt, TextTokenizer};
use glint_data::preprocess::PreprocessConfig;
use glint_nn::detector::exemplar::{ExemplarEmbedding, append_exemplar_logits, embed_exemplar};
use glint_nn::detector::glip::{Glip, GlipDetectOptions, GlipError, GlipText, InputFrame};
use glint_nn::head::glip::GlipHeadOutput;
use image::RgbImage;

use crate::TrainError;
use crate::evaluate::glip_input;

/// The text the regions are fused with when only exemplars are asked for.
pub const NEUTRAL_PROMPT: &str = "object";

/// The text a detection with exemplars is run with: the prompt, or the neutral one.
pub fn exemplar_text(prompt: Option<&Prompt>) -> Prompt {
    prompt.cloned().unwrap_or_else(|| Prompt::new([NEUTRAL_PROMPT]).expect("a valid prompt"))
}

/// The GLIP head's output on `images` prompted with the token ids `ids`, and the images' frames.
pub fn glip_output(
    model: &Glip,
    preprocess: &PreprocessConfig,
    images: &[RgbImage],
    ids: &[u32],
    device: &Device,
) -> Result<(GlipHeadOutput, Vec<InputFrame>), TrainError> {
    let preprocessed =
        images.iter().map(|image| preprocess.preprocess(image)).collect::<Result<Vec<_>, _>>()?;
    let (pixels, frames) = glip_input(&preprocessed, model.config.size_divisibility(), device)?;
    let text = GlipText::new(&vec![ids; images.len()], device);
    Ok((model.forward(pixels, &text)?, frames))
}

/// Embed each marked box (in its image's pixels), the model prompted with `ids`. An error
/// names the exemplar (1-based) whose box is not inside its image or matches no region.
pub fn embed_boxes(
    model: &Glip,
    preprocess: &PreprocessConfig,
    ids: &[u32],
    boxes: &[(&RgbImage, BoxXyxy)],
    device: &Device,
) -> Result<Vec<ExemplarEmbedding>, TrainError> {
    boxes
        .iter()
        .enumerate()
        .map(|(i, &(image, b))| {
            let (w, h) = (image.width() as f32, image.height() as f32);
            if !b.is_valid() || b.x0 < 0.0 || b.y0 < 0.0 || b.x1 > w || b.y1 > h {
                return Err(TrainError::Detection(format!(
                    "exemplar {}: the box {:?} is not a box inside its {w}×{h} image",
                    i + 1,
                    b.to_array()
                )));
            }
            let (output, frames) = glip_output(model, preprocess, std::slice::from_ref(image), ids, device)?;
            let [sx, sy] = frames[0].scale;
            embed_exemplar(&output, model.decode_boxes(&output), 0, b.scale(1.0 / sx, 1.0 / sy)).ok_or_else(
                || {
                    TrainError::Detection(format!(
                        "exemplar {}: no predicted box overlaps {:?}",
                        i + 1,
                        b.to_array()
                    ))
                },
            )
        })
        .collect()
}

/// Detect in each image the phrases of `text` (see [`exemplar_text`]) and, after them, one
/// phrase per exemplar, named by `names`. `text` must fit the model in one pass; without a
/// prompt of their own (`keep_text` false) the text's detections are dropped and the
/// exemplars' phrase indices start at 0.
#[allow(clippy::too_many_arguments)]
pub fn detect_with_exemplars(
    model: &Glip,
    preprocess: &PreprocessConfig,
    tokenizer: &TextTokenizer,
    images: &[RgbImage],
    text: &Prompt,
    keep_text: bool,
    exemplars: &[ExemplarEmbedding],
    names: &[String],
    options: &GlipDetectOptions,
    device: &Device,
) -> Result<Vec<Vec<Detection>>, TrainError> {
    let encoded = encode_in_one_pass(model, tokenizer, text)?;
    let (output, frames) = glip_output(model, preprocess, images, encoded.tokens.ids(), device)?;
    let output = append_exemplar_logits(output, exemplars);
    let map = encoded.positive_map.with_appended_phrases(exemplars.len());
    let phrases: Vec<String> = text.phrases().iter().cloned().chain(names.iter().cloned()).collect();
    let mut found = model.detections(&output, &frames, &map, &phrases, options);
    if !keep_text {
        let dropped = text.phrases().len();
        for detections in &mut found {
            detections.retain(|d| d.phrase_index >= dropped);
            detections.iter_mut().for_each(|d| d.phrase_index -= dropped);
        }
    }
    Ok(found)
}

/// The token ids of `text`, which must fit the model in one pass.
pub fn prompt_ids(model: &Glip, tokenizer: &TextTokenizer, text: &Prompt) -> Result<Vec<u32>, TrainError> {
    Ok(encode_in_one_pass(model, tokenizer, text)?.tokens.ids().to_vec())
}

/// `text` tokenised with its positive map; it must fit the model in one pass.
fn encode_in_one_pass(
    model: &Glip,
    tokenizer: &TextTokenizer,
    text: &Prompt,
) -> Result<EncodedPrompt, TrainError> {
    let encoded = tokenizer.encode_prompt(text).map_err(|source| prompt_error(text, source))?;
    let len = encoded.tokens.ids().len();
    if len > model.config.max_text_len {
        return Err(TrainError::Model(GlipError::Invalid(format!(
            "with exemplars the prompt must fit the text encoder in one pass: \"{}\" is {len} tokens, more than {}",
            text.caption(),
            model.config.max_text_len
        ))));
    }
    Ok(encoded)
}

fn prompt_error(text: &Prompt, source: glint_core::prompt::PromptError) -> TrainError {
    TrainError::Prompt { context: format!("prompt \"{}\"", text.caption()), source }
}
