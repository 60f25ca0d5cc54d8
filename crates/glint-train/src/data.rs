//! Training data: loading the configured sets, restricting them to chosen categories, mixing
//! them by weight, and turning each drawn image into a model input and its grounding target.
//!
//! Detection data become grounding data as GLIP trains on them: the caption of an image lists
//! the categories of its objects and randomly drawn other categories (negatives), shuffled, at
//! most `max_caption_categories` in all; each box's target is its category's tokens.
//!
//! Every step draws its images and augmentation from its own random stream, derived from the
//! seed and the step number alone, so a resumed run sees exactly the batches the original would
//! have seen.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use glint_core::prompt::{PositiveMap, TextTokenizer};
use glint_data::coco::{load_coco, write_coco};
use glint_data::dataset::category_prompt;
use glint_data::odvg::load_odvg;
use glint_data::preprocess::normalize;
use glint_data::synth::{Split, generate, load_categories};
use glint_data::{Category, Dataset, ImageTensor, Sample, load_image};
use glint_nn::loss::atss::GroundingTarget;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::TrainError;
use crate::config::{DataSource, TrainConfig};

/// One loaded annotation set.
#[derive(Debug, Clone)]
pub struct LoadedSet {
    pub dataset: Dataset,
    /// Detection data (captions are category lists, re-sampled per image) or grounding data.
    pub detection: bool,
    pub weight: f64,
    /// Where the images are (what file names in written ground truth are relative to).
    pub image_root: PathBuf,
}

/// Load (and for synthetic data, first generate) one source, keeping only the categories in
/// `keep` (names; `None` = all). Generated data goes to the source's `dir`.
pub fn load_source(source: &DataSource, keep: Option<&HashSet<String>>) -> Result<LoadedSet, TrainError> {
    let (dataset, detection, image_root) = match source {
        DataSource::Coco { annotations, images, .. } => {
            (load_coco(annotations, images)?, true, images.clone())
        }
        DataSource::Odvg { annotations, images, label_map, .. } => {
            (load_odvg(annotations, images, label_map.as_deref())?, label_map.is_some(), images.clone())
        }
        DataSource::Synth { dir, synth, split, .. } => {
            if !dir.join("categories.json").is_file() {
                generate(synth, dir, |_| {})?;
            }
            let images = dir.join("images");
            match split.as_str() {
                "train" | "val" => (load_coco(&dir.join(format!("{split}.json")), &images)?, true, images),
                "train_grounding" | "val_grounding" => {
                    let name = split.trim_end_matches("_grounding");
                    (load_odvg(&dir.join(format!("{name}.odvg.jsonl")), &images, None)?, false, images)
                }
                other => {
                    return Err(TrainError::config(
                        dir,
                        format!(
                            "unknown synthetic split \"{other}\" (train, val, train_grounding, val_grounding)"
                        ),
                    ));
                }
            }
        }
    };
    let dataset = match (keep, detection) {
        (Some(keep), true) => restrict_categories(dataset, keep)?,
        _ => dataset,
    };
    Ok(LoadedSet { dataset, detection, weight: source.weight(), image_root })
}

/// The category names to keep: the config's list, with `"base"` / `"novel"` expanded to the
/// base / novel categories of every synthetic source. `None` when the list is empty (keep all).
pub fn kept_categories(config: &TrainConfig) -> Result<Option<HashSet<String>>, TrainError> {
    if config.data.categories.is_empty() {
        return Ok(None);
    }
    let mut keep = HashSet::new();
    for name in &config.data.categories {
        let split = match name.as_str() {
            "base" => Split::Base,
            "novel" => Split::Novel,
            _ => {
                keep.insert(name.to_lowercase());
                continue;
            }
        };
        for source in config.data.train.iter().chain(&config.data.val) {
            if let DataSource::Synth { dir, synth, .. } = source {
                let categories = if dir.join("categories.json").is_file() {
                    load_categories(&dir.join("categories.json"))?
                } else {
                    synth.categories()
                };
                keep.extend(categories.into_iter().filter(|c| c.split == split).map(|c| c.name));
            }
        }
    }
    Ok(Some(keep))
}

/// A detection set with only the categories named in `keep`: their boxes, and a caption of
/// their names.
pub fn restrict_categories(mut dataset: Dataset, keep: &HashSet<String>) -> Result<Dataset, TrainError> {
    let kept: Vec<(usize, Category)> = dataset
        .categories
        .iter()
        .cloned()
        .enumerate()
        .filter(|(_, c)| keep.contains(&c.name.to_lowercase()))
        .collect();
    if kept.is_empty() {
        return Err(TrainError::Data(glint_data::DataError::Invalid(format!(
            "none of the categories {:?} is in the dataset",
            keep.iter().collect::<Vec<_>>()
        ))));
    }
    let new_index: HashMap<usize, usize> =
        kept.iter().enumerate().map(|(new, (old, _))| (*old, new)).collect();
    let categories: Vec<Category> = kept.into_iter().map(|(_, c)| c).collect();
    let (caption, phrases) = category_prompt(&categories)?;
    for sample in &mut dataset.samples {
        sample.caption = caption.clone();
        sample.phrases = phrases.clone();
        sample.regions.retain_mut(|r| match new_index.get(&r.phrase) {
            Some(&p) => {
                r.phrase = p;
                true
            }
            None => false,
        });
    }
    dataset.categories = categories;
    Ok(dataset)
}

/// Write a detection set's ground truth as COCO json (evaluation against restricted categories).
pub fn write_ground_truth(set: &LoadedSet, path: &Path) -> Result<(), TrainError> {
    write_coco(path, &set.image_root, &set.dataset.categories, &set.dataset.samples)?;
    Ok(())
}

/// The random stream of one step of a run.
pub fn step_rng(seed: u64, step: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step as u64);
    rng
}

/// Draw `count` (set, sample) pairs, each set with probability proportional to its weight.
pub fn draw(sets: &[LoadedSet], count: usize, rng: &mut impl Rng) -> Vec<(usize, usize)> {
    let total: f64 = sets.iter().map(|s| s.weight).sum();
    (0..count)
        .map(|_| {
            let mut pick = rng.random::<f64>() * total;
            let set = sets.iter().position(|s| {
                pick -= s.weight;
                pick < 0.0
            });
            let set = set.unwrap_or(sets.len() - 1);
            (set, rng.random_range(0..sets[set].dataset.samples.len()))
        })
        .collect()
}

/// One model input with its target.
#[derive(Debug, Clone)]
pub struct Example {
    pub image: ImageTensor,
    /// The caption's token ids (`[CLS] ... [SEP]`).
    pub ids: Vec<u32>,
    pub target: GroundingTarget,
}

/// Load, augment, caption and tokenise one sample; captions longer than `max_len` tokens (the
/// model's) lose negatives, then are cut.
pub fn make_example(
    sample: &Sample,
    detection: bool,
    config: &TrainConfig,
    tokenizer: &TextTokenizer,
    max_len: usize,
    rng: &mut impl Rng,
) -> Result<Example, TrainError> {
    let image = load_image(&sample.image_path)?;
    let (image, sample) = config.transforms.apply(image, sample.clone(), rng)?;
    let encode = |sample: &Sample| {
        tokenizer
            .encode(&sample.caption)
            .map_err(|source| TrainError::Prompt { context: sample.image_path.display().to_string(), source })
    };
    // Prompt tuning learns one prompt: the caption of all categories, as the sample has it.
    let (sample, tokens) = if detection && !config.prompt_tuning {
        // Fewer negatives until the caption fits the text encoder with every present category.
        let mut max_categories = config.data.max_caption_categories.min(sample.phrases.len());
        loop {
            let captioned = sample_caption(&sample, max_categories, rng)?;
            let tokens = encode(&captioned)?;
            let present = captioned.regions.iter().map(|r| r.phrase).collect::<HashSet<_>>().len();
            if tokens.len() <= max_len || max_categories <= present {
                break (captioned, tokens);
            }
            max_categories = (max_categories - 1).max(present);
        }
    } else {
        let tokens = encode(&sample)?;
        (sample, tokens)
    };
    let num_tokens = tokens.len().min(max_len);
    let mut ids = tokens.ids().to_vec();
    ids.truncate(num_tokens);
    let regions: Vec<_> = sample.regions.iter().filter(|r| !r.iscrowd).collect();
    let spans: Vec<&[std::ops::Range<usize>]> = regions
        .iter()
        .map(|r| sample.phrases.get(r.phrase).map_or(&[][..], |p| p.spans.as_slice()))
        .collect();
    let map = PositiveMap::from_spans(&tokens, &spans);
    let mut boxes = Vec::new();
    let mut token_maps = Vec::new();
    for (i, region) in regions.iter().enumerate() {
        let tokens: Vec<usize> = map.tokens(i).iter().copied().filter(|&t| t < num_tokens).collect();
        // A box whose phrase was cut off (or tokenises to nothing) cannot be a positive.
        if tokens.is_empty() || !region.bbox.is_valid() {
            continue;
        }
        let mut row = vec![0.0; num_tokens];
        for t in tokens {
            row[t] = 1.0;
        }
        boxes.push(region.bbox);
        token_maps.push(row);
    }
    let p = &config.preprocess;
    Ok(Example {
        image: normalize(&image, p.channel_order, p.mean, p.std),
        ids,
        target: GroundingTarget { boxes, token_maps, num_tokens },
    })
}

/// GLIP's caption for detection data: the image's categories plus negatives, shuffled, at most
/// `max_categories` (but never fewer than the image's own categories).
pub fn sample_caption(
    sample: &Sample,
    max_categories: usize,
    rng: &mut impl Rng,
) -> Result<Sample, TrainError> {
    let present: HashSet<usize> = sample.regions.iter().map(|r| r.phrase).collect();
    let mut negatives: Vec<usize> = (0..sample.phrases.len()).filter(|p| !present.contains(p)).collect();
    negatives.shuffle(rng);
    negatives.truncate(max_categories.saturating_sub(present.len()));
    let mut chosen: Vec<usize> = present.into_iter().chain(negatives).collect();
    chosen.sort_unstable();
    chosen.shuffle(rng);
    let categories: Vec<Category> = chosen
        .iter()
        .map(|&p| {
            let phrase = &sample.phrases[p];
            Category { id: phrase.category_id.unwrap_or(p as u64), name: phrase.text.clone() }
        })
        .collect();
    let (caption, phrases) = category_prompt(&categories)?;
    let position: HashMap<usize, usize> = chosen.iter().enumerate().map(|(new, &old)| (old, new)).collect();
    let mut out = sample.clone();
    out.caption = caption;
    out.phrases = phrases;
    for region in &mut out.regions {
        region.phrase = position[&region.phrase];
    }
    Ok(out)
}
