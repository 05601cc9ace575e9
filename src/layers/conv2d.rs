//! Conv2D: square `kernel_size` and `strides`, padding `valid` or `same` (TensorFlow's: any extra row
//! or column of zeros at the bottom and right), a bias or none (`use_bias`), any activation, Keras
//! layouts (x NHWC, kernel (k, k, in, out), bias (out,)). Without a bias the op binds a zero bias and
//! a gradient sink of its own, so the kernels are the same. Shader: shaders/conv2d.wgsl (shared with the fused
//! conv + relu + max-pool op, `conv2d_pool.rs`). Twin: `reference::conv2d`.
//!
//! On the GPU, unfused (both kernel sets):
//!   forward          conv2d_forward                     bias and activation fused
//!   weight gradient  conv2d_weight_partials -> reduce   partial sums over chunks of output rows
//!   input gradient   conv2d_backward_input              a gather, no atomics
//! The backward applies relu' itself when `model::fuse` gives it the GATE variant.

use serde::Deserialize;

use super::{spatial, Build, Io, Layer, Op, OpOutput, ParamRestriction, TwinForward};
use crate::config::de::{linear, one, positive_usize, valid, yes};
use crate::config::{ConstraintConfig, RegularizerConfig};
use crate::error::Result;
use crate::keras::{self, FromKeras, LayerConfig};
use serde_json::{json, Map, Value};
use crate::gpu::{Buffer, DispatchBuilder, KernelDef, Recorder, Shader};
use crate::model::fuse::OpPlan;
use crate::model::{
    Activation, Init, LayerPlan, Padding, ParamDecl, ParamSpec, Role, Shape, MAX_VALUES,
};
use crate::reference as twin;

/// Keras' `Conv2D(filters, kernel_size, strides, padding, activation, use_bias, kernel_regularizer,
/// bias_regularizer, kernel_constraint, bias_constraint)`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2d {
    #[serde(deserialize_with = "positive_usize")]
    pub filters: usize,
    #[serde(deserialize_with = "positive_usize")]
    pub kernel_size: usize,
    /// checked by `output` (0 is refused there, naming the layer)
    #[serde(default = "one")]
    pub strides: usize,
    #[serde(default = "valid")]
    pub padding: Padding,
    #[serde(default = "linear")]
    pub activation: Activation,
    #[serde(default = "yes")]
    pub use_bias: bool,
    #[serde(default)]
    pub kernel_regularizer: Option<RegularizerConfig>,
    #[serde(default)]
    pub bias_regularizer: Option<RegularizerConfig>,
    #[serde(default)]
    pub kernel_constraint: Option<ConstraintConfig>,
    #[serde(default)]
    pub bias_constraint: Option<ConstraintConfig>,
}

impl Conv2d {
    pub fn new(
        filters: usize,
        kernel_size: usize,
        padding: Padding,
        activation: Activation,
    ) -> Self {
        Conv2d {
            filters,
            kernel_size,
            strides: 1,
            padding,
            activation,
            use_bias: true,
            kernel_regularizer: None,
            bias_regularizer: None,
            kernel_constraint: None,
            bias_constraint: None,
        }
    }

    /// The same layer with stride `s`.
    pub fn strided(mut self, s: usize) -> Self {
        self.strides = s;
        self
    }

    /// The same layer without a bias.
    pub fn without_bias(mut self) -> Self {
        self.use_bias = false;
        self
    }

    /// The twin's shapes for this layer over `batch` examples.
    pub fn dims(&self, l: &LayerPlan, batch: usize) -> twin::ConvDims {
        twin::ConvDims::strided(
            batch,
            spatial(l.input),
            self.filters,
            self.kernel_size,
            self.strides,
            self.padding,
        )
    }

    /// (output rows, rows of zeros above) and (output columns, columns of zeros left) for an h x w input.
    fn windows(&self, h: usize, w: usize) -> Option<((usize, usize), (usize, usize))> {
        let (k, s) = (self.kernel_size, self.strides);
        Some((self.padding.window(h, k, s)?, self.padding.window(w, k, s)?))
    }

    /// Stride 1 and the same padding on every side (valid, or same with an odd kernel): what the fused
    /// conv + pool kernels compute.
    pub fn plain(&self) -> bool {
        self.strides == 1 && (self.padding == Padding::Valid || self.kernel_size % 2 == 1)
    }
}

/// Keras' `Conv2D`: square kernels and strides, dilation 1, one group, channels last.
impl FromKeras for Conv2d {
    const CLASS: &'static str = "Conv2D";

    fn from_keras(c: &LayerConfig) -> std::result::Result<Self, String> {
        c.only("dilation_rate", &[json!(1), json!([1, 1])])?;
        c.only("groups", &[json!(1)])?;
        c.only("data_format", &[json!("channels_last")])?;
        let strides = match c.get("strides") {
            None => 1,
            Some(_) => c.square("strides")?,
        };
        let use_bias = match c.get("use_bias") {
            None => true,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("use_bias must be true or false, got {v}"))?,
        };
        let mut layer = Conv2d::new(
            c.count("filters")?,
            c.square("kernel_size")?,
            c.padding()?,
            c.activation(&[
                Activation::Relu,
                Activation::Linear,
                Activation::Tanh,
                Activation::Sigmoid,
                Activation::Elu,
                Activation::LeakyRelu,
            ])?,
        )
        .strided(strides);
        layer.use_bias = use_bias;
        Ok(layer)
    }
}

impl Layer for Conv2d {
    fn keras_name(&self) -> &'static str {
        "conv2d"
    }

    fn keras_class(&self) -> &'static str {
        Self::CLASS
    }

    fn keras_config(&self, name: &str) -> Map<String, Value> {
        let mut m = keras::base(name);
        let k = self.kernel_size;
        m.insert("filters".into(), json!(self.filters));
        m.insert("kernel_size".into(), json!([k, k]));
        m.insert("strides".into(), json!([self.strides, self.strides]));
        m.insert("padding".into(), json!(self.padding.keras()));
        m.insert("data_format".into(), json!("channels_last"));
        m.insert("dilation_rate".into(), json!([1, 1]));
        m.insert("groups".into(), json!(1));
        m.insert("activation".into(), json!(keras::activation_name(self.activation)));
        m.insert("use_bias".into(), json!(self.use_bias));
        keras::default_initializers(&mut m);
        m
    }

    fn output(&self, input: Shape, _last: bool) -> std::result::Result<Shape, String> {
        let k = self.kernel_size;
        let (h, w) = match input {
            Shape::Spatial { h, w, .. } => (h, w),
            Shape::Flat(_) => (1, 1),
        };
        let fits = |n: Option<usize>| n.is_some_and(|n| n <= MAX_VALUES);
        let kernel = k
            .checked_mul(k)
            .and_then(|kk| kk.checked_mul(input.len()))
            .and_then(|n| n.checked_mul(self.filters));
        if !fits(kernel) || !fits(h.checked_mul(w).and_then(|hw| hw.checked_mul(self.filters))) {
            return Err(format!(
                "its kernel or output is too large: at most {} values",
                u32::MAX
            ));
        }
        let Shape::Spatial { h, w, .. } = input else {
            return Err(
                "conv2d and max_pool2d need a spatial input, but the input is already flat".into(),
            );
        };
        if self.filters == 0 || k == 0 || self.strides == 0 {
            return Err("filters, kernel_size and strides must be at least 1".into());
        }
        if self.activation == Activation::Softmax {
            return Err("conv2d activation cannot be softmax (a dense layer's, or a Softmax layer's, ending the model)".into());
        }
        let Some(((oh, _), (ow, _))) = self.windows(h, w) else {
            return Err(format!(
                "kernel {k}x{k} is larger than its {h}x{w} input (padding 'valid'; 'same' pads it)"
            ));
        };
        Ok(Shape::Spatial {
            h: oh,
            w: ow,
            c: self.filters,
        })
    }

    fn params(&self, input: Shape) -> Vec<ParamDecl> {
        let (_, _, c) = spatial(input);
        let k = self.kernel_size;
        let mut p = vec![
            ParamDecl {
                suffix: "kernel",
                role: Role::Kernel,
                shape: vec![k, k, c, self.filters],
                init: Init::GlorotUniform {
                    fan_in: k * k * c,
                    fan_out: k * k * self.filters,
                },
                trainable: true,
            },
            ParamDecl {
                suffix: "bias",
                role: Role::Bias,
                shape: vec![self.filters],
                init: Init::Zeros,
                trainable: true,
            },
        ];
        p.truncate(if self.use_bias { 2 } else { 1 });
        p
    }

    fn macs(&self, input: Shape, output: Shape) -> f64 {
        let (_, _, c) = spatial(input);
        (output.len() * self.kernel_size * self.kernel_size * c) as f64
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
        let zeros = vec![0.0; self.filters];
        let bias = if self.use_bias { w[1] } else { &zeros };
        let mut y = twin::conv2d_forward(&self.dims(l, batch), x, w[0], bias, self.relu());
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
        let (dk, db, dx) =
            twin::conv2d_backward(&self.dims(l, batch), x, w[0], &fwd.y, &dz, self.relu());
        (if self.use_bias { vec![dk, db] } else { vec![dk] }, dx)
    }

    fn op(&self, plan: &OpPlan, b: &Build) -> Result<Box<dyn Op>> {
        Ok(Box::new(ConvOp::new(self, plan, b)?))
    }
}

pub static SHADER: Shader = crate::shader!("conv2d.wgsl");

pub static FORWARD: KernelDef = KernelDef {
    name: "Conv2dForward",
    shader: &SHADER,
    entry: "conv2d_forward",
    constants: &[],
    gated: false,
};
pub static WEIGHT_PARTIALS: KernelDef = KernelDef {
    name: "Conv2dWeightPartials",
    shader: &SHADER,
    entry: "conv2d_weight_partials",
    constants: &[],
    gated: true,
};
pub static WEIGHT_REDUCE: KernelDef = KernelDef {
    name: "Conv2dWeightReduce",
    shader: &SHADER,
    entry: "conv2d_weight_reduce",
    constants: &[],
    gated: false,
};
/// the GPU shape of the partial-sum reduce (of the fused op's chunks): 32 outputs x 8 lanes per workgroup
pub static WEIGHT_REDUCE_GPU: KernelDef = KernelDef {
    name: "Conv2dWeightReduceGpu",
    shader: &SHADER,
    entry: "conv2d_weight_reduce_gpu",
    constants: &[],
    gated: false,
};
pub static BACKWARD_INPUT: KernelDef = KernelDef {
    name: "Conv2dBackwardInput",
    shader: &SHADER,
    entry: "conv2d_backward_input",
    constants: &[],
    gated: true,
};

pub static KERNELS: &[&KernelDef] = &[
    &FORWARD,
    &WEIGHT_PARTIALS,
    &WEIGHT_REDUCE,
    &WEIGHT_REDUCE_GPU,
    &BACKWARD_INPUT,
];

/// The uniform of every conv2d.wgsl entry point, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConvParams {
    pub batch: u32,
    pub in_h: u32,
    pub in_w: u32,
    pub in_c: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub out_c: u32,
    pub k: u32,
    /// rows of zeros above the input
    pub pad_h: u32,
    pub relu: u32,
    /// weight gradient: output rows per chunk (pooled rows when fused with the pool)
    pub rows_per: u32,
    /// weight gradient: chunks in all
    pub chunks: u32,
    /// the GPU shape of the pooled weight gradient: pooled positions per chunk
    pub chunk_len: u32,
    /// columns of zeros left of the input
    pub pad_w: u32,
    pub stride: u32,
    /// the 3x3 one-channel fused forward: the 16-channel group this dispatch computes
    pub group: u32,
}
const _: () = assert!(std::mem::size_of::<ConvParams>() == 64);

/// The conv weight gradient's register tile per invocation, (patch rows, output channels), as
/// conv2d.wgsl writes them: `conv2d_weight_partials` and the fused `conv2d_weight_partials_pooled`.
pub const WEIGHT_GRAD_TILE: (usize, u32) = (8, 8);
pub const POOLED_WEIGHT_GRAD_TILE: (usize, u32) = (10, 16);

/// How the conv weight gradient splits a step: (`rows_per`, `chunks`), chunks of `rows_per` output rows
/// of one image (pooled rows when the conv is fused with its 2x2 pool), about 256 chunks per step (128
/// pooled: llvmpipe sums fewer partials for the same speed).
pub fn conv_weight_chunks(batch: usize, out_h: usize, pooled: bool) -> (u32, u32) {
    let h = if pooled { out_h / 2 } else { out_h }.max(1);
    let rows_per = (batch * h)
        .div_ceil(if pooled { 128 } else { 256 })
        .clamp(1, h);
    (rows_per as u32, (batch * h.div_ceil(rows_per)) as u32)
}

/// The patch-row table of a conv layer for its weight gradient: one (di, dj, input offset, kind) per row
/// t = (di*k + dj)*IC + c, then the bias row (kind 1), padded with kind 2 (no row) to whole groups of
/// either weight-gradient tile's rows.
pub fn conv_taps(cp: &ConvParams) -> Vec<[i32; 4]> {
    let mut taps = Vec::new();
    for di in 0..cp.k {
        for dj in 0..cp.k {
            for c in 0..cp.in_c {
                taps.push([
                    di as i32,
                    dj as i32,
                    ((di * cp.in_w + dj) * cp.in_c + c) as i32,
                    0,
                ]);
            }
        }
    }
    taps.push([0, 0, 0, 1]);
    taps.resize(
        taps.len().div_ceil(TAPS_MULTIPLE) * TAPS_MULTIPLE,
        [0, 0, 0, 2],
    );
    taps
}

/// conv_taps pads to a multiple of both tiles' row counts (their least common multiple).
pub const TAPS_MULTIPLE: usize = {
    let (a, b) = (WEIGHT_GRAD_TILE.0, POOLED_WEIGHT_GRAD_TILE.0);
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
};

/// The shapes and parameters of a conv op, unfused or fused with its pool: what both record from.
pub(crate) struct ConvCore {
    pub name: String,
    pub kernel: ParamSpec,
    /// the bias (None: `use_bias = false`)
    pub bias: Option<ParamSpec>,
    /// without a bias: zeros the forward reads as one, and where the reduce writes its gradient
    no_bias: Option<(Buffer, Buffer)>,
    /// input (h, w, c) and conv output (h, w, c)
    pub input: (usize, usize, usize),
    pub conv_out: (usize, usize, usize),
    pub k: usize,
    pub stride: usize,
    /// zeros above and left of the input
    pub pad: (usize, usize),
    pub relu: bool,
    /// the patch-row table (`conv_taps`), also readable as a uniform window
    pub taps: Buffer,
}

impl ConvCore {
    pub fn new(spec: &Conv2d, name: &str, params: &[ParamSpec], input: Shape, b: &Build) -> Self {
        let (h, w, c) = spatial(input);
        let k = spec.kernel_size;
        let ((oh, pad_h), (ow, pad_w)) = spec.windows(h, w).expect("checked by `output`");
        let no_bias = (!spec.use_bias).then(|| {
            let bytes = (spec.filters * 4) as u64;
            (
                b.ctx.storage_zeroed(&format!("{name} zero bias"), bytes),
                b.ctx.storage_zeroed(&format!("{name} unused bias gradient"), bytes),
            )
        });
        let taps = conv_taps(&ConvParams {
            k: k as u32,
            in_w: w as u32,
            in_c: c as u32,
            ..Default::default()
        });
        ConvCore {
            name: name.to_string(),
            kernel: params[0].clone(),
            bias: params.get(1).filter(|_| spec.use_bias).cloned(),
            no_bias,
            input: (h, w, c),
            conv_out: (oh, ow, spec.filters),
            k,
            stride: spec.strides,
            pad: (pad_h, pad_w),
            relu: spec.activation == Activation::Relu,
            taps: b
                .ctx
                .storage_uniform_init(&format!("{name} taps"), bytemuck::cast_slice(&taps)),
        }
    }

    /// The uniform over `rows` examples, with the weight gradient's split (`rows_per`, `chunks`,
    /// `chunk_len`).
    pub fn params(
        &self,
        rows: usize,
        (rows_per, chunks, chunk_len): (u32, u32, u32),
    ) -> ConvParams {
        let ((h, w, c), (oh, ow, oc)) = (self.input, self.conv_out);
        ConvParams {
            batch: rows as u32,
            in_h: h as u32,
            in_w: w as u32,
            in_c: c as u32,
            out_h: oh as u32,
            out_w: ow as u32,
            out_c: oc as u32,
            k: self.k as u32,
            pad_h: self.pad.0 as u32,
            pad_w: self.pad.1 as u32,
            stride: self.stride as u32,
            relu: self.relu as u32,
            rows_per,
            chunks,
            chunk_len,
            ..Default::default()
        }
    }

    /// Rows of the patch table (k*k*IC) plus the bias row.
    pub fn patch_rows(&self) -> usize {
        self.kernel.len / self.conv_out.2 + 1
    }

    /// Binds the bias `name` reads: the parameters' span, or the zeros of a layer without one.
    pub fn bias<'r, 'a>(&self, d: DispatchBuilder<'r, 'a>, io: &Io) -> DispatchBuilder<'r, 'a> {
        match (&self.bias, &self.no_bias) {
            (Some(b), _) => d.span("bias", io.params, b.offset, b.len),
            (None, Some((zeros, _))) => d.bind("bias", zeros),
            (None, None) => unreachable!("a conv without a bias has its zeros"),
        }
    }

    /// Binds `dbias`: the gradients' span, or the sink of a layer without a bias.
    fn dbias<'r, 'a>(&self, d: DispatchBuilder<'r, 'a>, io: &Io) -> DispatchBuilder<'r, 'a> {
        match (&self.bias, &self.no_bias) {
            (Some(b), _) => d.span("dbias", io.grads(), b.offset, b.len),
            (None, Some((_, sink))) => d.bind("dbias", sink),
            (None, None) => unreachable!("a conv without a bias has its sink"),
        }
    }

    /// The weight-gradient partial sums of `chunks` chunks, for this plan.
    pub fn partials(&self, r: &mut Recorder, chunks: u32) -> Buffer {
        r.scratch(
            &format!("{} weight-gradient partials", self.name),
            (chunks as usize * self.patch_rows() * self.conv_out.2 * 4) as u64,
        )
    }

    /// Sum the partials into dK and db: one invocation per output, or (`gpu_shape`) 8 lanes per
    /// output in workgroups of 32 outputs.
    pub fn reduce(
        &self,
        r: &mut Recorder,
        u: &Buffer,
        io: &Io,
        partials: &Buffer,
        gpu_shape: bool,
    ) {
        let outputs = self.patch_rows() * self.conv_out.2;
        let (kernel, grid) = if gpu_shape {
            (
                &WEIGHT_REDUCE_GPU,
                r.grid_1d(outputs * 8, 256),
            )
        } else {
            (&WEIGHT_REDUCE, r.grid_1d(outputs, 64))
        };
        let d = r
            .dispatch(kernel)
            .bind("P", u)
            .span("dkernel", io.grads(), self.kernel.offset, self.kernel.len);
        self.dbias(d, io).bind("partials", partials).grid(grid);
    }

    /// Grid of one invocation per (input pixel, 16 input channels) (the input gradient).
    pub fn input_grid(&self, rows: usize) -> (u32, u32, u32) {
        let (h, w, c) = self.input;
        ((h * w).div_ceil(64) as u32, rows as u32, c.div_ceil(16) as u32)
    }
}

/// Conv2D on its own.
struct ConvOp {
    core: ConvCore,
    gate: bool,
    out: OpOutput,
}

impl ConvOp {
    fn new(spec: &Conv2d, plan: &OpPlan, b: &Build) -> Result<Self> {
        Ok(ConvOp {
            core: ConvCore::new(spec, &plan.name, &plan.params, plan.input, b),
            gate: plan.gate,
            out: b.outputs(plan, false)?,
        })
    }

    fn uniform(&self, r: &mut Recorder, rows: usize) -> Buffer {
        let (rows_per, chunks) = conv_weight_chunks(rows, self.core.conv_out.0, false);
        let p = self.core.params(rows, (rows_per, chunks, 0));
        r.uniform(&self.core.name, &p)
    }
}

impl Op for ConvOp {
    fn out(&self) -> &OpOutput {
        &self.out
    }

    fn forward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let c = &self.core;
        let u = self.uniform(r, rows);
        let (oh, ow, oc) = c.conv_out;
        let d = r
            .dispatch(&FORWARD)
            .bind("P", &u)
            .bind("x", io.x)
            .span("kernel", io.params, c.kernel.offset, c.kernel.len);
        c.bias(d, io)
            .bind("y", &self.out.y)
            .grid((
                (oh * ow).div_ceil(256) as u32,
                rows as u32,
                oc.div_ceil(8) as u32,
            ));
    }

    fn backward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let c = &self.core;
        let dy = self.out.dy();
        let u = self.uniform(r, rows);
        let (_, chunks) = conv_weight_chunks(rows, c.conv_out.0, false);
        let partials = c.partials(r, chunks);
        // (chunks, patch-row groups, channel groups); the argmax binding is declared but unused here
        r.dispatch(&WEIGHT_PARTIALS)
            .gate(self.gate)
            .bind("P", &u)
            .bind("x", io.x)
            .bind("y", &self.out.y)
            .bind("dy", dy)
            .bind("partials", &partials)
            .bind("taps", &c.taps)
            .placeholder("argmax")
            .grid((
                (chunks as usize).div_ceil(64) as u32,
                c.patch_rows().div_ceil(WEIGHT_GRAD_TILE.0) as u32,
                (c.conv_out.2 as u32).div_ceil(WEIGHT_GRAD_TILE.1),
            ));
        c.reduce(r, &u, io, &partials, false);
        if let Some(dx) = io.dx {
            r.dispatch(&BACKWARD_INPUT)
                .gate(self.gate)
                .bind("P", &u)
                .span("kernel", io.params, c.kernel.offset, c.kernel.len)
                .bind("y", &self.out.y)
                .bind("dy", dy)
                .bind("dx", dx)
                .placeholder("argmax")
                .grid(c.input_grid(rows));
        }
    }
}
