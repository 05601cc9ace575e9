//! GlobalMaxPooling2D: the maximum of each channel over the whole image, (H, W, C) -> (C), or (1, 1, C) with
//! `keepdims`. The op is `pool::PoolOp` with one window over the input (shaders/pool.wgsl); its
//! kernels are listed by `max_pool`. Twin: `reference::pool`.

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

/// Keras' `GlobalMaxPooling2D(keepdims)`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalMaxPooling2d {
    /// keep the output (1, 1, C) instead of (C)
    #[serde(default)]
    pub keepdims: bool,
}

impl GlobalMaxPooling2d {
    pub fn new() -> Self {
        GlobalMaxPooling2d { keepdims: false }
    }
}

/// Keras' `GlobalMaxPooling2D`: channels last.
impl FromKeras for GlobalMaxPooling2d {
    const CLASS: &'static str = "GlobalMaxPooling2D";

    fn from_keras(c: &LayerConfig) -> std::result::Result<Self, String> {
        Ok(GlobalMaxPooling2d {
            keepdims: global::from_keras(c)?,
        })
    }
}

impl Layer for GlobalMaxPooling2d {
    fn keras_name(&self) -> &'static str {
        "global_max_pooling2d"
    }

    fn keras_class(&self) -> &'static str {
        Self::CLASS
    }

    fn keras_config(&self, name: &str) -> Map<String, Value> {
        global::keras_config(name, self.keepdims)
    }

    fn output(&self, input: Shape, _last: bool) -> std::result::Result<Shape, String> {
        global::output("global_max_pooling2d", input, self.keepdims)
    }

    fn gates_input(&self) -> bool {
        true
    }

    fn twin_forward(&self, l: &LayerPlan, batch: usize, x: &[f64], _w: &[&[f64]]) -> TwinForward {
        let (y, argmax) = twin::maxpool_forward(&dims(l.input, batch), x);
        TwinForward {
            y,
            argmax: Some(argmax),
            keep: None,
            state: None,
        }
    }

    fn twin_backward(
        &self,
        l: &LayerPlan,
        batch: usize,
        _x: &[f64],
        _w: &[&[f64]],
        fwd: &TwinForward,
        dy: &[f64],
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        let argmax = fwd.argmax.as_ref().expect("the forward saved the argmax");
        (Vec::new(), twin::maxpool_backward(&dims(l.input, batch), argmax, dy))
    }

    fn op(&self, plan: &OpPlan, b: &Build) -> Result<Box<dyn Op>> {
        PoolOp::build(plan, b, Mode::Max, dims(plan.input, b.batch))
    }
}

/// Its kernels are the max_pool layer's.
pub static KERNELS: &[&KernelDef] = &[];
