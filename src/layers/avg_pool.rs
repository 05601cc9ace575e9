//! AveragePooling2D: k x k windows, `strides` (default: the window), padding `valid` or `same`
//! (TensorFlow's: each window averages the input cells it covers, the padding is not counted). The op
//! is `pool::PoolOp` (shaders/pool.wgsl). Twin: `reference::pool`.

use serde::Deserialize;

use super::pool::{self, pool_from_keras, pool_keras_config, pool_output, window_dims, Mode, PoolOp};
use super::{Build, Layer, Op, TwinForward};
use crate::config::de::{default_pool, positive_usize, valid};
use crate::error::Result;
use crate::gpu::KernelDef;
use crate::keras::{FromKeras, LayerConfig};
use crate::model::fuse::OpPlan;
use crate::model::{LayerPlan, Padding, Shape};
use crate::reference as twin;
use serde_json::{Map, Value};

/// Keras' `AveragePooling2D(pool_size, strides, padding)`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AveragePooling2d {
    #[serde(default = "default_pool", deserialize_with = "positive_usize")]
    pub pool_size: usize,
    /// default: `pool_size` (0 is refused by `output`, naming the layer)
    #[serde(default)]
    pub strides: Option<usize>,
    #[serde(default = "valid")]
    pub padding: Padding,
}

impl AveragePooling2d {
    pub fn new(pool_size: usize, strides: Option<usize>, padding: Padding) -> Self {
        AveragePooling2d {
            pool_size,
            strides,
            padding,
        }
    }

    fn stride(&self) -> usize {
        self.strides.unwrap_or(self.pool_size)
    }

    fn dims(&self, input: Shape, batch: usize) -> twin::PoolDims {
        window_dims(input, batch, self.pool_size, self.stride(), self.padding)
            .expect("checked by `output`")
    }
}

/// Keras' `AveragePooling2D`: square windows and strides, channels last.
impl FromKeras for AveragePooling2d {
    const CLASS: &'static str = "AveragePooling2D";

    fn from_keras(c: &LayerConfig) -> std::result::Result<Self, String> {
        let (k, s, padding) = pool_from_keras(c)?;
        Ok(AveragePooling2d::new(k, s, padding))
    }
}

impl Layer for AveragePooling2d {
    fn keras_name(&self) -> &'static str {
        "average_pooling2d"
    }

    fn keras_class(&self) -> &'static str {
        Self::CLASS
    }

    fn keras_config(&self, name: &str) -> Map<String, Value> {
        pool_keras_config(name, self.pool_size, self.stride(), self.padding)
    }

    fn output(&self, input: Shape, _last: bool) -> std::result::Result<Shape, String> {
        pool_output(
            "average_pooling2d",
            input,
            self.pool_size,
            self.stride(),
            self.padding,
        )
    }

    fn twin_forward(&self, l: &LayerPlan, batch: usize, x: &[f64], _w: &[&[f64]]) -> TwinForward {
        TwinForward {
            y: twin::avgpool_forward(&self.dims(l.input, batch), x),
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
        (
            Vec::new(),
            twin::avgpool_backward(&self.dims(l.input, batch), dy),
        )
    }

    fn op(&self, plan: &OpPlan, b: &Build) -> Result<Box<dyn Op>> {
        PoolOp::build(plan, b, Mode::Average, self.dims(plan.input, b.batch))
    }
}

pub static KERNELS: &[&KernelDef] = &[&pool::AVG_FORWARD, &pool::AVG_BACKWARD];
