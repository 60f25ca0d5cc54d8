//! K-shot training splits for few-shot detection: for every category, `K` annotated instances
//! drawn from a detection dataset, the same for the same seed on every machine.
//!
//! Per category, in category order: the images holding it are shuffled by a generator seeded
//! with `(seed, category index)` (so one category's draw does not depend on the others), then
//! taken in that order while they fit — an image whose instances of the category would overshoot
//! `K` is skipped — until `K` instances are in. This is the sampling of the few-shot detection
//! benchmarks (TFA, ODinW): exactly `K` instances per category when the data allow, fewer
//! (reported in [`KShotSplit::counts`]) when not. A chosen image keeps only the chosen
//! categories' boxes: instances of other categories in it are not annotated in the split, as in
//! those benchmarks. Crowd boxes are never counted or kept.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::dataset::Dataset;

/// A K-shot split of a detection dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct KShotSplit {
    /// The chosen images, in dataset order, each with only its chosen boxes.
    pub dataset: Dataset,
    /// Instances taken per category (its index in `dataset.categories`): `k`, or fewer when
    /// the data hold fewer that fit.
    pub counts: Vec<usize>,
}

/// Draw `k` instances of every category of `dataset` (a detection dataset: phrase `i` of every
/// sample is category `i`) with `seed`.
pub fn k_shot(dataset: &Dataset, k: usize, seed: u64) -> KShotSplit {
    // (sample index) -> the indices of its regions that are kept.
    let mut kept: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut counts = Vec::with_capacity(dataset.categories.len());
    for category in 0..dataset.categories.len() {
        let regions_of = |s: usize| -> Vec<usize> {
            let sample = &dataset.samples[s];
            (0..sample.regions.len())
                .filter(|&r| sample.regions[r].phrase == category && !sample.regions[r].iscrowd)
                .collect()
        };
        let mut candidates: Vec<usize> =
            (0..dataset.samples.len()).filter(|&s| !regions_of(s).is_empty()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (category as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        candidates.shuffle(&mut rng);
        let mut taken = 0;
        for s in candidates {
            if taken == k {
                break;
            }
            let regions = regions_of(s);
            if taken + regions.len() <= k {
                taken += regions.len();
                kept.entry(s).or_default().extend(regions);
            }
        }
        counts.push(taken);
    }
    let samples = kept
        .into_iter()
        .map(|(s, mut regions)| {
            regions.sort_unstable();
            let mut sample = dataset.samples[s].clone();
            sample.regions = regions.into_iter().map(|r| dataset.samples[s].regions[r]).collect();
            sample
        })
        .collect();
    KShotSplit {
        dataset: Dataset { samples, categories: dataset.categories.clone(), warnings: Vec::new() },
        counts,
    }
}
