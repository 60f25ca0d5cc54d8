//! glint-nn: the neural stages of grounded detection, on Burn.
//!
//! One folder per stage, as in `ARCHITECTURE.md`. Every stage with a PyTorch counterpart is
//! checked against it on fixtures (`crates/glint-nn/tests/`), and loads the Hugging Face
//! checkpoint's tensors under their own names through [`weights`], which reports every missing,
//! unexpected or mis-shaped tensor by name.

/// Feed-forward activations parsed from Hugging Face `hidden_act` names (shared by BERT and Swin).
pub mod activation;
/// Multi-scale deformable attention (on `grid_sample_2d`) for detection encoders and decoders.
pub mod attention;
/// Image backbones (Swin) turning pixel values into multi-scale feature maps.
pub mod backbone;
/// Assembled detectors (Grounding DINO), checkpoint directories and post-processing.
pub mod detector;
/// Bi-directional image–text cross-attention fusion with layer scale (Grounding DINO, GLIP).
pub mod fusion;
/// Detection heads (Grounding DINO) from backbone maps and text features to logits and boxes.
pub mod head;
/// Detection losses (focal, GIoU, BCE) and GLIP's ATSS assignment and loss.
pub mod loss;
/// Text encoders (BERT) turning prompt tokens into per-token features.
pub mod text;
/// Checkpoint loading (safetensors / `.pth`) with prefix selection, key remapping and full mismatch reports.
pub mod weights;
