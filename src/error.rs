//! One error type for the library. Every variant names the thing that is wrong and, where there is
//! one, the fix. The binary prints it and exits non-zero; nothing here panics on bad input.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no GPU adapter found{detail}.\n  Install a GPU driver, or a software Vulkan driver: \
         `apt-get install mesa-vulkan-drivers libvulkan1` (Mesa lavapipe).\n  \
         Pick one with --backend vulkan|gl|metal|dx12 or --adapter NAME (WGPU_BACKEND / WGPU_ADAPTER_NAME)."
    )]
    NoAdapter { detail: String },

    #[error("GPU: {what}: {msg}")]
    Gpu { what: String, msg: String },

    #[error("data file {path}: {msg}")]
    Data { path: PathBuf, msg: String },

    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },

    #[error("model: {0}")]
    Model(String),

    #[error("invalid setting: {0}")]
    Config(String),

    #[error(
        "training stopped: the loss became non-finite (NaN or Inf) in epoch {epoch}, by step {step}.\n  \
         Lower --lr, add a regularizer or a constraint, or check the data; the last good weights were not overwritten."
    )]
    NonFinite { epoch: usize, step: u64 },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn gpu(what: impl Into<String>, msg: impl std::fmt::Display) -> Self {
        Error::Gpu {
            what: what.into(),
            msg: msg.to_string(),
        }
    }
}
