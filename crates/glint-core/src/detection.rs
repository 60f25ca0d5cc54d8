//! Detection results: what a detector returns for one image, and the COCO results-file record
//! that evaluation reads.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::geometry::{BoxXyxy, NmsOptions};

/// One detected box, tied to a phrase of the prompt.
///
/// JSON: `{"bbox": [x0, y0, x1, y1], "score": 0.87, "phrase": "cat", "phrase_index": 0}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The box in pixels of the original image (before any resizing).
    pub bbox: BoxXyxy,
    /// Confidence in `[0, 1]`.
    pub score: f32,
    /// The text of the phrase the box belongs to.
    pub phrase: String,
    /// Index of that phrase in the prompt's phrase list.
    pub phrase_index: usize,
}

impl Detection {
    /// The COCO results record for this detection on image `image_id`, labelled `category_id`.
    pub fn to_coco(&self, image_id: u64, category_id: u64) -> CocoResult {
        CocoResult { image_id, category_id, bbox: self.bbox.to_xywh(), score: self.score }
    }
}

/// Applies `options` to one image's detections, treating each phrase as a class: score
/// threshold, NMS, then the best `max_detections`, by decreasing score.
pub fn suppress_detections(detections: Vec<Detection>, options: &NmsOptions) -> Vec<Detection> {
    let boxes: Vec<BoxXyxy> = detections.iter().map(|d| d.bbox).collect();
    let scores: Vec<f32> = detections.iter().map(|d| d.score).collect();
    let phrases: Vec<usize> = detections.iter().map(|d| d.phrase_index).collect();
    let keep = options.select(&boxes, &scores, &phrases);
    let mut slots: Vec<Option<Detection>> = detections.into_iter().map(Some).collect();
    keep.into_iter().filter_map(|i| slots.get_mut(i).and_then(Option::take)).collect()
}

/// One record of a COCO results file (the format `pycocotools.COCO.loadRes` reads):
/// `{"image_id": 42, "category_id": 18, "bbox": [x, y, width, height], "score": 0.87}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoResult {
    pub image_id: u64,
    pub category_id: u64,
    /// `[x, y, width, height]` in pixels.
    pub bbox: [f32; 4],
    pub score: f32,
}

/// Reading or writing a results file failed; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("cannot read results file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("results file {} is not a JSON array of COCO results: {source}", path.display())]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot write results file {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// Reads a COCO results file: a JSON array of [`CocoResult`] records (extra keys are ignored).
pub fn read_coco_results(path: &Path) -> Result<Vec<CocoResult>, ResultsError> {
    let bytes =
        std::fs::read(path).map_err(|source| ResultsError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| ResultsError::Parse { path: path.to_path_buf(), source })
}

/// Writes a COCO results file (a JSON array, one record per line), atomically.
pub fn write_coco_results(path: &Path, results: &[CocoResult]) -> Result<(), ResultsError> {
    let mut text = String::from("[");
    for (i, record) in results.iter().enumerate() {
        text.push_str(if i == 0 { "\n" } else { ",\n" });
        let line = serde_json::to_string(record).map_err(|e| ResultsError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        text.push_str(&line);
    }
    text.push_str("\n]\n");
    crate::io::write_atomic(path, text.as_bytes())
        .map_err(|source| ResultsError::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(x0: f32, score: f32, phrase_index: usize) -> Detection {
        Detection {
            bbox: BoxXyxy::new(x0, 20.0, x0 + 30.0, 60.0),
            score,
            phrase: format!("p{phrase_index}"),
            phrase_index,
        }
    }

    #[test]
    fn detection_json_shape() {
        let d = Detection {
            bbox: BoxXyxy::new(1.0, 2.0, 3.5, 4.0),
            score: 0.5,
            phrase: "cat".into(),
            phrase_index: 0,
        };
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, r#"{"bbox":[1.0,2.0,3.5,4.0],"score":0.5,"phrase":"cat","phrase_index":0}"#);
        assert_eq!(serde_json::from_str::<Detection>(&json).unwrap(), d);
    }

    #[test]
    fn coco_record_is_xywh() {
        let d = Detection {
            bbox: BoxXyxy::new(10.0, 20.0, 40.0, 60.0),
            score: 0.25,
            phrase: "dog".into(),
            phrase_index: 3,
        };
        let r = d.to_coco(7, 18);
        assert_eq!(
            r,
            CocoResult { image_id: 7, category_id: 18, bbox: [10.0, 20.0, 30.0, 40.0], score: 0.25 }
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"image_id":7,"category_id":18,"bbox":[10.0,20.0,30.0,40.0],"score":0.25}"#
        );
    }

    #[test]
    fn results_file_round_trip_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        let records = vec![cat(0.0, 0.9, 0).to_coco(1, 1), cat(5.0, 0.125, 1).to_coco(2, 3)];
        write_coco_results(&path, &records).unwrap();
        assert_eq!(read_coco_results(&path).unwrap(), records);
        write_coco_results(&path, &[]).unwrap();
        assert!(read_coco_results(&path).unwrap().is_empty());

        let missing = dir.path().join("missing.json");
        let err = read_coco_results(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.json"), "{err}");
        std::fs::write(&path, "[{\"image_id\": 1}]").unwrap();
        let err = read_coco_results(&path).unwrap_err().to_string();
        assert!(err.contains("results.json") && err.contains("category_id"), "{err}");
    }

    #[test]
    fn suppression_is_per_phrase() {
        // Two overlapping boxes of phrase 0, one of phrase 1 on top of them, one below threshold.
        let dets = vec![cat(0.0, 0.8, 0), cat(2.0, 0.9, 0), cat(1.0, 0.7, 1), cat(100.0, 0.01, 0)];
        let kept = suppress_detections(dets.clone(), &NmsOptions::default());
        assert_eq!(kept, vec![dets[1].clone(), dets[2].clone()]);
        let agnostic = NmsOptions { class_agnostic: true, ..NmsOptions::default() };
        assert_eq!(suppress_detections(dets.clone(), &agnostic), vec![dets[1].clone()]);
    }
}
