//! clampnet: train small convolutional networks on any GPU through wgpu, every kernel a WGSL compute
//! shader, with Keras' kernel regularizers folded into the Adam shader and Keras' constraints run as
//! fused passes after every step.
//!
//! Layout of the crate:
//! - [`gpu`]: the only module that talks to wgpu (context, pipelines, kernel table, uniforms)
//! - [`model`]: the sequential model description and its parameter table
//! - [`restrict`]: regularizers, constraints, presets
//! - [`config`]: model and training configuration files (TOML, Keras vocabulary)
//! - [`train`]: the GPU trainer
//! - [`reference`]: plain-Rust twins of every shader, used by the tests
//! - [`data`], [`checkpoint`]: IDX datasets and safetensors checkpoints in Keras layout

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod gpu;
pub mod model;
pub mod reference;
pub mod report;
pub mod restrict;
pub mod train;
pub mod viz;

pub use error::{Error, Result};
