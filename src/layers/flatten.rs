//! Flatten: a view. The output is the input in the same NHWC order (Keras' flatten order), so no op
//! runs for it: `model::fuse` drops it and the next op reads the same buffer.

use serde::Deserialize;

use super::{Layer, TwinForward};
use crate::gpu::KernelDef;
use crate::model::{LayerPlan, Shape};

/// Keras' `Flatten()`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flatten {}

impl Flatten {
    pub fn new() -> Self {
        Flatten {}
    }
}

pub static KERNELS: &[&KernelDef] = &[];

impl Layer for Flatten {
    fn keras_name(&self) -> &'static str {
        "flatten"
    }

    fn output(&self, input: Shape, _last: bool) -> std::result::Result<Shape, String> {
        Ok(Shape::Flat(input.len()))
    }

    fn is_view(&self) -> bool {
        true
    }

    fn twin_forward(&self, _l: &LayerPlan, _batch: usize, x: &[f64], _w: &[&[f64]]) -> TwinForward {
        TwinForward {
            y: x.to_vec(),
            argmax: None,
        }
    }

    fn twin_backward(
        &self,
        _l: &LayerPlan,
        _batch: usize,
        _x: &[f64],
        _w: &[&[f64]],
        _fwd: &TwinForward,
        dy: &[f64],
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        (Vec::new(), dy.to_vec())
    }
}
