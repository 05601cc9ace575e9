//! The loss and the metrics: fused softmax + categorical cross-entropy from the logits, sparse or
//! with smoothed one-hot targets (and dL/dlogits), then the accumulation of Keras' loss tracker (the batch-size-weighted mean, the
//! regularization loss included) and accuracy, which also advances the step state on the GPU.
//! In a fused step a dense last op of at most 16 outputs computes the loss at the end of its forward
//! (`Op::forward_with_loss`, shaders/dense_loss.wgsl), and only `accumulate` is dispatched here.
//! Shaders: shaders/softmax_xent.wgsl (the per-example math, shared) + shaders/loss.wgsl. Twin:
//! `reference::softmax_xent`.

use super::gather::GpuSplit;
use crate::gpu::{Buffer, Context, KernelDef, Recorder, Shader};
use crate::layers::LossIo;

pub static SHADER: Shader = crate::shader!("softmax_xent.wgsl", "loss.wgsl");

pub static SOFTMAX_XENT: KernelDef = KernelDef {
    name: "SoftmaxXent",
    shader: &SHADER,
    entry: "softmax_xent",
    constants: &[],
    gated: false,
};
pub static ACCUMULATE: KernelDef = KernelDef {
    name: "Accumulate",
    shader: &SHADER,
    entry: "accumulate",
    constants: &[],
    gated: false,
};

pub static KERNELS: &[&KernelDef] = &[&SOFTMAX_XENT, &ACCUMULATE];

/// The uniform of loss.wgsl, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LossParams {
    pub batch: u32,
    pub classes: u32,
    /// what `accumulate` advances: bit 0 the optimizer step, bit 1 the batch index; bit 2: the
    /// softmax_xent of a training step weighs by class_weight
    pub advance: u32,
    /// targets `onehot · (1 − s) + s / classes` (0: the label's one-hot)
    pub label_smoothing: f32,
}
const _: () = assert!(std::mem::size_of::<LossParams>() == 16);

/// The metrics of a pass, field for field with the WGSL `Metrics`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Metrics {
    pub loss_sum: f32,
    pub correct: f32,
    pub count: f32,
    /// set when a non-finite loss was seen
    pub nonfinite: u32,
}
const _: () = assert!(std::mem::size_of::<Metrics>() == 16);

/// The per-example cross-entropy and correctness of a batch, [batch, 2].
pub struct Loss {
    per_example: Buffer,
    classes: usize,
    label_smoothing: f32,
    /// Keras' class_weight, [classes] (ones when none)
    class_weights: Buffer,
    weighted: bool,
}

impl Loss {
    /// [batch, 2]: each example's cross-entropy and whether it was classified right
    pub fn per_example(&self) -> &Buffer {
        &self.per_example
    }

    pub fn new(ctx: &Context, batch: usize, classes: usize, label_smoothing: f32) -> Self {
        Self::weighted(ctx, batch, classes, label_smoothing, None)
    }

    /// With Keras' `class_weight` (per class) on training steps.
    pub fn weighted(
        ctx: &Context,
        batch: usize,
        classes: usize,
        label_smoothing: f32,
        class_weights: Option<&[f32]>,
    ) -> Self {
        let ones = vec![1.0f32; classes.max(1)];
        let w = class_weights.unwrap_or(&ones);
        Loss {
            per_example: ctx.storage_zeroed("per-example loss", (batch * 2 * 4) as u64),
            classes,
            label_smoothing,
            class_weights: ctx.storage_init("class weights", bytemuck::cast_slice(w)),
            weighted: class_weights.is_some(),
        }
    }

    /// The uniform of the loss over `rows` examples (and of `accumulate` after it), in a training step
    /// when `training`.
    pub fn params(&self, r: &mut Recorder, rows: usize, training: bool) -> Buffer {
        let p = LossParams {
            batch: rows as u32,
            classes: self.classes as u32,
            advance: match (training, self.weighted) {
                (true, true) => 7,
                (true, false) => 3,
                (false, _) => 2,
            },
            label_smoothing: self.label_smoothing,
        };
        r.uniform("loss", &p)
    }

    /// What a last op binds to compute this loss in its forward (`Op::forward_with_loss`), with the
    /// uniform `u` and the batch's labels `y`.
    pub fn io<'a>(&'a self, u: &'a Buffer, y: &'a Buffer) -> LossIo<'a> {
        LossIo {
            params: u,
            labels: y,
            class_weights: &self.class_weights,
            per_example: &self.per_example,
            classes: self.classes,
        }
    }

    /// The loss of `rows` examples from `logits` and the labels `y`, writing dL/dlogits; then (in
    /// `accumulate`) their metrics, advancing the optimizer step when `training`. Returns the uniform
    /// both read.
    pub fn record_softmax_xent(
        &self,
        r: &mut Recorder,
        io: (&Buffer, &Buffer, &Buffer),
        rows: usize,
        training: bool,
    ) -> Buffer {
        let u = self.params(r, rows, training);
        self.record_softmax_xent_with(r, &u, io, rows);
        u
    }

    /// The loss kernel with the uniform `u` (from `params`).
    pub fn record_softmax_xent_with(
        &self,
        r: &mut Recorder,
        u: &Buffer,
        (logits, y, dlogits): (&Buffer, &Buffer, &Buffer),
        rows: usize,
    ) {
        r.dispatch(&SOFTMAX_XENT)
            .bind("LP", u)
            .bind("logits", logits)
            .bind("labels", y)
            .bind("class_weights", &self.class_weights)
            .bind("dlogits", dlogits)
            .bind("per_example", &self.per_example)
            .grid((rows.div_ceil(64) as u32, 1, 1));
    }

    /// Add this batch to the split's metrics (with the regularization loss `reg`) and advance its state.
    pub fn record_accumulate(&self, r: &mut Recorder, u: &Buffer, reg: &Buffer, split: &GpuSplit) {
        r.dispatch(&ACCUMULATE)
            .bind("LP", u)
            .bind("per_example", &self.per_example)
            .bind("reg_loss", reg)
            .bind("metrics", &split.metrics)
            .bind("state", &split.state)
            .grid((1, 1, 1));
    }
}
