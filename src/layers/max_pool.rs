//! MaxPooling2D: k x k windows, `strides` (default: the window), padding `valid` or `same` (TensorFlow's:
//! the padding is never the maximum); the gradient goes to the first maximum of each window in
//! row-major order. The op is `pool::PoolOp` (shaders/pool.wgsl). Twin: `reference::pool`.
//!
//! The forward saves each window's choice (argmax) for the backward, a gather. Right after a relu layer
//! the backward also applies that layer's relu' (the GATE variant, given by `model::fuse`): the window
//! maximum is the relu output at argmax.

use serde::Deserialize;

use super::pool::{self, Mode, PoolOp};
use super::{Build, Layer, Op, TwinForward};
use crate::config::de::{default_pool, positive_usize, valid};
use crate::error::Result;
use crate::gpu::KernelDef;
use crate::keras::{self, FromKeras, LayerConfig};
use crate::model::fuse::OpPlan;
use crate::model::{LayerPlan, Padding, Shape};
use crate::reference as twin;
use serde_json::{json, Map, Value};

/// Keras' `MaxPooling2D(pool_size, strides, padding)`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPool2d {
    #[serde(default = "default_pool", deserialize_with = "positive_usize")]
    pub pool_size: usize,
    /// default: `pool_size` (0 is refused by `output`, naming the layer)
    #[serde(default)]
    pub strides: Option<usize>,
    #[serde(default = "valid")]
    pub padding: Padding,
}

impl MaxPool2d {
    pub fn new(pool_size: usize) -> Self {
        MaxPool2d {
            pool_size,
            strides: None,
            padding: Padding::Valid,
        }
    }

    /// The window's stride.
    pub fn stride(&self) -> usize {
        self.strides.unwrap_or(self.pool_size)
    }

    /// A 2x2 window at stride 2, valid: what the fused conv + pool computes.
    pub fn plain2(&self) -> bool {
        self.pool_size == 2 && self.stride() == 2 && self.padding == Padding::Valid
    }

    fn dims(&self, input: Shape, batch: usize) -> twin::PoolDims {
        window_dims(input, batch, self.pool_size, self.stride(), self.padding)
            .expect("checked by `output`")
    }
}

/// The window geometry of a k x k pool at stride s over `input` (None: it does not fit).
pub(crate) fn window_dims(
    input: Shape,
    batch: usize,
    k: usize,
    s: usize,
    padding: Padding,
) -> Option<twin::PoolDims> {
    let Shape::Spatial { h, w, c } = input else {
        return None;
    };
    twin::PoolDims::new(batch, (h, w, c), k, s, padding)
}

/// The output of a k x k pool at stride s, or what is wrong (`what`: the layer's config name).
pub(crate) fn pool_output(
    what: &str,
    input: Shape,
    k: usize,
    s: usize,
    padding: Padding,
) -> std::result::Result<Shape, String> {
    let Shape::Spatial { h, w, c } = input else {
        return Err(format!(
            "{what} needs a spatial input, but the input is already flat"
        ));
    };
    if k == 0 || s == 0 {
        return Err("pool_size and strides must be at least 1".into());
    }
    match window_dims(input, 1, k, s, padding) {
        Some(d) => Ok(Shape::Spatial {
            h: d.out_h,
            w: d.out_w,
            c,
        }),
        None => Err(format!(
            "pool_size {k} does not fit its {h}x{w} input (padding 'valid'; 'same' pads it)"
        )),
    }
}

/// A pool's Keras keys: `pool_size`, `strides` (null: the window), `padding`, channels last.
pub(crate) fn pool_from_keras(
    c: &LayerConfig,
) -> std::result::Result<(usize, Option<usize>, Padding), String> {
    let k = c.square("pool_size")?;
    // strides equal to the window are Keras' default (None), as a TOML config writes it
    let strides = match c.get("strides") {
        None => None,
        Some(_) => Some(c.square("strides")?).filter(|&s| s != k),
    };
    c.only("data_format", &[json!("channels_last")])?;
    Ok((k, strides, c.padding()?))
}

/// A pool's Keras config.
pub(crate) fn pool_keras_config(
    name: &str,
    k: usize,
    s: usize,
    padding: Padding,
) -> Map<String, Value> {
    let mut m = keras::base(name);
    m.insert("pool_size".into(), json!([k, k]));
    m.insert("padding".into(), json!(padding.keras()));
    m.insert("strides".into(), json!([s, s]));
    m.insert("data_format".into(), json!("channels_last"));
    m
}

/// Keras' `MaxPooling2D`: square windows and strides, channels last.
impl FromKeras for MaxPool2d {
    const CLASS: &'static str = "MaxPooling2D";

    fn from_keras(c: &LayerConfig) -> std::result::Result<Self, String> {
        let (pool_size, strides, padding) = pool_from_keras(c)?;
        Ok(MaxPool2d {
            pool_size,
            strides,
            padding,
        })
    }
}

impl Layer for MaxPool2d {
    fn keras_name(&self) -> &'static str {
        "max_pooling2d"
    }

    fn keras_class(&self) -> &'static str {
        Self::CLASS
    }

    fn keras_config(&self, name: &str) -> Map<String, Value> {
        pool_keras_config(name, self.pool_size, self.stride(), self.padding)
    }

    fn output(&self, input: Shape, _last: bool) -> std::result::Result<Shape, String> {
        pool_output("max_pool2d", input, self.pool_size, self.stride(), self.padding)
    }

    fn gates_input(&self) -> bool {
        true
    }

    fn twin_forward(&self, l: &LayerPlan, batch: usize, x: &[f64], _w: &[&[f64]]) -> TwinForward {
        let (y, argmax) = twin::maxpool_forward(&self.dims(l.input, batch), x);
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
        (
            Vec::new(),
            twin::maxpool_backward(&self.dims(l.input, batch), argmax, dy),
        )
    }

    fn op(&self, plan: &OpPlan, b: &Build) -> Result<Box<dyn Op>> {
        PoolOp::build(plan, b, Mode::Max, self.dims(plan.input, b.batch))
    }
}

pub static KERNELS: &[&KernelDef] = &[&pool::MAX_FORWARD, &pool::MAX_BACKWARD];
