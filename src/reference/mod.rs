//! CPU twins of every shader: plain loops, no wgpu, f64 arithmetic (the optimizer twin works in f32,
//! as Keras' float32 update does). Tests run the GPU kernels and these on the same random data of odd
//! sizes, and check these gradients by finite differences. Also a whole-model twin (forward, backward,
//! one optimizer step) used to cross-check the trainer.

pub mod layers;
pub mod model;
pub mod optim;

pub use layers::*;
pub use model::*;
pub use optim::*;
