//! CPU twins of every shader: plain loops, no wgpu, f64 arithmetic (the optimizer twin works in f32,
//! as Keras' float32 update does). Tests run the GPU kernels and these on the same random data of odd
//! sizes, and check these gradients by finite differences. Also a whole-model twin (forward, backward,
//! one optimizer step) used to cross-check the trainer.

pub mod activation;
pub mod batch_norm;
pub mod conv2d;
pub mod dense;
pub mod dropout;
pub mod loss;
pub mod model;
pub mod optim;
pub mod pool;

pub use activation::*;
pub use batch_norm::*;
pub use conv2d::*;
pub use dense::*;
pub use dropout::*;
pub use loss::*;
pub use model::*;
pub use optim::*;
pub use pool::*;

/// dL/dpre from dL/dy: relu'(pre) = 1 where y > 0, else 0 (relu'(0) = 0).
pub fn activation_backward(y: &[f64], dy: &[f64], relu: bool) -> Vec<f64> {
    y.iter()
        .zip(dy)
        .map(|(&y, &g)| if !relu || y > 0.0 { g } else { 0.0 })
        .collect()
}
