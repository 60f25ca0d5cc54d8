//! Exemplar prompts through the high-level API: "find more of this" from marked boxes (GLIP
//! models; see [`glint_nn::detector::exemplar`] for how a box becomes a phrase).

use glint_core::detection::Detection;
use glint_core::geometry::BoxXyxy;
use glint_core::prompt::Prompt;
use glint_nn::detector::DetectOptions;
use glint_nn::detector::glip::GlipError;
use glint_train::exemplar::{detect_with_exemplars, embed_boxes, exemplar_text, prompt_ids};
use image::RgbImage;

use super::{Detector, DetectorError, Model};

/// One example of what to find: a box around one object, in its image's pixels.
#[derive(Debug, Clone)]
pub struct Exemplar {
    pub image: RgbImage,
    pub bbox: BoxXyxy,
    /// The phrase its detections carry.
    pub name: String,
}

impl Detector {
    /// Detect the prompt's phrases and the kinds of object the exemplars mark, in each image
    /// (GLIP models only), with no training. The exemplars are phrases after the prompt's, in
    /// order; without a prompt, only the exemplars are reported (the regions are fused with the
    /// neutral text "object"). The prompt must fit the text encoder in one pass.
    pub fn detect_with_exemplars(
        &self,
        images: &[RgbImage],
        prompt: Option<&Prompt>,
        exemplars: &[Exemplar],
        options: &DetectOptions,
    ) -> Result<Vec<Vec<Detection>>, DetectorError> {
        let failed = |e: glint_train::TrainError| DetectorError::Glip(GlipError::Invalid(e.to_string()));
        let Model::Glip(model) = &self.model else {
            let message = format!("{}: exemplar prompts need a GLIP model", self.dir.display());
            return Err(DetectorError::Glip(GlipError::Invalid(message)));
        };
        let text = exemplar_text(prompt);
        model.check_prompt(&text.caption())?;
        let ids = prompt_ids(model, &self.tokenizer, &text).map_err(failed)?;
        let boxes: Vec<(&RgbImage, BoxXyxy)> = exemplars.iter().map(|e| (&e.image, e.bbox)).collect();
        let embeddings = embed_boxes(model, &self.preprocess, &ids, &boxes, &self.device).map_err(failed)?;
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = exemplars.iter().map(|e| e.name.clone()).collect();
        let glip_options = super::glip_options(options);
        detect_with_exemplars(
            model,
            &self.preprocess,
            &self.tokenizer,
            images,
            &text,
            prompt.is_some(),
            &embeddings,
            &names,
            &glip_options,
            &self.device,
        )
        .map_err(failed)
    }
}
