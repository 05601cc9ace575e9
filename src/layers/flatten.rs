//! Flatten: a view. The output is the input in the same NHWC order (Keras' flatten order), so no op
//! runs for it: `model::fuse` drops it and the next op reads the same buffer.

use serde::Deserialize;

use super::{Layer, TwinForward};
use crate::gpu::KernelDef;
use crate::keras::{self, FromKeras, LayerConfig};
use serde_json::{json, Map, Value};
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

/// Keras' `Flatten` (channels last: the NHWC order clampnet keeps).
impl FromKeras for Flatten {
    const CLASS: &'static str = "Flatten";

    fn from_keras(c: &LayerConfig) -> std::result::Result<Self, String> {
        c.only("data_format", &[json!("channels_last")])?;
        Ok(Flatten::new())
    }
}

impl Layer for Flatten {
    fn keras_name(&self) -> &'static str {
        "flatten"
    }

    fn keras_class(&self) -> &'static str {
        Self::CLASS
    }

    fn keras_config(&self, name: &str) -> Map<String, Value> {
        let mut m = keras::base(name);
        m.insert("data_format".into(), json!("channels_last"));
        m
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
            keep: None,
            state: None,
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
