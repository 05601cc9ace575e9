//! MaxPool2D: k x k windows, stride k, padding `valid` (Keras' defaults); the gradient goes to the first
//! maximum of each window in row-major order. Shader: shaders/pool.wgsl. Twin: `reference::pool`.
//!
//! The forward saves each window's choice (argmax) for the backward, a gather. Right after a relu layer
//! the backward also applies that layer's relu' (the GATE variant, given by `model::fuse`): the window
//! maximum is the relu output at argmax.

use serde::Deserialize;

use super::{spatial, Build, Io, Layer, Op, OpOutput, TwinForward};
use crate::config::de::{default_pool, positive_usize};
use crate::error::Result;
use crate::keras::{self, FromKeras, LayerConfig};
use serde_json::{json, Map, Value};
use crate::gpu::{Buffer, KernelDef, Recorder, Shader};
use crate::model::fuse::OpPlan;
use crate::model::{LayerPlan, Shape};
use crate::reference as twin;

/// Keras' `MaxPooling2D(pool_size)`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPool2d {
    #[serde(default = "default_pool", deserialize_with = "positive_usize")]
    pub pool_size: usize,
}

impl MaxPool2d {
    pub fn new(pool_size: usize) -> Self {
        MaxPool2d { pool_size }
    }

    fn dims(&self, l: &LayerPlan, batch: usize) -> twin::PoolDims {
        let (h, w, c) = spatial(l.input);
        twin::PoolDims {
            batch,
            in_h: h,
            in_w: w,
            c,
            k: self.pool_size,
        }
    }
}

/// Keras' `MaxPooling2D`: square windows, strides equal to the window, padding valid, channels last.
impl FromKeras for MaxPool2d {
    const CLASS: &'static str = "MaxPooling2D";

    fn from_keras(c: &LayerConfig) -> std::result::Result<Self, String> {
        let k = c.square("pool_size")?;
        c.only("strides", &[json!(k), json!([k, k])])?;
        c.only("padding", &[json!("valid")])?;
        c.only("data_format", &[json!("channels_last")])?;
        Ok(MaxPool2d::new(k))
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
        let mut m = keras::base(name);
        let k = self.pool_size;
        m.insert("pool_size".into(), json!([k, k]));
        m.insert("padding".into(), json!("valid"));
        m.insert("strides".into(), json!([k, k]));
        m.insert("data_format".into(), json!("channels_last"));
        m
    }

    fn output(&self, input: Shape, _last: bool) -> std::result::Result<Shape, String> {
        let Shape::Spatial { h, w, c } = input else {
            return Err(
                "conv2d and max_pool2d need a spatial input, but the input is already flat".into(),
            );
        };
        let k = self.pool_size;
        if k == 0 || k > h || k > w {
            return Err(format!("pool_size {k} does not fit its {h}x{w} input"));
        }
        Ok(Shape::Spatial {
            h: h / k,
            w: w / k,
            c,
        })
    }

    fn gates_input(&self) -> bool {
        true
    }

    fn twin_forward(&self, l: &LayerPlan, batch: usize, x: &[f64], _w: &[&[f64]]) -> TwinForward {
        let (y, argmax) = twin::maxpool_forward(&self.dims(l, batch), x);
        TwinForward {
            y,
            argmax: Some(argmax),
            keep: None,
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
            twin::maxpool_backward(&self.dims(l, batch), argmax, dy),
        )
    }

    fn op(&self, plan: &OpPlan, b: &Build) -> Result<Box<dyn Op>> {
        let bytes = (b.batch * plan.output.len() * 4) as u64;
        Ok(Box::new(PoolOp {
            name: plan.name.clone(),
            k: self.pool_size,
            input: spatial(plan.input),
            output: spatial(plan.output),
            gate: plan.gate,
            out: b.outputs(plan, false)?,
            argmax: b
                .ctx
                .storage_checked(&format!("{} argmax", plan.name), bytes)?,
        }))
    }
}

pub static SHADER: Shader = crate::shader!("pool.wgsl");

pub static FORWARD: KernelDef = KernelDef {
    name: "MaxPoolForward",
    shader: &SHADER,
    entry: "maxpool_forward",
    constants: &[],
    gated: false,
};
pub static BACKWARD: KernelDef = KernelDef {
    name: "MaxPoolBackward",
    shader: &SHADER,
    entry: "maxpool_backward",
    constants: &[],
    gated: true,
};

pub static KERNELS: &[&KernelDef] = &[&FORWARD, &BACKWARD];

/// The uniform of pool.wgsl, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PoolParams {
    pub batch: u32,
    pub in_h: u32,
    pub in_w: u32,
    pub c: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub k: u32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<PoolParams>() == 32);

struct PoolOp {
    name: String,
    k: usize,
    input: (usize, usize, usize),
    output: (usize, usize, usize),
    gate: bool,
    out: OpOutput,
    argmax: Buffer,
}

impl PoolOp {
    fn uniform(&self, r: &mut Recorder, rows: usize) -> Buffer {
        let ((h, w, c), (oh, ow, _)) = (self.input, self.output);
        let p = PoolParams {
            batch: rows as u32,
            in_h: h as u32,
            in_w: w as u32,
            c: c as u32,
            out_h: oh as u32,
            out_w: ow as u32,
            k: self.k as u32,
            _pad: 0,
        };
        r.uniform(&self.name, &p)
    }
}

impl Op for PoolOp {
    fn out(&self) -> &OpOutput {
        &self.out
    }

    /// One invocation per output pixel, all channels.
    fn forward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let u = self.uniform(r, rows);
        let (oh, ow, _) = self.output;
        r.dispatch(&FORWARD)
            .bind("P", &u)
            .bind("x", io.x)
            .bind("y", &self.out.y)
            .bind("argmax", &self.argmax)
            .grid(((oh * ow).div_ceil(64) as u32, rows as u32, 1));
    }

    /// One invocation per input pixel, reading the argmax of the window that holds it.
    fn backward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let Some(dx) = io.dx else {
            return;
        };
        let u = self.uniform(r, rows);
        let (h, w, _) = self.input;
        r.dispatch(&BACKWARD)
            .gate(self.gate)
            .bind("P", &u)
            .bind("y", &self.out.y)
            .bind("argmax", &self.argmax)
            .bind("dy", self.out.dy())
            .bind("dx", dx)
            .grid(((h * w).div_ceil(64) as u32, rows as u32, 1));
    }
}
