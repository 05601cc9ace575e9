//! The GPU op the pooling layers share (MaxPooling2D, AveragePooling2D, GlobalMaxPooling2D,
//! GlobalAveragePooling2D): its uniform, kernels, grids and recording, and the window geometry and
//! Keras keys the layer files share. Each layer file owns its settings and twin glue and hands this op
//! its window geometry (`reference::PoolDims`).
//! Shader: shaders/pool.wgsl. Twins: `reference::pool`.

use serde_json::{json, Map, Value};

use super::{spatial, Build, Io, Op, OpOutput};
use crate::error::Result;
use crate::gpu::{Buffer, KernelDef, Recorder, Shader};
use crate::keras::{self, LayerConfig};
use crate::model::fuse::OpPlan;
use crate::model::{Padding, Shape};
use crate::reference::PoolDims;

// ---- What the windowed poolings (MaxPooling2D, AveragePooling2D) share: geometry and Keras keys ----

/// The window geometry of a k x k pool at stride s over `input` (None: it does not fit).
pub(crate) fn window_dims(
    input: Shape,
    batch: usize,
    k: usize,
    s: usize,
    padding: Padding,
) -> Option<PoolDims> {
    let Shape::Spatial { h, w, c } = input else {
        return None;
    };
    PoolDims::new(batch, (h, w, c), k, s, padding)
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

/// What the two global poolings share: their Keras key (`keepdims`), shapes and geometry (one window
/// over the whole image).
pub(crate) mod global {
    use super::*;

    pub fn dims(input: Shape, batch: usize) -> PoolDims {
        PoolDims::global(batch, spatial(input))
    }

    /// `keepdims` from a Keras config (channels last).
    pub fn from_keras(c: &LayerConfig) -> std::result::Result<bool, String> {
        c.only("data_format", &[json!("channels_last")])?;
        match c.get("keepdims") {
            None => Ok(false),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("keepdims must be true or false, got {v}")),
        }
    }

    pub fn keras_config(name: &str, keepdims: bool) -> Map<String, Value> {
        let mut m = keras::base(name);
        m.insert("data_format".into(), json!("channels_last"));
        m.insert("keepdims".into(), json!(keepdims));
        m
    }

    /// (C), or (1, 1, C) with `keepdims`.
    pub fn output(what: &str, input: Shape, keepdims: bool) -> std::result::Result<Shape, String> {
        let Shape::Spatial { c, .. } = input else {
            return Err(format!(
                "{what} needs a spatial input, but the input is already flat"
            ));
        };
        Ok(if keepdims {
            Shape::Spatial { h: 1, w: 1, c }
        } else {
            Shape::Flat(c)
        })
    }
}

pub static SHADER: Shader = crate::shader!("pool.wgsl");

pub static MAX_FORWARD: KernelDef = KernelDef {
    name: "MaxPoolForward",
    shader: &SHADER,
    entry: "maxpool_forward",
    constants: &[],
    gated: false,
};
pub static MAX_BACKWARD: KernelDef = KernelDef {
    name: "MaxPoolBackward",
    shader: &SHADER,
    entry: "maxpool_backward",
    constants: &[],
    gated: true,
};
pub static AVG_FORWARD: KernelDef = KernelDef {
    name: "AvgPoolForward",
    shader: &SHADER,
    entry: "avgpool_forward",
    constants: &[],
    gated: false,
};
pub static AVG_BACKWARD: KernelDef = KernelDef {
    name: "AvgPoolBackward",
    shader: &SHADER,
    entry: "avgpool_backward",
    constants: &[],
    gated: false,
};

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
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    pub pad_h: u32,
    pub pad_w: u32,
}
const _: () = assert!(std::mem::size_of::<PoolParams>() == 48);

/// What the window reduces to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// the maximum (its position saved for the backward)
    Max,
    /// the mean of the cells inside the input
    Average,
}

/// A pooling layer on the GPU.
pub struct PoolOp {
    name: String,
    mode: Mode,
    /// the geometry (its batch is unused: each recording passes its rows)
    dims: PoolDims,
    gate: bool,
    out: OpOutput,
    /// the max-pool's choice per output element (none for the average)
    argmax: Option<Buffer>,
}

impl PoolOp {
    pub fn build(plan: &OpPlan, b: &Build, mode: Mode, dims: PoolDims) -> Result<Box<dyn Op>> {
        let bytes = (b.batch * plan.output.len() * 4) as u64;
        let argmax = match mode {
            Mode::Max => Some(
                b.ctx
                    .storage_checked(&format!("{} argmax", plan.name), bytes)?,
            ),
            Mode::Average => None,
        };
        Ok(Box::new(PoolOp {
            name: plan.name.clone(),
            mode,
            dims,
            gate: plan.gate,
            out: b.outputs(plan, false)?,
            argmax,
        }))
    }

    fn uniform(&self, r: &mut Recorder, rows: usize) -> Buffer {
        let d = &self.dims;
        let p = PoolParams {
            batch: rows as u32,
            in_h: d.in_h as u32,
            in_w: d.in_w as u32,
            c: d.c as u32,
            out_h: d.out_h as u32,
            out_w: d.out_w as u32,
            kh: d.kh as u32,
            kw: d.kw as u32,
            sh: d.sh as u32,
            sw: d.sw as u32,
            pad_h: d.pad_h as u32,
            pad_w: d.pad_w as u32,
        };
        r.uniform(&self.name, &p)
    }
}

impl Op for PoolOp {
    fn out(&self) -> &OpOutput {
        &self.out
    }

    /// One invocation per output element.
    fn forward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let u = self.uniform(r, rows);
        let d = &self.dims;
        let grid = (
            (d.out_h * d.out_w * d.c).div_ceil(64) as u32,
            rows as u32,
            1,
        );
        match (&self.argmax, self.mode) {
            (Some(argmax), Mode::Max) => r
                .dispatch(&MAX_FORWARD)
                .bind("P", &u)
                .bind("x", io.x)
                .bind("y", &self.out.y)
                .bind("argmax", argmax)
                .grid(grid),
            _ => r
                .dispatch(&AVG_FORWARD)
                .bind("P", &u)
                .bind("x", io.x)
                .bind("y", &self.out.y)
                .grid(grid),
        }
    }

    /// One invocation per input element, gathering from the windows that hold it.
    fn backward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let Some(dx) = io.dx else {
            return;
        };
        let u = self.uniform(r, rows);
        let d = &self.dims;
        let grid = ((d.in_h * d.in_w * d.c).div_ceil(64) as u32, rows as u32, 1);
        match (&self.argmax, self.mode) {
            (Some(argmax), Mode::Max) => r
                .dispatch(&MAX_BACKWARD)
                .gate(self.gate)
                .bind("P", &u)
                .bind("y", &self.out.y)
                .bind("argmax", argmax)
                .bind("dy", self.out.dy())
                .bind("dx", dx)
                .grid(grid),
            _ => r
                .dispatch(&AVG_BACKWARD)
                .bind("P", &u)
                .bind("dy", self.out.dy())
                .bind("dx", dx)
                .grid(grid),
        }
    }
}
