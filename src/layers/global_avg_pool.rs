//! GlobalAveragePooling2D: the mean of each channel over the whole image, (H, W, C) -> (C), or (1, 1, C) with
//! `keepdims`. The op is `pool::PoolOp` with one window over the input (shaders/pool.wgsl); its
//! kernels are listed by `avg_pool`. Twin: `reference::pool`.

use serde::Deserialize;

use super::pool::global::{self, dims};
use super::pool::{Mode, PoolOp};
use super::{Build, Layer, Op, TwinForward};
use crate::error::Result;
use crate::gpu::KernelDef;
use crate::keras::{FromKeras, LayerConfig};
use crate::model::fuse::OpPlan;
use crate::model::{LayerPlan, Shape};
use crate::reference as twin;
use serde_json::{Map, Value};

/// Keras' `GlobalAveragePooling2D(keepdims)`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalAveragePooling2d {
    /// keep the output (1, 1, C) instead of (C)
    #[serde(default)]
    pub keepdims: bool,
}

impl GlobalAveragePooling2d {
    pub fn new() -> Self {
        GlobalAveragePooling2d { keepdims: false }
    }
}

/// Keras' `GlobalAveragePooling2D`: channels last.
impl FromKeras for GlobalAveragePooling2d {
    const CLASS: &'static str = "GlobalAveragePooling2D";

    fn from_keras(c: &LayerConfig) -> std::result::Result<Self, String> {
        Ok(GlobalAveragePooling2d {
            keepdims: global::from_keras(c)?,
        })
    }
}

impl Layer for GlobalAveragePooling2d {
    fn keras_name(&self) -> &'static str {
        "global_average_pooling2d"
    }

    fn keras_class(&self) -> &'static str {
        Self::CLASS
    }

    fn keras_config(&self, name: &str) -> Map<String, Value> {
        global::keras_config(name, self.keepdims)
    }

    fn output(&self, input: Shape, _last: bool) -> std::result::Result<Shape, String> {
        global::output("global_average_pooling2d", input, self.keepdims)
    }

    fn twin_forward(&self, l: &LayerPlan, batch: usize, x: &[f64], _w: &[&[f64]]) -> TwinForward {
        TwinForward {
            y: twin::avgpool_forward(&dims(l.input, batch), x),
            ..Default::default()
        }
    }

    fn twin_backward(
        &self,
        l: &LayerPlan,
        batch: usize,
        _x: &[f64],
        _w: &[&[f64]],
        _fwd: &TwinForward,
        dy: &[f64],
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        (Vec::new(), twin::avgpool_backward(&dims(l.input, batch), dy))
    }

    fn op(&self, plan: &OpPlan, b: &Build) -> Result<Box<dyn Op>> {
        PoolOp::build(plan, b, Mode::Average, dims(plan.input, b.batch))
    }
}

/// Its kernels are the avg_pool layer's.
pub static KERNELS: &[&KernelDef] = &[];
