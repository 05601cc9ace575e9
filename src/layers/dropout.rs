//! Dropout (Keras' `Dropout(rate, seed)`): in training, each element is kept with probability
//! `1 − rate` and scaled by `1 / (1 − rate)`, else zeroed; in inference, the identity. The mask is
//! counter-based, a hash of (the run's seed or the layer's own `seed`, the layer's position, the
//! optimizer step, the element), so runs, resumes and kernel sets draw the same masks and nothing is
//! stored: the backward recomputes it. Keras' own masks come from its random generator and cannot be
//! matched bit for bit; the tests check rate 0, inference, the kept fraction, the scaling, and parity with
//! Keras on a mask injected on both sides. Shader: shaders/dropout.wgsl. Twin: `reference::dropout`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{Build, Io, Layer, Op, OpOutput, TwinForward};
use crate::error::Result;
use crate::gpu::{Buffer, KernelDef, Recorder, Shader};
use crate::keras::{self, FromKeras, LayerConfig};
use crate::model::fuse::OpPlan;
use crate::model::{LayerPlan, Shape};
use crate::reference as twin;

/// Keras' `Dropout(rate, seed=None)`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "DropoutRaw")]
pub struct Dropout {
    /// the fraction of elements dropped, in [0, 1)
    pub rate: f64,
    /// the layer's own mask seed (Keras' `seed`); None: the run's `--seed`
    pub seed: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DropoutRaw {
    rate: f64,
    #[serde(default)]
    seed: Option<u64>,
}

impl TryFrom<DropoutRaw> for Dropout {
    type Error = String;
    fn try_from(r: DropoutRaw) -> std::result::Result<Self, String> {
        Dropout::new(r.rate, r.seed)
    }
}

impl Dropout {
    /// A dropout of `rate` (checked: in [0, 1), as Keras requires).
    pub fn new(rate: f64, seed: Option<u64>) -> std::result::Result<Self, String> {
        if !(0.0..1.0).contains(&rate) {
            return Err(format!("dropout rate must be in [0, 1), got {rate}"));
        }
        Ok(Dropout { rate, seed })
    }

    fn params(&self, l_index: usize, run_seed: u64, n: usize) -> DropoutParams {
        DropoutParams {
            n: n as u32,
            threshold: twin::dropout_threshold(self.rate),
            scale: twin::dropout_scale(self.rate),
            seed: twin::dropout_seed(run_seed, self.seed),
            salt: l_index as u32,
            ..Default::default()
        }
    }
}

/// Keras' `Dropout`: `rate`, `seed`; `noise_shape` unset.
impl FromKeras for Dropout {
    const CLASS: &'static str = "Dropout";

    fn from_keras(c: &LayerConfig) -> std::result::Result<Self, String> {
        c.only("noise_shape", &[])?;
        let rate = c
            .get("rate")
            .and_then(Value::as_f64)
            .ok_or("rate must be a number")?;
        let seed = match c.get("seed") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or(format!("seed {v} is not a whole number >= 0"))?),
        };
        Dropout::new(rate, seed)
    }
}

impl Layer for Dropout {
    fn keras_name(&self) -> &'static str {
        "dropout"
    }

    fn keras_class(&self) -> &'static str {
        Self::CLASS
    }

    fn keras_config(&self, name: &str) -> Map<String, Value> {
        let mut m = keras::base(name);
        m.insert("rate".into(), json!(self.rate));
        m.insert("seed".into(), json!(self.seed));
        m.insert("noise_shape".into(), Value::Null);
        m
    }

    fn output(&self, input: Shape, _last: bool) -> std::result::Result<Shape, String> {
        Ok(input)
    }

    fn twin_forward(&self, _l: &LayerPlan, _batch: usize, x: &[f64], _w: &[&[f64]]) -> TwinForward {
        TwinForward {
            y: x.to_vec(),
            ..Default::default()
        }
    }

    fn twin_forward_train(
        &self,
        l: &LayerPlan,
        _batch: usize,
        x: &[f64],
        _w: &[&[f64]],
        (step, seed): (u64, u64),
    ) -> TwinForward {
        let keep = twin::dropout_mask(
            twin::dropout_seed(seed, self.seed),
            l.index as u32,
            step as u32,
            x.len(),
            self.rate,
        );
        TwinForward {
            y: twin::dropout_apply(x, &keep, self.rate),
            keep: Some(keep),
            ..Default::default()
        }
    }

    fn twin_backward(
        &self,
        _l: &LayerPlan,
        _batch: usize,
        _x: &[f64],
        _w: &[&[f64]],
        fwd: &TwinForward,
        dy: &[f64],
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        let dx = match &fwd.keep {
            Some(keep) => twin::dropout_apply(dy, keep, self.rate),
            None => dy.to_vec(),
        };
        (Vec::new(), dx)
    }

    fn op(&self, plan: &OpPlan, b: &Build) -> Result<Box<dyn Op>> {
        Ok(Box::new(DropoutOp {
            layer: self.clone(),
            index: plan.layers.start,
            seeds: b.seeds.clone(),
            len: plan.output.len(),
            out: b.outputs(plan, false)?,
        }))
    }
}

pub static SHADER: Shader = crate::shader!("dropout.wgsl");

pub static FORWARD: KernelDef = KernelDef {
    name: "DropoutForward",
    shader: &SHADER,
    entry: "dropout_forward",
    constants: &[],
    gated: false,
};
pub static COPY: KernelDef = KernelDef {
    name: "DropoutCopy",
    shader: &SHADER,
    entry: "dropout_copy",
    constants: &[],
    gated: false,
};
pub static BACKWARD: KernelDef = KernelDef {
    name: "DropoutBackward",
    shader: &SHADER,
    entry: "dropout_backward",
    constants: &[],
    gated: false,
};

pub static KERNELS: &[&KernelDef] = &[&FORWARD, &COPY, &BACKWARD];

/// Field for field with the WGSL `DropoutParams`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DropoutParams {
    /// elements of this step's rows
    pub n: u32,
    pub threshold: u32,
    pub scale: f32,
    pub seed: u32,
    /// the layer's position
    pub salt: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}
const _: () = assert!(std::mem::size_of::<DropoutParams>() == 32);

struct DropoutOp {
    layer: Dropout,
    index: usize,
    /// the run's seed; per model, for K models stepping together (the seed is all that differs)
    seeds: Vec<u64>,
    /// elements per example
    len: usize,
    out: OpOutput,
}

impl DropoutOp {
    fn uniform(&self, r: &mut Recorder, rows: usize) -> Buffer {
        let each: Vec<DropoutParams> = self
            .seeds
            .iter()
            .map(|&seed| self.layer.params(self.index, seed, rows * self.len))
            .collect();
        match &each[..] {
            [one] => r.uniform("dropout", one),
            _ => r.ctx.per_model_table("dropout per model", &each),
        }
    }
}

impl Op for DropoutOp {
    fn out(&self) -> &OpOutput {
        &self.out
    }

    /// Training (a step state given): the masked, scaled input; inference: a copy.
    fn forward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let u = self.uniform(r, rows);
        let grid = r.grid_1d(rows * self.len, 64);
        match io.state {
            Some(state) => r
                .dispatch(&FORWARD)
                .bind("D", &u)
                .bind("x", io.x)
                .bind("y", &self.out.y)
                .bind("state", state)
                .grid(grid),
            None => r
                .dispatch(&COPY)
                .bind("D", &u)
                .bind("x", io.x)
                .bind("y", &self.out.y)
                .grid(grid),
        }
    }

    /// dL/dx: the output gradient through the same mask, recomputed.
    fn backward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let (Some(dx), Some(state)) = (io.dx, io.state) else {
            return;
        };
        let u = self.uniform(r, rows);
        let grid = r.grid_1d(rows * self.len, 64);
        r.dispatch(&BACKWARD)
            .bind("D", &u)
            .bind("dy", self.out.dy())
            .bind("dx", dx)
            .bind("state", state)
            .grid(grid);
    }
}
