//! Dense: y = act(x @ W + b), x [B, IN], W [IN, OUT] (Keras layout), relu, linear or softmax (the last
//! layer only: it emits logits and the loss fuses softmax + cross-entropy, as Keras computes the loss
//! from logits). Shader: shaders/dense.wgsl. Twin: `reference::dense`.
//!
//! On the GPU:
//!   CPU kernel set  forward split over chunks of the inputs + a reduce (bias, activation); weight, bias
//!                   and input gradients in separate passes, reading dy through a uniform window where
//!                   it fits (the DY_UNIFORM variants; the input gradient's outputs past the first 16 in
//!                   a second pass, dispatched only when OUT > 16)
//!   GPU kernel set  forward in one pass; the weight gradient with the bias gradient as its last row;
//!                   the input gradient
//! The backward applies relu' itself when `model::fuse` gives it the GATE variant.

use serde::Deserialize;

use super::{Build, Io, Layer, LossIo, Op, OpOutput, ParamRestriction, TwinForward};
use crate::config::de::{linear, positive_usize};
use crate::config::{ConstraintConfig, RegularizerConfig};
use crate::error::Result;
use crate::keras::{self, FromKeras, LayerConfig};
use serde_json::{json, Map, Value};
use crate::gpu::{Buffer, DispatchBuilder, KernelDef, KernelSet, Recorder, Shader};
use crate::model::fuse::OpPlan;
use crate::model::{
    Activation, Init, LayerPlan, ParamDecl, ParamSpec, Role, Shape, MAX_VALUES,
};
use crate::reference as twin;

/// Keras' `Dense(units, activation, kernel_regularizer, bias_regularizer, kernel_constraint,
/// bias_constraint)`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dense {
    #[serde(deserialize_with = "positive_usize")]
    pub units: usize,
    #[serde(default = "linear")]
    pub activation: Activation,
    #[serde(default)]
    pub kernel_regularizer: Option<RegularizerConfig>,
    #[serde(default)]
    pub bias_regularizer: Option<RegularizerConfig>,
    #[serde(default)]
    pub kernel_constraint: Option<ConstraintConfig>,
    #[serde(default)]
    pub bias_constraint: Option<ConstraintConfig>,
}

impl Dense {
    pub fn new(units: usize, activation: Activation) -> Self {
        Dense {
            units,
            activation,
            kernel_regularizer: None,
            bias_regularizer: None,
            kernel_constraint: None,
            bias_constraint: None,
        }
    }
}

/// Keras' `Dense` with a bias, relu / linear, or softmax on the last layer.
impl FromKeras for Dense {
    const CLASS: &'static str = "Dense";

    fn from_keras(c: &LayerConfig) -> std::result::Result<Self, String> {
        c.only("use_bias", &[json!(true)])?;
        c.only("lora_rank", &[])?;
        Ok(Dense::new(
            c.count("units")?,
            c.activation(&[
                Activation::Relu,
                Activation::Linear,
                Activation::Softmax,
                Activation::Tanh,
                Activation::Sigmoid,
                Activation::Elu,
                Activation::LeakyRelu,
            ])?,
        ))
    }
}

impl Layer for Dense {
    fn keras_name(&self) -> &'static str {
        "dense"
    }

    fn keras_class(&self) -> &'static str {
        Self::CLASS
    }

    fn keras_config(&self, name: &str) -> Map<String, Value> {
        let mut m = keras::base(name);
        m.insert("units".into(), json!(self.units));
        m.insert("activation".into(), json!(keras::activation_name(self.activation)));
        m.insert("use_bias".into(), json!(true));
        keras::default_initializers(&mut m);
        m
    }

    fn output(&self, input: Shape, last: bool) -> std::result::Result<Shape, String> {
        if input
            .len()
            .checked_mul(self.units)
            .is_none_or(|n| n > MAX_VALUES)
        {
            return Err(format!(
                "its kernel or output is too large: at most {} values",
                u32::MAX
            ));
        }
        if let Shape::Spatial { .. } = input {
            return Err("dense needs a flat input: add a flatten layer before it".into());
        }
        if self.units == 0 {
            return Err("units must be at least 1".into());
        }
        if self.activation == Activation::Softmax && !last {
            return Err("softmax is only supported on the last layer".into());
        }
        Ok(Shape::Flat(self.units))
    }

    fn params(&self, input: Shape) -> Vec<ParamDecl> {
        let n = input.len();
        vec![
            ParamDecl {
                suffix: "kernel",
                role: Role::Kernel,
                shape: vec![n, self.units],
                init: Init::GlorotUniform {
                    fan_in: n,
                    fan_out: self.units,
                },
                trainable: true,
            },
            ParamDecl {
                suffix: "bias",
                role: Role::Bias,
                shape: vec![self.units],
                init: Init::Zeros,
                trainable: true,
            },
        ]
    }

    fn macs(&self, input: Shape, output: Shape) -> f64 {
        (input.len() * output.len()) as f64
    }

    fn softmax_units(&self) -> Option<usize> {
        (self.activation == Activation::Softmax).then_some(self.units)
    }

    fn logits_output(&self) -> bool {
        matches!(self.activation, Activation::Softmax | Activation::Linear)
    }

    fn relu(&self) -> bool {
        self.activation == Activation::Relu
    }

    fn take_restrictions(&mut self) -> Vec<ParamRestriction> {
        super::kernel_and_bias(
            (&mut self.kernel_regularizer, &mut self.kernel_constraint),
            (&mut self.bias_regularizer, &mut self.bias_constraint),
        )
    }

    fn epilogue(&self) -> Option<(u32, f32)> {
        self.activation.elementwise()
    }

    fn twin_forward(&self, l: &LayerPlan, batch: usize, x: &[f64], w: &[&[f64]]) -> TwinForward {
        let mut y = twin::dense_forward(batch, l.input.len(), self.units, x, w[0], w[1], self.relu());
        twin::apply_epilogue(self.epilogue(), &mut y);
        TwinForward {
            y,
            argmax: None,
            keep: None,
            state: None,
        }
    }

    fn twin_backward(
        &self,
        l: &LayerPlan,
        batch: usize,
        x: &[f64],
        w: &[&[f64]],
        fwd: &TwinForward,
        dy: &[f64],
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        let dz = twin::epilogue_backward(self.epilogue(), &fwd.y, dy);
        let (dw, db, dx) = twin::dense_backward(
            batch,
            l.input.len(),
            self.units,
            x,
            w[0],
            &fwd.y,
            &dz,
            self.relu(),
        );
        (vec![dw, db], dx)
    }

    fn op(&self, plan: &OpPlan, b: &Build) -> Result<Box<dyn Op>> {
        // an output gradient that fits a uniform window is read through one (CPU kernel set); K
        // models stepping together need their K parts to fit it
        let bytes = (b.batch * plan.output.len() * 4) as u64;
        let dy_uniform = b.set == KernelSet::Cpu && crate::gpu::fits_window(bytes);
        Ok(Box::new(DenseOp {
            name: plan.name.clone(),
            kernel: plan.params[0].clone(),
            bias: plan.params[1].clone(),
            in_n: plan.input.len(),
            out_n: self.units,
            relu: self.relu(),
            gate: plan.gate,
            set: b.set,
            out: b.outputs(plan, dy_uniform)?,
            dy_uniform,
            subgroups: b.ctx.subgroups,
            tiles: b.ctx.gpu_tiles && self.units <= TILED_MAX_OUT,
        }))
    }
}

pub static SHADER: Shader = crate::shader!("dense.wgsl");

macro_rules! dense_kernel {
    ($static:ident, $name:literal, $entry:literal, $gated:expr, $constants:expr) => {
        pub static $static: KernelDef = KernelDef {
            name: $name,
            shader: &SHADER,
            entry: $entry,
            constants: $constants,
            gated: $gated,
        };
    };
}

const DY_U: &[(&str, f64)] = &[("DY_UNIFORM", 1.0)];
const X4: &[(&str, f64)] = &[("X4", 1.0)];
const DY_U_X4: &[(&str, f64)] = &[("DY_UNIFORM", 1.0), ("X4", 1.0)];
// the CPU tiles without their fourth output quad (OUT <= 12): `narrow`
const N: &[(&str, f64)] = &[("OQ4", 0.0)];
const DY_U_N: &[(&str, f64)] = &[("DY_UNIFORM", 1.0), ("OQ4", 0.0)];
const X4_N: &[(&str, f64)] = &[("X4", 1.0), ("OQ4", 0.0)];
const DY_U_X4_N: &[(&str, f64)] = &[("DY_UNIFORM", 1.0), ("X4", 1.0), ("OQ4", 0.0)];

dense_kernel!(FORWARD, "DenseForward", "dense_forward", false, &[]);
dense_kernel!(FORWARD4, "DenseForward4", "dense_forward4", false, &[]);
dense_kernel!(
    TRANSPOSE4,
    "DenseTranspose4",
    "dense_transpose4",
    false,
    &[]
);
dense_kernel!(
    FORWARD_REDUCE,
    "DenseForwardReduce",
    "dense_forward_reduce",
    false,
    &[]
);
dense_kernel!(
    BACKWARD_WEIGHT,
    "DenseBackwardWeight",
    "dense_backward_weight",
    true,
    &[]
);
dense_kernel!(
    BACKWARD_WEIGHT_X4,
    "DenseBackwardWeightX4",
    "dense_backward_weight",
    true,
    X4
);
dense_kernel!(
    BACKWARD_WEIGHT_DY_U_X4,
    "DenseBackwardWeightDyUniformX4",
    "dense_backward_weight",
    true,
    DY_U_X4
);
dense_kernel!(
    BACKWARD_BIAS,
    "DenseBackwardBias",
    "dense_backward_bias",
    true,
    &[]
);
dense_kernel!(
    BACKWARD_INPUT,
    "DenseBackwardInput",
    "dense_backward_input",
    true,
    &[]
);
dense_kernel!(
    BACKWARD_INPUT4,
    "DenseBackwardInput4",
    "dense_backward_input4",
    true,
    &[]
);
dense_kernel!(
    BACKWARD_INPUT4_DY_U,
    "DenseBackwardInput4DyUniform",
    "dense_backward_input4",
    true,
    DY_U
);
dense_kernel!(
    BACKWARD_INPUT_REST,
    "DenseBackwardInputRest",
    "dense_backward_input_rest",
    true,
    &[]
);
dense_kernel!(
    BACKWARD_WEIGHT_DY_U,
    "DenseBackwardWeightDyUniform",
    "dense_backward_weight",
    true,
    DY_U
);
dense_kernel!(
    BACKWARD_BIAS_DY_U,
    "DenseBackwardBiasDyUniform",
    "dense_backward_bias",
    true,
    DY_U
);
dense_kernel!(
    BACKWARD_INPUT_DY_U,
    "DenseBackwardInputDyUniform",
    "dense_backward_input",
    true,
    DY_U
);
dense_kernel!(
    BACKWARD_INPUT_REST_DY_U,
    "DenseBackwardInputRestDyUniform",
    "dense_backward_input_rest",
    true,
    DY_U
);
// The CPU kernels whose tile has 16 outputs, without the fourth output quad: for OUT <= 12 (a 10-class
// classifier), where that quad holds only clamped copies that are never stored. The same stored sums.
dense_kernel!(FORWARD_N, "DenseForwardOut12", "dense_forward", false, N);
dense_kernel!(FORWARD4_N, "DenseForward4Out12", "dense_forward4", false, N);
dense_kernel!(
    BACKWARD_WEIGHT_N,
    "DenseBackwardWeightOut12",
    "dense_backward_weight",
    true,
    N
);
dense_kernel!(
    BACKWARD_WEIGHT_X4_N,
    "DenseBackwardWeightX4Out12",
    "dense_backward_weight",
    true,
    X4_N
);
dense_kernel!(
    BACKWARD_WEIGHT_DY_U_N,
    "DenseBackwardWeightDyUniformOut12",
    "dense_backward_weight",
    true,
    DY_U_N
);
dense_kernel!(
    BACKWARD_WEIGHT_DY_U_X4_N,
    "DenseBackwardWeightDyUniformX4Out12",
    "dense_backward_weight",
    true,
    DY_U_X4_N
);
dense_kernel!(
    BACKWARD_INPUT_N,
    "DenseBackwardInputOut12",
    "dense_backward_input",
    true,
    N
);
dense_kernel!(
    BACKWARD_INPUT_DY_U_N,
    "DenseBackwardInputDyUniformOut12",
    "dense_backward_input",
    true,
    DY_U_N
);
dense_kernel!(
    BACKWARD_INPUT4_N,
    "DenseBackwardInput4Out12",
    "dense_backward_input4",
    true,
    N
);
dense_kernel!(
    BACKWARD_INPUT4_DY_U_N,
    "DenseBackwardInput4DyUniformOut12",
    "dense_backward_input4",
    true,
    DY_U_N
);

// the weight gradient with 8 input rows per invocation (X4, IN % 8 == 0), and the bias gradient
dense_kernel!(
    BACKWARD_WEIGHT8_DY_U,
    "DenseBackwardWeight8DyUniform",
    "dense_backward_weight8",
    true,
    DY_U_X4
);
dense_kernel!(
    BACKWARD_WEIGHT8_DY_U_N,
    "DenseBackwardWeight8DyUniformOut12",
    "dense_backward_weight8",
    true,
    DY_U_X4_N
);
dense_kernel!(
    BACKWARD_WEIGHT8,
    "DenseBackwardWeight8",
    "dense_backward_weight8",
    true,
    X4
);
dense_kernel!(
    BACKWARD_WEIGHT8_N,
    "DenseBackwardWeight8Out12",
    "dense_backward_weight8",
    true,
    X4_N
);

// the input gradient with 8 input columns per invocation (IN % 8 == 0, OUT <= 16)
dense_kernel!(
    BACKWARD_INPUT8_DY_U,
    "DenseBackwardInput8DyUniform",
    "dense_backward_input8",
    true,
    DY_U
);
dense_kernel!(
    BACKWARD_INPUT8_DY_U_N,
    "DenseBackwardInput8DyUniformOut12",
    "dense_backward_input8",
    true,
    DY_U_N
);
dense_kernel!(
    BACKWARD_INPUT8,
    "DenseBackwardInput8",
    "dense_backward_input8",
    true,
    &[]
);
dense_kernel!(
    BACKWARD_INPUT8_N,
    "DenseBackwardInput8Out12",
    "dense_backward_input8",
    true,
    N
);

/// The variant of a CPU kernel for a layer of `out_n` outputs: without the tile's fourth output quad
/// where OUT <= 12 (kernels without such a variant: themselves).
fn narrow(k: &'static KernelDef, out_n: usize) -> &'static KernelDef {
    if out_n > 12 {
        return k;
    }
    const PAIRS: &[(&KernelDef, &KernelDef)] = &[
        (&FORWARD, &FORWARD_N),
        (&FORWARD4, &FORWARD4_N),
        (&BACKWARD_WEIGHT, &BACKWARD_WEIGHT_N),
        (&BACKWARD_WEIGHT_X4, &BACKWARD_WEIGHT_X4_N),
        (&BACKWARD_WEIGHT_DY_U, &BACKWARD_WEIGHT_DY_U_N),
        (&BACKWARD_WEIGHT_DY_U_X4, &BACKWARD_WEIGHT_DY_U_X4_N),
        (&BACKWARD_INPUT, &BACKWARD_INPUT_N),
        (&BACKWARD_INPUT_DY_U, &BACKWARD_INPUT_DY_U_N),
        (&BACKWARD_INPUT4, &BACKWARD_INPUT4_N),
        (&BACKWARD_INPUT4_DY_U, &BACKWARD_INPUT4_DY_U_N),
        (&BACKWARD_WEIGHT8_DY_U, &BACKWARD_WEIGHT8_DY_U_N),
        (&BACKWARD_WEIGHT8, &BACKWARD_WEIGHT8_N),
        (&BACKWARD_INPUT8_DY_U, &BACKWARD_INPUT8_DY_U_N),
        (&BACKWARD_INPUT8, &BACKWARD_INPUT8_N),
    ];
    PAIRS
        .iter()
        .find(|(wide, _)| std::ptr::eq(*wide, k))
        .map_or(k, |(_, n)| n)
}

dense_kernel!(
    FORWARD_GPU,
    "DenseForwardGpu",
    "dense_forward_gpu",
    false,
    &[]
);
dense_kernel!(
    BACKWARD_WEIGHT_GPU,
    "DenseBackwardWeightGpu",
    "dense_backward_weight_gpu",
    true,
    &[]
);
dense_kernel!(
    BACKWARD_INPUT_GPU,
    "DenseBackwardInputGpu",
    "dense_backward_input_gpu",
    true,
    &[]
);

/// dense.wgsl with the loss (softmax_xent.wgsl) fused into the forward of a last op (dense_loss.wgsl).
pub static LOSS_SHADER: Shader =
    crate::shader!("dense.wgsl", "softmax_xent.wgsl", "dense_loss.wgsl");

/// A last op's loss-fused forward: at most this many outputs (one example's logits in registers).
pub const LOSS_FUSED_MAX_OUT: usize = 16;

pub static FORWARD_REDUCE_LOSS: KernelDef = KernelDef {
    name: "DenseForwardReduceLoss",
    shader: &LOSS_SHADER,
    entry: "dense_forward_reduce_loss",
    constants: &[],
    gated: false,
};
pub static FORWARD_LOSS_GPU: KernelDef = KernelDef {
    name: "DenseForwardLossGpu",
    shader: &LOSS_SHADER,
    entry: "dense_forward_loss_gpu",
    constants: &[],
    gated: false,
};

/// Tiled shapes of the GPU set's dense forward and weight gradient (opt-in: `Context::gpu_tiles`),
/// bit-identical to the untiled ones.
pub static TILES_SHADER: Shader = crate::shader!(
    "dense.wgsl",
    "softmax_xent.wgsl",
    "dense_loss.wgsl",
    "dense_tiles.wgsl"
);

pub static FORWARD_TILED_GPU: KernelDef = KernelDef {
    name: "DenseForwardTiledGpu",
    shader: &TILES_SHADER,
    entry: "dense_forward_tiled_gpu",
    constants: &[],
    gated: false,
};
pub static FORWARD_LOSS_TILED_GPU: KernelDef = KernelDef {
    name: "DenseForwardLossTiledGpu",
    shader: &TILES_SHADER,
    entry: "dense_forward_loss_tiled_gpu",
    constants: &[],
    gated: false,
};
pub static BACKWARD_WEIGHT_TILED_GPU: KernelDef = KernelDef {
    name: "DenseBackwardWeightTiledGpu",
    shader: &TILES_SHADER,
    entry: "dense_backward_weight_tiled_gpu",
    constants: &[],
    gated: true,
};

/// Examples per workgroup of the tiled forward (`TILE_EXAMPLES` in dense_tiles.wgsl).
const TILE_EXAMPLES: usize = 4;
/// The tiled kernels keep 16 outputs of a row (4 quads) per workgroup or invocation: at most this many.
const TILED_MAX_OUT: usize = 16;

/// The GPU set's dense forward with subgroup sums (opt-in: `Context::subgroups`).
pub static SUBGROUP_SHADER: Shader = crate::shader!(
    "subgroups.wgsl",
    "dense.wgsl",
    "softmax_xent.wgsl",
    "dense_loss.wgsl",
    "dense_subgroups.wgsl"
);

pub static FORWARD_GPU_SG: KernelDef = KernelDef {
    name: "DenseForwardGpuSubgroups",
    shader: &SUBGROUP_SHADER,
    entry: "dense_forward_gpu_sg",
    constants: &[],
    gated: false,
};
pub static FORWARD_LOSS_GPU_SG: KernelDef = KernelDef {
    name: "DenseForwardLossGpuSubgroups",
    shader: &SUBGROUP_SHADER,
    entry: "dense_forward_loss_gpu_sg",
    constants: &[],
    gated: false,
};

pub static KERNELS: &[&KernelDef] = &[
    &FORWARD,
    &FORWARD4,
    &TRANSPOSE4,
    &FORWARD_REDUCE,
    &BACKWARD_WEIGHT,
    &BACKWARD_WEIGHT_X4,
    &BACKWARD_WEIGHT_DY_U_X4,
    &BACKWARD_BIAS,
    &BACKWARD_INPUT,
    &BACKWARD_INPUT4,
    &BACKWARD_INPUT4_DY_U,
    &BACKWARD_INPUT_REST,
    &BACKWARD_WEIGHT_DY_U,
    &BACKWARD_BIAS_DY_U,
    &BACKWARD_INPUT_DY_U,
    &BACKWARD_INPUT_REST_DY_U,
    &FORWARD_N,
    &FORWARD4_N,
    &BACKWARD_WEIGHT_N,
    &BACKWARD_WEIGHT_X4_N,
    &BACKWARD_WEIGHT_DY_U_N,
    &BACKWARD_WEIGHT_DY_U_X4_N,
    &BACKWARD_INPUT_N,
    &BACKWARD_INPUT_DY_U_N,
    &BACKWARD_INPUT4_N,
    &BACKWARD_INPUT4_DY_U_N,
    &BACKWARD_WEIGHT8_DY_U,
    &BACKWARD_WEIGHT8_DY_U_N,
    &BACKWARD_WEIGHT8,
    &BACKWARD_WEIGHT8_N,
    &BACKWARD_INPUT8_DY_U,
    &BACKWARD_INPUT8_DY_U_N,
    &BACKWARD_INPUT8,
    &BACKWARD_INPUT8_N,
    &FORWARD_GPU,
    &BACKWARD_WEIGHT_GPU,
    &BACKWARD_INPUT_GPU,
    &FORWARD_REDUCE_LOSS,
    &FORWARD_LOSS_GPU,
    &FORWARD_GPU_SG,
    &FORWARD_LOSS_GPU_SG,
    &FORWARD_TILED_GPU,
    &FORWARD_LOSS_TILED_GPU,
    &BACKWARD_WEIGHT_TILED_GPU,
];

/// The uniform of dense.wgsl, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DenseParams {
    pub batch: u32,
    pub in_n: u32,
    pub out_n: u32,
    pub relu: u32,
    /// CPU-shaped forward: inputs per chunk of its split-K, and the chunk count
    pub chunk: u32,
    pub chunks: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}
const _: () = assert!(std::mem::size_of::<DenseParams>() == 32);

/// The CPU-shaped forward takes `FORWARD4` (with `TRANSPOSE4` first) from this many rows: the transpose
/// is a fixed cost per step (about 0.1 ms for the reference's 5408 x 10 kernel on lavapipe), the quads
/// save about 2 us per row (at batch 32: 0.32 -> 0.26 + 0.10 ms, a loss; at 128: 1.18 -> 0.91 + 0.09).
pub const QUAD_FORWARD_MIN_ROWS: usize = 64;

/// Inputs per chunk of the CPU-shaped forward's split-K (one invocation's share of the inputs): llvmpipe
/// wants few long chunks (64: 0.61 ms + a 0.07 ms reduce per step vs 0.64 + 0.11 with 32). The GPU
/// kernel set's forward needs no split.
pub const DENSE_CHUNK: u32 = 64;

struct DenseOp {
    name: String,
    kernel: ParamSpec,
    bias: ParamSpec,
    in_n: usize,
    out_n: usize,
    relu: bool,
    gate: bool,
    set: KernelSet,
    out: OpOutput,
    /// `dy` can be bound as a uniform window (the CPU set's DY_UNIFORM variants)
    dy_uniform: bool,
    /// the GPU set's forward with subgroup sums (the device has them, opted in to)
    subgroups: bool,
    /// the GPU set's tiled forward and weight gradient (opted in to; OUT <= 16); before `subgroups`
    tiles: bool,
}

impl DenseOp {
    fn params(&self, rows: usize) -> DenseParams {
        DenseParams {
            batch: rows as u32,
            in_n: self.in_n as u32,
            out_n: self.out_n as u32,
            relu: self.relu as u32,
            chunk: DENSE_CHUNK,
            chunks: (self.in_n as u32).div_ceil(DENSE_CHUNK),
            ..Default::default()
        }
    }

    /// The CPU-shaped forward: partial sums per chunk of inputs, then their reduce (with the loss, where
    /// `loss` is given).
    fn forward_cpu(
        &self,
        r: &mut Recorder,
        io: &Io,
        rows: usize,
        (u, p): (&Buffer, &DenseParams),
        loss: Option<&LossIo>,
    ) {
        let partials = r.scratch(
            &format!("{} forward partials", self.name),
            (p.chunks as usize * rows * self.out_n * 4) as u64,
        );
        let grid = (
            p.chunks.div_ceil(64),
            rows.div_ceil(8) as u32,
            (self.out_n as u32).div_ceil(16),
        );
        if self.in_n.is_multiple_of(4) && rows >= QUAD_FORWARD_MIN_ROWS {
            // 4 inputs at a time as quads, W through its transpose (rewritten each step)
            let wt = r.scratch(
                &format!("{} transposed kernel", self.name),
                (self.in_n * self.out_n * 4) as u64,
            );
            let tgrid = r.grid_1d(self.out_n * self.in_n / 4, 64);
            r.dispatch(&TRANSPOSE4)
                .bind("P", u)
                .span("kernel", io.params, self.kernel.offset, self.kernel.len)
                .bind("wt", &wt)
                .grid(tgrid);
            r.dispatch(narrow(&FORWARD4, self.out_n))
                .bind("P", u)
                .bind("xq", io.x)
                .bind("wt", &wt)
                .bind("partials", &partials)
                .grid(grid);
        } else {
            r.dispatch(narrow(&FORWARD, self.out_n))
                .bind("P", u)
                .bind("x", io.x)
                .span("kernel", io.params, self.kernel.offset, self.kernel.len)
                .bind("partials", &partials)
                .grid((grid.0, rows.div_ceil(16) as u32, grid.2));
        }
        match loss {
            None => {
                let grid = r.grid_1d(rows * self.out_n, 64);
                r.dispatch(&FORWARD_REDUCE)
                    .bind("P", u)
                    .span("bias", io.params, self.bias.offset, self.bias.len)
                    .bind("y", &self.out.y)
                    .bind("partials", &partials)
                    .grid(grid);
            }
            Some(l) => {
                let d = r
                    .dispatch(&FORWARD_REDUCE_LOSS)
                    .bind("P", u)
                    .span("bias", io.params, self.bias.offset, self.bias.len)
                    .bind("y", &self.out.y)
                    .bind("partials", &partials);
                self.bind_loss(d, l).grid((rows.div_ceil(16) as u32, 1, 1));
            }
        }
    }

    /// The loss' bindings of a loss-fused forward.
    fn bind_loss<'r, 'a>(&self, d: DispatchBuilder<'r, 'a>, l: &LossIo) -> DispatchBuilder<'r, 'a> {
        d.bind("LP", l.params)
            .bind("labels", l.labels)
            .bind("class_weights", l.class_weights)
            .bind("dlogits", self.out.dy())
            .bind("per_example", l.per_example)
    }

    /// The GPU-shaped forward, with the loss where `loss` is given (OUT <= 16): tiled (4 examples per
    /// workgroup) where opted in to, else one workgroup per (example, 16 outputs), its sums by subgroups
    /// where opted in to (tiles first, where both are).
    fn forward_gpu(&self, r: &mut Recorder, io: &Io, rows: usize, u: &Buffer, loss: Option<&LossIo>) {
        let wide = ((self.out_n as u32).div_ceil(16), rows as u32, 1);
        let tiled = (1, rows.div_ceil(TILE_EXAMPLES) as u32, 1);
        let (kernel, grid) = match (loss.is_some(), self.tiles, self.subgroups) {
            (false, true, _) => (&FORWARD_TILED_GPU, tiled),
            (false, false, true) => (&FORWARD_GPU_SG, wide),
            (false, false, false) => (&FORWARD_GPU, wide),
            (true, true, _) => (&FORWARD_LOSS_TILED_GPU, tiled),
            (true, false, true) => (&FORWARD_LOSS_GPU_SG, wide),
            (true, false, false) => (&FORWARD_LOSS_GPU, wide),
        };
        let d = r
            .dispatch(kernel)
            .bind("P", u)
            .bind("x", io.x)
            .span("kernel", io.params, self.kernel.offset, self.kernel.len)
            .span("bias", io.params, self.bias.offset, self.bias.len)
            .bind("y", &self.out.y);
        match loss {
            Some(l) => self.bind_loss(d, l).grid(grid),
            None => d.grid(grid),
        }
    }

    fn backward_gpu(&self, r: &mut Recorder, io: &Io, rows: usize, u: &Buffer, dy: &Buffer) {
        // tiled: an invocation per (input row, output quad)
        let (kernel, grid) = match self.tiles {
            true => (&BACKWARD_WEIGHT_TILED_GPU, r.grid_1d((self.in_n + 1) * 4, 256)),
            false => (
                &BACKWARD_WEIGHT_GPU,
                r.grid_1d((self.in_n + 1) * self.out_n, 256),
            ),
        };
        r.dispatch(kernel)
            .gate(self.gate)
            .bind("P", u)
            .bind("x", io.x)
            .bind("y", &self.out.y)
            .bind("dy", dy)
            .span("dkernel", io.grads(), self.kernel.offset, self.kernel.len)
            .span("dbias", io.grads(), self.bias.offset, self.bias.len)
            .grid(grid);
        if let Some(dx) = io.dx {
            let grid = r.grid_1d(rows * self.in_n, 256);
            r.dispatch(&BACKWARD_INPUT_GPU)
                .gate(self.gate)
                .bind("P", u)
                .span("kernel", io.params, self.kernel.offset, self.kernel.len)
                .bind("y", &self.out.y)
                .bind("dy", dy)
                .bind("dx", dx)
                .grid(grid);
        }
    }

    fn backward_cpu(&self, r: &mut Recorder, io: &Io, u: &Buffer, dy: &Buffer) {
        // dy through a uniform window where the gradient buffer is one
        let pick = |plain: &'static KernelDef, windowed: &'static KernelDef| {
            narrow(if self.dy_uniform { windowed } else { plain }, self.out_n)
        };
        fn with_dy<'r, 'a>(
            b: DispatchBuilder<'r, 'a>,
            dy: &Buffer,
            uniform: bool,
        ) -> DispatchBuilder<'r, 'a> {
            if uniform {
                b.placeholder("dy").window("dy_u", dy, 0)
            } else {
                b.bind("dy", dy).placeholder_window("dy_u")
            }
        }
        let u_dy = self.dy_uniform;
        let in_groups = self.in_n.div_ceil(256) as u32;
        // x as quads where IN % 4 == 0 (bound twice: the X4 variants read `x4`, the others `x`)
        let quads = self.in_n.is_multiple_of(4);
        // 8 input rows per invocation where IN % 8 == 0 (x as quads only)
        let rows8 = self.in_n.is_multiple_of(8);
        let weight = match (rows8, quads) {
            (true, _) => pick(&BACKWARD_WEIGHT8, &BACKWARD_WEIGHT8_DY_U),
            (false, true) => pick(&BACKWARD_WEIGHT_X4, &BACKWARD_WEIGHT_DY_U_X4),
            (false, false) => pick(&BACKWARD_WEIGHT, &BACKWARD_WEIGHT_DY_U),
        };
        let weight = with_dy(r.dispatch(weight), dy, u_dy)
            .gate(self.gate)
            .bind("P", u);
        let weight = match (rows8, quads) {
            (true, _) => weight.bind("xq", io.x),
            (false, true) => weight.bind("x", io.x).bind("xq", io.x),
            (false, false) => weight.bind("x", io.x).placeholder("xq"),
        };
        // rows8: one more invocation sums the bias gradient (no bias dispatch)
        let weight_groups = match rows8 {
            true => (self.in_n / 8 + 1).div_ceil(64) as u32,
            false => in_groups,
        };
        let weight = weight
            .bind("y", &self.out.y)
            .span("dkernel", io.grads(), self.kernel.offset, self.kernel.len);
        let weight = match rows8 {
            true => weight.span("dbias", io.grads(), self.bias.offset, self.bias.len),
            false => weight,
        };
        weight.grid((weight_groups, self.out_n.div_ceil(16) as u32, 1));
        if !rows8 {
            let grid = r.grid_1d(self.out_n, 64);
            with_dy(
                r.dispatch(pick(&BACKWARD_BIAS, &BACKWARD_BIAS_DY_U)),
                dy,
                u_dy,
            )
            .gate(self.gate)
            .bind("P", u)
            .bind("y", &self.out.y)
            .span("dbias", io.grads(), self.bias.offset, self.bias.len)
            .grid(grid);
        }
        let Some(dx) = io.dx else {
            return;
        };
        // the first 16 outputs (stored as input quads where IN % 4 == 0), then (OUT > 16) the others added
        // (8 columns per invocation where IN % 8 == 0 and OUT <= 16)
        let cols8 = self.in_n.is_multiple_of(8) && self.out_n <= 16;
        let mut passes = vec![match (cols8, quads) {
            (true, _) => (pick(&BACKWARD_INPUT8, &BACKWARD_INPUT8_DY_U), "dx4"),
            (false, true) => (pick(&BACKWARD_INPUT4, &BACKWARD_INPUT4_DY_U), "dx4"),
            (false, false) => (pick(&BACKWARD_INPUT, &BACKWARD_INPUT_DY_U), "dx"),
        }];
        if self.out_n > 16 {
            passes.push((pick(&BACKWARD_INPUT_REST, &BACKWARD_INPUT_REST_DY_U), "dx"));
        }
        let groups8 = self.in_n.div_ceil(512) as u32;
        for (k, dx_name) in passes {
            let in_groups = if cols8 { groups8 } else { in_groups };
            with_dy(r.dispatch(k), dy, u_dy)
                .gate(self.gate)
                .bind("P", u)
                .span("kernel", io.params, self.kernel.offset, self.kernel.len)
                .bind("y", &self.out.y)
                .bind(dx_name, dx)
                .grid((in_groups, 1, 1));
        }
    }
}

impl Op for DenseOp {
    fn out(&self) -> &OpOutput {
        &self.out
    }

    fn forward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let p = self.params(rows);
        let u = r.uniform(&self.name, &p);
        match self.set {
            KernelSet::Gpu => {
                self.forward_gpu(r, io, rows, &u, None);
            }
            KernelSet::Cpu => self.forward_cpu(r, io, rows, (&u, &p), None),
        }
    }

    fn forward_with_loss(&self, r: &mut Recorder, io: &Io, rows: usize, loss: &LossIo) -> bool {
        if self.out_n > LOSS_FUSED_MAX_OUT || loss.classes != self.out_n || self.out.dy.is_none() {
            return false;
        }
        let p = self.params(rows);
        let u = r.uniform(&self.name, &p);
        match self.set {
            KernelSet::Gpu => self.forward_gpu(r, io, rows, &u, Some(loss)),
            KernelSet::Cpu => self.forward_cpu(r, io, rows, (&u, &p), Some(loss)),
        }
        true
    }

    fn backward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let dy = self.out.dy();
        let u = r.uniform(&self.name, &self.params(rows));
        match self.set {
            KernelSet::Gpu => self.backward_gpu(r, io, rows, &u, dy),
            KernelSet::Cpu => self.backward_cpu(r, io, &u, dy),
        }
    }
}
