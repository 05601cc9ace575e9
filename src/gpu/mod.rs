//! The only module that names wgpu, so API churn touches one place.
//!
//! - `context`: the device (adapter choice, WebGPU-baseline limits), the kernel set, `info`'s adapters
//! - `buffer`: labelled buffers, uploads and readbacks
//! - `kernel`: kernel definitions (each op declares its own)
//! - `pipelines`: every pipeline built once; each shader's binding table read from its WGSL; dispatches
//! - `recorder`: how ops record dispatches, binding buffers by the names the WGSL gives them
//! - `run`: submitting recorded plans; `timer`: profiling; `portability`: naga checks of every shader

pub mod batched;
mod buffer;
mod context;
pub mod kernel;
mod pipelines;
pub mod portability;
mod recorder;
mod run;
#[cfg(not(target_arch = "wasm32"))]
pub mod timer;

pub use buffer::{fits_window, models, with_models, Buffer};
#[cfg(not(target_arch = "wasm32"))]
pub use context::adapters;
pub use context::{
    describe, open_failure_hint, parse_backends, AdapterSummary, Context, GpuOptions, KernelSet,
};
pub use kernel::{KernelDef, Shader};
#[cfg(not(target_arch = "wasm32"))]
pub use pipelines::listing;
pub use pipelines::{reflect, BindingDesc, Dispatch, Pipelines, Slot};
pub use recorder::{DispatchBuilder, Recorder};
pub use run::Submission;

/// Bytes of a uniform window (WebGPU's baseline `max_uniform_buffer_binding_size`): kernels that read
/// small read-only tensors through `var<uniform>` declare them as `array<vec4<f32>, 4096>`.
pub const UNIFORM_WINDOW: u64 = 65536;
