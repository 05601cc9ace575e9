//! clampnet: train small convolutional networks on any GPU through wgpu, every kernel a WGSL compute
//! shader, with Keras' kernel regularizers folded into the Adam shader and Keras' constraints run as
//! fused passes after every step.
//!
//! Layout of the crate:
//! - [`model`]: the model in Keras' vocabulary, its plan (shapes, the flat parameter table) and the
//!   rewrites that turn it into GPU ops (`model::fuse`)
//! - [`layers`]: one file per layer kind (and per fusion): settings, shapes, parameters, twin glue, and
//!   its GPU op (uniforms, kernels, grids, buffers, forward and backward recording)
//! - [`step`]: the training step in order (gather, forward, loss, backward, update, metrics) and the
//!   network on the GPU
//! - [`optim`]: the update prologue (penalties, clipping, weight decay), Adam, the constraint passes
//! - [`trainer`]: epochs, resumption, evaluation; [`infer`]: forward-only inference
//! - [`gpu`]: the only module that names wgpu (device, buffers, pipelines, recording, profiling)
//! - [`restrict`]: regularizers, constraints, presets; [`config`]: TOML configuration files
//! - [`reference`]: plain-Rust twins of every shader, used by the tests
//! - [`data`], [`checkpoint`]: IDX datasets and safetensors checkpoints in Keras layout

pub mod callbacks;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod files;
pub mod gpu;
#[cfg(not(target_arch = "wasm32"))]
pub mod group;
#[cfg(not(target_arch = "wasm32"))]
pub mod infer;
pub mod keras;
pub mod layers;
pub mod losses;
pub mod model;
pub mod optim;
pub mod reference;
pub mod report;
pub mod restrict;
pub mod step;
#[cfg(not(target_arch = "wasm32"))]
pub mod sweep;
pub mod trainer;
#[cfg(not(target_arch = "wasm32"))]
pub mod viz;

pub use error::{Error, Result};
