//! K-shot splits on a hand-made detection dataset: exactly K instances per category when the data
//! allow (fewer when not), only chosen boxes kept, crowd boxes never, images that would overshoot
//! K skipped, and the same split for the same seed.

use std::path::PathBuf;

use glint_core::geometry::BoxXyxy;
use glint_data::dataset::category_prompt;
use glint_data::fewshot::k_shot;
use glint_data::{Category, Dataset, Region, Sample};

/// 40 images; image `i` holds `(i * 7 + c) % 4` boxes of category `c` (0 to 3), category 2
/// ("rare") only in images 0 and 1, and one crowd box of category 0 in every image.
fn dataset() -> Dataset {
    let categories: Vec<Category> = ["cat", "dog", "rare"]
        .iter()
        .enumerate()
        .map(|(i, name)| Category { id: i as u64 + 1, name: name.to_string() })
        .collect();
    let (caption, phrases) = category_prompt(&categories).unwrap();
    let samples = (0..40)
        .map(|i| {
            let mut regions = Vec::new();
            for c in 0..3 {
                let n = if c == 2 { usize::from(i < 2) } else { (i * 7 + c) % 4 };
                for j in 0..n {
                    let x = (10 * j + c * 40) as f32;
                    regions.push(Region {
                        bbox: BoxXyxy { x0: x, y0: 0.0, x1: x + 8.0, y1: 8.0 },
                        phrase: c,
                        iscrowd: false,
                        area: None,
                    });
                }
            }
            regions.push(Region {
                bbox: BoxXyxy { x0: 0.0, y0: 50.0, x1: 30.0, y1: 90.0 },
                phrase: 0,
                iscrowd: true,
                area: None,
            });
            Sample {
                image_path: PathBuf::from(format!("{i}.jpg")),
                image_id: i as u64,
                width: 200,
                height: 100,
                caption: caption.clone(),
                phrases: phrases.clone(),
                regions,
            }
        })
        .collect();
    Dataset { samples, categories, warnings: Vec::new() }
}

fn instances(split: &Dataset, category: usize) -> usize {
    split.samples.iter().flat_map(|s| &s.regions).filter(|r| r.phrase == category).count()
}

#[test]
fn each_category_gets_k_instances_when_the_data_allow() {
    let data = dataset();
    for k in [1, 3, 5, 10] {
        for seed in [3, 30, 300] {
            let split = k_shot(&data, k, seed);
            assert_eq!(split.counts, vec![k, k, k.min(2)], "k {k}, seed {seed}");
            for c in 0..3 {
                assert_eq!(instances(&split.dataset, c), split.counts[c], "k {k}, seed {seed}, category {c}");
            }
            for sample in &split.dataset.samples {
                let original = &data.samples[sample.image_id as usize];
                assert!(sample.regions.iter().all(|r| !r.iscrowd && original.regions.contains(r)));
                // An image chosen for a category brings all its instances of it, never more than k.
                for c in 0..3 {
                    let chosen = sample.regions.iter().filter(|r| r.phrase == c).count();
                    let all = original.regions.iter().filter(|r| r.phrase == c && !r.iscrowd).count();
                    assert!(chosen == 0 || (chosen == all && chosen <= k), "image {}", sample.image_id);
                }
            }
            let ids: Vec<u64> = split.dataset.samples.iter().map(|s| s.image_id).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "in dataset order: {ids:?}");
        }
    }
}

#[test]
fn a_seed_gives_one_split_and_other_seeds_others() {
    let data = dataset();
    assert_eq!(k_shot(&data, 5, 30), k_shot(&data, 5, 30));
    let images = |seed| k_shot(&data, 5, seed).dataset.samples.iter().map(|s| s.image_id).collect::<Vec<_>>();
    assert_ne!(images(3), images(30));
    assert_ne!(images(30), images(300));
}
