//! Backbone pretraining on box crops: before a GLIP model trained from scratch starts its
//! grounding training, its image backbone learns to tell the training categories apart as a
//! classifier of square crops around the training boxes (a linear layer on the last map, mean
//! pooled): the same idea as starting a detector from ImageNet weights, for data no public
//! backbone was trained on.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use glint_data::load_image;
use glint_data::preprocess::{PreprocessConfig, normalize};
use glint_nn::detector::glip::GlipBackbone;
use image::{Rgb, RgbImage};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::config::{Decay, ScheduleConfig};
use crate::data::{LoadedSet, step_rng};

/// `[backbone_pretraining]` of a training config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackbonePretraining {
    pub steps: usize,
    /// Crops per step.
    pub batch_size: usize,
    /// Side of the square crops, in pixels.
    pub crop_size: u32,
    /// A crop's side is this many times its box's longer side (some background around it).
    pub context: f32,
    /// Peak learning rate (warm-up, then cosine), AdamW.
    pub lr: f64,
    pub weight_decay: f32,
}

impl Default for BackbonePretraining {
    fn default() -> Self {
        Self { steps: 1000, batch_size: 64, crop_size: 64, context: 1.25, lr: 2e-3, weight_decay: 1e-4 }
    }
}

impl BackbonePretraining {
    pub fn validate(&self) -> Result<(), String> {
        if self.steps == 0 || self.batch_size == 0 || self.crop_size < 32 {
            return Err(
                "backbone_pretraining: steps and batch_size must be positive, crop_size at least 32".into()
            );
        }
        if !(self.context >= 1.0 && self.lr > 0.0) {
            return Err("backbone_pretraining: context must be at least 1 and lr positive".into());
        }
        Ok(())
    }
}

/// One pretraining step's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainStep {
    pub pretrain_step: usize,
    pub loss: f32,
    /// Fraction of the step's crops classified right.
    pub accuracy: f32,
    pub lr: f64,
}

/// The backbone with a linear classifier on its last map.
#[derive(Module, Debug)]
struct CropClassifier {
    backbone: GlipBackbone,
    classifier: Linear,
}

impl CropClassifier {
    fn forward(&self, crops: Tensor<4>) -> Result<Tensor<2>, TrainError> {
        let maps = self.backbone.forward(crops).map_err(glint_nn::detector::glip::GlipError::from)?;
        let last = maps.into_iter().last().expect("a backbone returns at least one map");
        let [batch, channels, _, _] = last.dims();
        Ok(self.classifier.forward(last.mean_dims(&[2, 3]).reshape([batch, channels])))
    }
}

/// Pretrain `backbone` (whose last map has `channels` channels) on crops of the boxes of the
/// detection sets `sets`; every step's crops come from `(seed, step)`. Returns the trained
/// backbone; `on_step` sees each step.
pub fn pretrain_backbone(
    backbone: GlipBackbone,
    channels: usize,
    sets: &[LoadedSet],
    config: &BackbonePretraining,
    preprocess: &PreprocessConfig,
    seed: u64,
    device: &Device,
    mut on_step: impl FnMut(&PretrainStep),
) -> Result<GlipBackbone, TrainError> {
    // One label space over the sets: category names.
    let mut names: Vec<String> = Vec::new();
    let mut boxes = Vec::new(); // (set, sample, region, label)
    for (s, set) in sets.iter().enumerate() {
        if !set.detection {
            continue;
        }
        for (i, sample) in set.dataset.samples.iter().enumerate() {
            for (r, region) in sample.regions.iter().enumerate() {
                let Some(name) = set.dataset.categories.get(region.phrase).map(|c| c.name.to_lowercase())
                else {
                    continue;
                };
                if region.iscrowd || !region.bbox.is_valid() {
                    continue;
                }
                let label = names.iter().position(|n| *n == name).unwrap_or_else(|| {
                    names.push(name);
                    names.len() - 1
                });
                boxes.push((s, i, r, label));
            }
        }
    }
    if names.len() < 2 {
        return Err(TrainError::Detection(
            "backbone_pretraining needs detection data with boxes of at least two categories".into(),
        ));
    }
    device.seed(seed ^ 0x5052_4554);
    let mut model =
        CropClassifier { backbone, classifier: LinearConfig::new(channels, names.len()).init(device) };
    let mut optimizer = AdamWConfig::new().with_weight_decay(config.weight_decay).init();
    let schedule = ScheduleConfig {
        warmup_steps: config.steps / 20,
        warmup_factor: 0.1,
        decay: Decay::Cosine { min_factor: 0.05 },
    };
    let size = config.crop_size as usize;
    for step in 0..config.steps {
        // Its own stream, apart from the grounding steps'.
        let mut rng = step_rng(seed ^ 0x5052_4554, step);
        let mut pixels = Vec::with_capacity(config.batch_size * 3 * size * size);
        let mut labels = Vec::with_capacity(config.batch_size);
        for _ in 0..config.batch_size {
            let (s, i, r, label) = boxes[rng.random_range(0..boxes.len())];
            let sample = &sets[s].dataset.samples[i];
            let image = load_image(&sample.image_path)?;
            let crop = crop_around(&image, sample.regions[r].bbox, config, &mut rng);
            let p = preprocess;
            pixels.extend(normalize(&crop, p.channel_order, p.mean, p.std).data);
            labels.push(label as i64);
        }
        let batch = labels.len();
        let crops = Tensor::<4>::from_data(TensorData::new(pixels, [batch, 3, size, size]), device);
        let logits = model.forward(crops)?;
        let targets = Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [batch]), device);
        let picked = log_softmax(logits.clone(), 1).gather(1, targets.reshape([batch, 1]));
        let loss = picked.mean().neg();
        let predicted =
            logits.argmax(1).into_data().convert::<i64>().try_into_vec::<i64>().unwrap_or_default();
        let right = predicted.iter().zip(&labels).filter(|(p, l)| p == l).count();
        let loss_value = loss.clone().into_scalar::<f32>();
        if !loss_value.is_finite() {
            return Err(TrainError::Detection(format!(
                "backbone pretraining: the loss is {loss_value} at step {}",
                step + 1
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = config.lr * schedule.factor(step, config.steps);
        model = optimizer.step(lr, model, grads);
        on_step(&PretrainStep {
            pretrain_step: step + 1,
            loss: loss_value,
            accuracy: right as f32 / batch as f32,
            lr,
        });
    }
    Ok(model.backbone)
}

/// A square crop centred on `bbox` (jittered a little), `context` × its longer side, the outside
/// of the image filled grey; resized to `crop_size` and flipped half of the time.
fn crop_around(
    image: &RgbImage,
    bbox: glint_core::geometry::BoxXyxy,
    config: &BackbonePretraining,
    rng: &mut impl Rng,
) -> RgbImage {
    let longer = bbox.width().max(bbox.height());
    let side = (longer * config.context * rng.random_range(0.9..1.1)).max(8.0);
    let jitter = 0.05 * longer;
    let cx = (bbox.x0 + bbox.x1) / 2.0 + rng.random_range(-jitter..=jitter);
    let cy = (bbox.y0 + bbox.y1) / 2.0 + rng.random_range(-jitter..=jitter);
    let (x0, y0) = ((cx - side / 2.0).round() as i64, (cy - side / 2.0).round() as i64);
    let side = side.round() as u32;
    let mut canvas = RgbImage::from_pixel(side, side, Rgb([124, 116, 104]));
    image::imageops::overlay(&mut canvas, image, -x0, -y0);
    let mut crop = image::imageops::resize(
        &canvas,
        config.crop_size,
        config.crop_size,
        image::imageops::FilterType::Triangle,
    );
    if rng.random_bool(0.5) {
        image::imageops::flip_horizontal_in_place(&mut crop);
    }
    crop
}
