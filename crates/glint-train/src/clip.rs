//! Gradient clipping by the global norm (PyTorch's `clip_grad_norm_`, as GLIP trains): every
//! gradient of the model is scaled by `min(1, max_norm / (‖g‖ + 1e-6))`, `‖g‖` the L2 norm of all
//! of them together, so the update keeps its direction.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// Clip the gradients of `module` held in `parts` (one set per learning-rate group) to a global
/// L2 norm of `max_norm`; returns the norm before clipping. No gradients: 0.
pub fn clip_grad_norm<M: Module>(module: &M, parts: &mut [GradientsParams], max_norm: f32) -> f32 {
    let mut squares = SquaredNorm { parts, sum: None };
    module.visit(&mut squares);
    let Some(sum) = squares.sum else { return 0.0 };
    let norm = sum.into_scalar::<f32>().sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        module.visit(&mut Scale { parts, scale });
    }
    norm
}

struct SquaredNorm<'a> {
    parts: &'a [GradientsParams],
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        for part in self.parts {
            if let Some(grad) = part.get::<D>(param.id) {
                let squares = grad.powi_scalar(2).sum();
                self.sum = Some(match self.sum.take() {
                    Some(sum) => sum + squares,
                    None => squares,
                });
            }
        }
    }
}

struct Scale<'a> {
    parts: &'a mut [GradientsParams],
    scale: f32,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        for part in self.parts.iter_mut() {
            if let Some(grad) = part.remove::<D>(param.id) {
                part.register(param.id, grad * self.scale);
            }
        }
    }
}
