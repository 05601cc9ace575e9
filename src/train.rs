//! The GPU trainer. Data, weights, gradients, Adam state and metrics live on the GPU. A training step is a
//! fixed list of dispatches recorded once (`StepPlan`), replayed many times per submit; the batch index
//! and Adam's step counter advance on the GPU, so a step needs neither an upload nor a readback. The host
//! reads the 16-byte metrics block once per chunk of steps (progress tick) and at the end of an epoch.
//!
//! Step order (Keras): gather -> forward -> softmax-CE (+dlogits) -> backward -> regularization loss ->
//! Adam with the penalty gradient folded in -> constraints -> metrics (+ advance step/batch).

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::Weights;
use crate::data::Split;
use crate::error::{Error, Result};
use crate::gpu::{
    span, uniforms as U, whole, window, Context, Dispatch, Kernel, KernelSet, Pipelines,
};
use crate::model::{Activation, LayerSpec, ModelPlan, Padding, ParamSpec, Role, Shape};
use crate::restrict::{norm_layout, Constraint, Restrictions};

/// Gradient clipping, as Keras optimizers take it (at most one of the three).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum GradClip {
    #[default]
    None,
    /// `clipnorm`: each tensor's gradient scaled to L2 norm <= c
    Norm(f32),
    /// `global_clipnorm`: all gradients scaled together to global L2 norm <= c
    GlobalNorm(f32),
    /// `clipvalue`: each element clipped to [-c, c]
    Value(f32),
}

/// Adam hyper-parameters (Keras defaults), decoupled weight decay and gradient clipping.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub clip: GradClip,
}

impl Hyper {
    /// Adam's step size for step t (1-based), in float32 and in Keras' order:
    /// `lr * sqrt(1 - beta2^t) / (1 - beta1^t)` with `powf`.
    pub fn alpha(&self, t: u64) -> f32 {
        let tf = t as f32;
        self.lr * (1.0 - self.beta2.powf(tf)).sqrt() / (1.0 - self.beta1.powf(tf))
    }
}

impl Default for Hyper {
    fn default() -> Self {
        Hyper {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
            weight_decay: 0.0,
            clip: GradClip::None,
        }
    }
}

/// Per-tensor values in the model's parameter order.
pub type Tensors = Vec<Vec<f32>>;

/// Inputs per chunk of the CPU-shaped dense forward's split-K (one invocation's share of the inputs):
/// llvmpipe wants few long chunks (64: 0.61 ms + a 0.07 ms reduce per step vs 0.64 + 0.11 with 32). The
/// GPU kernel set's dense forward needs no split.
const DENSE_CHUNK: u32 = 64;

/// Steps recorded into one command buffer; the metrics of a chunk are read while the next one runs.
const CHUNK_STEPS: usize = 64;

/// Glorot-uniform kernels (Keras fans), zero biases, from a seeded ChaCha8 stream.
pub fn init_weights(model: &ModelPlan, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    model
        .params
        .iter()
        .map(|p| match p.role {
            Role::Bias => vec![0.0; p.len],
            Role::Kernel => {
                let (fin, fout) = ModelPlan::fans(p);
                let limit = (6.0 / (fin + fout) as f64).sqrt() as f32;
                (0..p.len)
                    .map(|_| rng.random_range(-limit..limit))
                    .collect()
            }
        })
        .collect()
}

/// The example order of an epoch: identity, or a permutation seeded by (seed, epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(
            seed ^ 0x5eed_0000_0000_0000 ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        order.shuffle(&mut rng);
    }
    order
}

struct GpuSplit {
    images: wgpu::Buffer,
    labels: wgpu::Buffer,
    perm: wgpu::Buffer,
    n: usize,
}

/// Averages over a pass: Keras' loss tracker (batch-size-weighted mean, regularization included) and accuracy.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PassMetrics {
    pub loss: f64,
    pub accuracy: f64,
    pub count: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub metrics: PassMetrics,
    pub images_per_second: f64,
}

#[derive(Clone, Copy, Debug)]
pub struct EpochStats {
    /// over the steps of this call
    pub train: PassMetrics,
    pub train_seconds: f64,
    /// steps run by this call
    pub steps: usize,
    /// the epoch's next step (its length when the epoch is done)
    pub next_step: usize,
    pub completed: bool,
}

pub struct Trainer<'a> {
    ctx: &'a Context,
    pipes: Pipelines,
    pub model: ModelPlan,
    pub restrictions: Restrictions,
    pub hyper: Hyper,
    pub batch_size: usize,
    params: wgpu::Buffer,
    m: wgpu::Buffer,
    v: wgpu::Buffer,
    /// Adam's alpha for each step of the current epoch
    alphas: wgpu::Buffer,
    grads: wgpu::Buffer,
    train: GpuSplit,
    test: GpuSplit,
    train_state: wgpu::Buffer,
    eval_state: wgpu::Buffer,
    train_metrics: wgpu::Buffer,
    eval_metrics: wgpu::Buffer,
    staging: [wgpu::Buffer; 2],
    train_full: Vec<Dispatch>,
    train_last: Option<Vec<Dispatch>>,
    eval_full: Vec<Dispatch>,
    eval_last: Option<Vec<Dispatch>>,
    eval_reg: Option<Dispatch>,
    /// constraints applied once after each epoch
    epoch_end: Vec<Dispatch>,
    /// per layer: a relu conv that runs fused with the 2x2 max-pool after it
    fused: Vec<bool>,
    /// the kernel shapes this trainer runs (the context's)
    set: KernelSet,
    /// the last layer's output (logits) of the current batch
    logits: wgpu::Buffer,
    /// optimizer steps done (Keras `iterations`)
    pub step: u64,
}

/// Buffers shared by every plan (sized for `batch_size` rows).
struct Work {
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    acts: Vec<wgpu::Buffer>,
    act_of: Vec<usize>,
    dacts: Vec<wgpu::Buffer>,
    argmax: Vec<Option<wgpu::Buffer>>,
    per_example: wgpu::Buffer,
    reg: wgpu::Buffer,
    grads: wgpu::Buffer,
    segments: wgpu::Buffer,
    adam_uniform: wgpu::Buffer,
    sumsq: wgpu::Buffer,
    /// bound where a kernel variant declares a buffer it never reads
    placeholder: wgpu::Buffer,
    /// bound where a kernel variant declares a uniform window it never reads
    placeholder_window: wgpu::Buffer,
    /// `byte_to_unit()`, read by the batch gather
    byte_to_unit: wgpu::Buffer,
    /// per layer: a conv layer's patch-row table (`conv_taps`)
    taps: Vec<Option<wgpu::Buffer>>,
    /// per activation buffer: its gradient buffer can be bound as a uniform window
    dy_uniform: Vec<bool>,
    n_segments: u32,
    any_penalty: bool,
    clip_by_norm: bool,
}

impl<'a> Trainer<'a> {
    /// Upload the data once, allocate every buffer and record the step plans.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &'a Context,
        model: ModelPlan,
        restrictions: Restrictions,
        hyper: Hyper,
        batch_size: usize,
        train: &Split,
        test: &Split,
        weights: &[Vec<f32>],
    ) -> Result<Self> {
        // A relu conv followed by a 2x2 max-pool runs as one fused pass, in the shapes of the context's
        // kernel set.
        Self::with_shapes(
            ctx,
            model,
            restrictions,
            hyper,
            batch_size,
            train,
            test,
            weights,
            true,
            ctx.kernel_set,
        )
    }

    /// `new`, choosing whether a relu conv followed by a 2x2 max-pool runs as one fused pass (what `new`
    /// picks) or as the separate conv, pool and gradient kernels, and which kernel shapes run (`new`: the
    /// context's).
    #[allow(clippy::too_many_arguments)]
    pub fn with_shapes(
        ctx: &'a Context,
        model: ModelPlan,
        restrictions: Restrictions,
        hyper: Hyper,
        batch_size: usize,
        train: &Split,
        test: &Split,
        weights: &[Vec<f32>],
        fuse: bool,
        set: KernelSet,
    ) -> Result<Self> {
        restrictions.validate(&model)?;
        let fused = if fuse {
            fused_conv_pool(&model, set)
        } else {
            vec![false; model.layers.len()]
        };
        if batch_size == 0 {
            return Err(Error::Config("batch size must be at least 1".into()));
        }
        let max_rows = ctx.limits.max_compute_workgroups_per_dimension as usize;
        if batch_size > max_rows {
            return Err(Error::Config(format!(
                "batch size {batch_size} is above the adapter's max_compute_workgroups_per_dimension ({max_rows}), \
                 which bounds a batch: lower --batch-size"
            )));
        }
        if !(hyper.lr > 0.0 && hyper.lr.is_finite()) {
            return Err(Error::Config(format!(
                "learning rate must be a positive number, got {}",
                hyper.lr
            )));
        }
        let [h, w, c] = model.spec.input;
        for (what, s) in [("training", train), ("test", test)] {
            if (s.height, s.width, s.channels) != (h, w, c) {
                return Err(Error::Config(format!(
                    "{what} images are {}x{}x{}, but the model's input is {h}x{w}x{c}",
                    s.height, s.width, s.channels
                )));
            }
            if s.is_empty() {
                return Err(Error::Config(format!("the {what} set is empty")));
            }
        }
        if batch_size > train.len() {
            return Err(Error::Config(format!(
                "batch size {batch_size} is larger than the {} training examples: lower --batch-size",
                train.len()
            )));
        }
        let pipes = Pipelines::new(ctx)?;
        let max_binding = ctx.limits.max_storage_buffer_binding_size;
        let check = |what: &str, bytes: u64| -> Result<()> {
            if bytes > max_binding {
                Err(Error::gpu(
                    format!("buffer '{what}'"),
                    format!(
                        "needs {bytes} bytes, above the adapter's max_storage_buffer_binding_size of {max_binding}; \
                         use --limit-train / a smaller --batch-size"
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let upload = |s: &Split, what: &str| -> Result<GpuSplit> {
            check(&format!("{what} images"), s.images.len() as u64)?;
            Ok(GpuSplit {
                images: ctx.storage_init(&format!("{what} images"), &s.images),
                labels: ctx
                    .storage_init(&format!("{what} labels"), bytemuck::cast_slice(&s.labels)),
                perm: ctx.storage_init(
                    &format!("{what} order"),
                    bytemuck::cast_slice(&(0..s.len() as u32).collect::<Vec<_>>()),
                ),
                n: s.len(),
            })
        };
        let train_gpu = upload(train, "train")?;
        let test_gpu = upload(test, "test")?;

        let flat = model.flat_len;
        // Adam binds the whole flat parameter buffer (as do m, v and the gradients)
        check("parameters", (flat as u64).saturating_mul(4))?;
        let mut flat_init = vec![0f32; flat];
        if weights.len() != model.params.len() {
            return Err(Error::Model(format!(
                "{} weight tensors given, the model has {}",
                weights.len(),
                model.params.len()
            )));
        }
        for (p, w) in model.params.iter().zip(weights) {
            if w.len() != p.len {
                return Err(Error::Model(format!(
                    "{}: {} values given, expected {}",
                    p.name,
                    w.len(),
                    p.len
                )));
            }
            flat_init[p.offset..p.offset + p.len].copy_from_slice(w);
        }
        let params = ctx.storage_uniform_init("params", bytemuck::cast_slice(&flat_init));
        // whole 64-element blocks: adam_update reads and writes them as vec4s
        let padded = flat.div_ceil(64) * 64;
        let m = ctx.storage_zeroed("adam m", (padded * 4) as u64);
        let v = ctx.storage_zeroed("adam v", (padded * 4) as u64);

        // Work buffers sized for a full batch.
        let b = batch_size;
        let mut acts = Vec::new();
        let mut act_of = Vec::new();
        let mut dacts = Vec::new();
        let mut dy_uniform = Vec::new();
        let mut argmax = Vec::new();
        // each conv layer's patch-row table (conv_taps), read by its weight gradient and fused forward
        let taps = model
            .layers
            .iter()
            .map(|l| match (&l.spec, l.input) {
                (LayerSpec::Conv2d { kernel_size, .. }, Shape::Spatial { w, c, .. }) => {
                    let cp = U::ConvParams {
                        k: *kernel_size as u32,
                        in_w: w as u32,
                        in_c: c as u32,
                        ..Default::default()
                    };
                    Some(ctx.storage_uniform_init(
                        &format!("{} taps", l.name),
                        bytemuck::cast_slice(&conv_taps(&cp)),
                    ))
                }
                _ => None,
            })
            .collect();
        for (i, l) in model.layers.iter().enumerate() {
            if matches!(l.spec, LayerSpec::Flatten) && i > 0 {
                act_of.push(act_of[i - 1]);
                argmax.push(None);
                continue;
            }
            // a conv fused with its pool never stores its output or the output's gradient
            let bytes = if fused[i] {
                4
            } else {
                (b * l.output.len() * 4) as u64
            };
            check(&format!("{} output", l.name), bytes)?;
            acts.push(ctx.storage_zeroed(&format!("{} out", l.name), bytes));
            // a dense layer's output gradient that fits a uniform window is read through one
            let window = set == KernelSet::Cpu
                && matches!(l.spec, LayerSpec::Dense { .. })
                && bytes <= crate::gpu::UNIFORM_WINDOW;
            dy_uniform.push(window);
            dacts.push(if window {
                ctx.storage_uniform_zeroed(&format!("{} dout", l.name), bytes)
            } else {
                ctx.storage_zeroed(&format!("{} dout", l.name), bytes)
            });
            act_of.push(acts.len() - 1);
            argmax.push(if matches!(l.spec, LayerSpec::MaxPool2d { .. }) {
                Some(ctx.storage_zeroed(&format!("{} argmax", l.name), bytes))
            } else {
                None
            });
        }
        check("input batch", (b * model.input_len() * 4) as u64)?;
        // one segment per tensor: its span and penalties
        let segs: Vec<U::Segment> = model
            .params
            .iter()
            .map(|p| {
                let r = restrictions
                    .get(&p.name)
                    .and_then(|t| t.regularizer)
                    .unwrap_or_default();
                U::Segment {
                    start: p.offset as u32,
                    len: p.len as u32,
                    l1: r.l1,
                    l2: r.l2,
                    proximal: r.proximal as u32,
                    ..Default::default()
                }
            })
            .collect();
        // optimizer.wgsl reads the segments as a uniform array of 2048
        if segs.len() > 2048 {
            return Err(Error::Model(format!(
                "{} parameter tensors; clampnet's optimizer takes at most 2048: use fewer layers",
                segs.len()
            )));
        }
        let n_segments = segs.len() as u32;
        let any_penalty = segs.iter().any(|s| s.l1 != 0.0 || s.l2 != 0.0);
        let (clip_mode, clip_value) = match hyper.clip {
            GradClip::None => (0, 0.0),
            GradClip::Norm(c) => (1, c),
            GradClip::GlobalNorm(c) => (2, c),
            GradClip::Value(c) => (3, c),
        };
        if clip_mode != 0 && !(clip_value > 0.0 && clip_value.is_finite()) {
            return Err(Error::Config(format!(
                "gradient clipping value must be a positive number, got {clip_value}"
            )));
        }
        if !(hyper.weight_decay >= 0.0 && hyper.weight_decay.is_finite()) {
            return Err(Error::Config(format!(
                "weight_decay must be >= 0, got {}",
                hyper.weight_decay
            )));
        }
        let adam = U::AdamParams {
            n: flat as u32,
            n_segments,
            lr: hyper.lr,
            beta1: hyper.beta1,
            beta2: hyper.beta2,
            // Keras computes 1 - beta in Python (double) and casts: do the same.
            one_minus_beta1: (1.0 - hyper.beta1 as f64) as f32,
            one_minus_beta2: (1.0 - hyper.beta2 as f64) as f32,
            eps: hyper.eps,
            weight_decay: hyper.weight_decay,
            clip_mode,
            clip_value,
            ..Default::default()
        };
        let work = Work {
            x: ctx.storage_zeroed("batch x", (b * model.input_len() * 4) as u64),
            y: ctx.storage_zeroed("batch y", (b * 4) as u64),
            acts,
            act_of,
            dacts,
            argmax,
            per_example: ctx.storage_zeroed("per-example loss", (b * 2 * 4) as u64),
            reg: ctx.storage_zeroed("regularization loss", 4),
            grads: ctx.storage_zeroed("grads", (padded * 4) as u64),
            segments: ctx.storage_uniform_init("penalty segments", bytemuck::cast_slice(&segs)),
            adam_uniform: ctx.uniform("adam params", &adam),
            sumsq: ctx.storage_zeroed("gradient sums of squares", (n_segments * 4) as u64),
            placeholder: ctx.storage_zeroed("placeholder", 4),
            placeholder_window: ctx.storage_uniform_zeroed("placeholder window", 0),
            byte_to_unit: ctx.uniform("byte to unit", &byte_to_unit()),
            taps,
            dy_uniform,
            n_segments,
            any_penalty,
            clip_by_norm: clip_mode == 1 || clip_mode == 2,
        };
        let state = |label| ctx.storage_zeroed(label, 8);
        let metrics = |label| ctx.storage_zeroed(label, 16);
        let staging = || {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("metrics readback"),
                size: 16,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let model_last = model.layers.len() - 1;
        let mut t = Trainer {
            ctx,
            pipes,
            model,
            restrictions,
            hyper,
            batch_size,
            params,
            m,
            v,
            alphas: ctx
                .storage_zeroed("adam alphas", (train.len().div_ceil(batch_size) * 4) as u64),
            grads: work.grads.clone(),
            train: train_gpu,
            test: test_gpu,
            train_state: state("train state"),
            eval_state: state("eval state"),
            train_metrics: metrics("train metrics"),
            eval_metrics: metrics("eval metrics"),
            staging: [staging(), staging()],
            train_full: Vec::new(),
            train_last: None,
            eval_full: Vec::new(),
            eval_last: None,
            eval_reg: None,
            epoch_end: Vec::new(),
            fused,
            set,
            logits: work.acts[work.act_of[model_last]].clone(),
            step: 0,
        };
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        t.train_full = t.record(&work, b, true);
        t.train_last = (!t.train.n.is_multiple_of(b)).then(|| t.record(&work, t.train.n % b, true));
        t.eval_full = t.record(&work, b.min(t.test.n), false);
        let eb = b.min(t.test.n);
        t.eval_last = (!t.test.n.is_multiple_of(eb)).then(|| t.record(&work, t.test.n % eb, false));
        t.eval_reg = work.any_penalty.then(|| t.reg_dispatch(&work));
        t.epoch_end = t.constraint_dispatches(true);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::gpu("recording the training step", e));
        }
        ctx.check()?;
        Ok(t)
    }

    /// 1-D grid of `invocations` in workgroups of 64, folded above the per-dimension limit.
    fn groups(&self, invocations: usize) -> (u32, u32, u32) {
        self.groups_of(invocations, 64)
    }

    /// 1-D grid of `invocations` in workgroups of `size`, folded above the per-dimension limit.
    fn groups_of(&self, invocations: usize, size: usize) -> (u32, u32, u32) {
        let (x, y) = self.ctx.fold(invocations.div_ceil(size) as u32);
        (x, y, 1)
    }

    /// Grid of `per_item` invocations (64 per workgroup) for each of `items` (batch rows) in y.
    fn grid(per_item: usize, items: usize) -> (u32, u32, u32) {
        (per_item.div_ceil(64) as u32, items as u32, 1)
    }

    fn reg_dispatch(&self, w: &Work) -> Dispatch {
        self.pipes.dispatch(
            self.ctx,
            Kernel::RegularizationLoss,
            false,
            &[
                (0, whole(&w.adam_uniform)),
                (2, window(&w.segments, 0)),
                (4, whole(&self.params)),
                (7, whole(&w.reg)),
            ],
            (1, 1, 1),
        )
    }

    /// Record the dispatches of one step over `rows` examples.
    fn record(&self, w: &Work, rows: usize, training: bool) -> Vec<Dispatch> {
        let ctx = self.ctx;
        let pipes = &self.pipes;
        let split = if training { &self.train } else { &self.test };
        let state = if training {
            &self.train_state
        } else {
            &self.eval_state
        };
        let metrics = if training {
            &self.train_metrics
        } else {
            &self.eval_metrics
        };
        let mut out = Vec::new();
        let rows_u = rows as u32;

        // gather
        let gp = U::GatherParams {
            rows: rows_u,
            full_batch: self.batch_size.min(split.n) as u32,
            per_image: self.model.input_len() as u32,
            _pad: 0,
        };
        let u = ctx.uniform("gather", &gp);
        out.push(pipes.dispatch(
            ctx,
            Kernel::GatherBatch,
            false,
            &[
                (0, whole(&u)),
                (1, whole(&split.images)),
                (2, whole(&split.labels)),
                (3, whole(&split.perm)),
                (4, whole(state)),
                (5, whole(&w.x)),
                (6, whole(&w.y)),
                (7, whole(&w.byte_to_unit)),
            ],
            Self::grid(self.model.input_len(), rows),
        ));

        let input_of = |i: usize| -> &wgpu::Buffer {
            if i == 0 {
                &w.x
            } else {
                &w.acts[w.act_of[i - 1]]
            }
        };
        let output_of = |i: usize| -> &wgpu::Buffer { &w.acts[w.act_of[i]] };
        let dout_of = |i: usize| -> &wgpu::Buffer { &w.dacts[w.act_of[i]] };
        let p = |idx: usize| &self.model.params[idx];

        // Per-layer uniforms, shared by the forward and backward dispatches of the layer.
        enum LU {
            Conv(wgpu::Buffer, U::ConvParams),
            Pool(wgpu::Buffer),
            Dense(wgpu::Buffer, U::DenseParams),
            None,
        }
        // A max-pool right after a relu layer applies relu' in its backward (the window maximum is the
        // relu output at argmax), so that layer's backward reads an already-gated gradient.
        let layers = &self.model.layers;
        let is_relu = |i: usize| {
            matches!(
                layers[i].spec,
                LayerSpec::Conv2d {
                    activation: Activation::Relu,
                    ..
                } | LayerSpec::Dense {
                    activation: Activation::Relu,
                    ..
                }
            )
        };
        let pool_gates = |i: usize| {
            i > 0 && matches!(layers[i].spec, LayerSpec::MaxPool2d { .. }) && is_relu(i - 1)
        };
        let mut lus = Vec::new();
        // gate_of[i]: layer i's backward applies relu'(y) itself (the GATE pipeline variant)
        let mut gate_of = Vec::new();
        for (li, l) in layers.iter().enumerate() {
            let gated_by_next = li + 1 < layers.len() && pool_gates(li + 1);
            gate_of.push(if matches!(l.spec, LayerSpec::MaxPool2d { .. }) {
                pool_gates(li)
            } else {
                is_relu(li) && !gated_by_next
            });
            lus.push(match (&l.spec, l.input, l.output) {
                (
                    LayerSpec::Conv2d {
                        kernel_size,
                        padding,
                        activation,
                        ..
                    },
                    Shape::Spatial { h, w: iw, c },
                    Shape::Spatial {
                        h: oh,
                        w: ow,
                        c: oc,
                    },
                ) => {
                    // weight gradient: chunks of `rows_per` output rows (pooled rows when fused with
                    // the pool), about 256 chunks per step
                    let (rows_per, chunks) = conv_weight_chunks(rows, oh, self.fused[li]);
                    let (chunk_len, chunks) = if self.fused[li] && self.set == KernelSet::Gpu {
                        pooled_chunks_gpu(rows * (oh / 2) * (ow / 2))
                    } else {
                        (0, chunks)
                    };
                    let cp = U::ConvParams {
                        batch: rows_u,
                        in_h: h as u32,
                        in_w: iw as u32,
                        in_c: c as u32,
                        out_h: oh as u32,
                        out_w: ow as u32,
                        out_c: oc as u32,
                        k: *kernel_size as u32,
                        pad: if *padding == Padding::Same {
                            (*kernel_size as u32 - 1) / 2
                        } else {
                            0
                        },
                        relu: (*activation == Activation::Relu) as u32,
                        rows_per,
                        chunks,
                        chunk_len,
                        ..Default::default()
                    };
                    LU::Conv(ctx.uniform(&l.name, &cp), cp)
                }
                (
                    LayerSpec::MaxPool2d { pool_size },
                    Shape::Spatial { h, w: iw, c },
                    Shape::Spatial { h: oh, w: ow, .. },
                ) => {
                    let pp = U::PoolParams {
                        batch: rows_u,
                        in_h: h as u32,
                        in_w: iw as u32,
                        c: c as u32,
                        out_h: oh as u32,
                        out_w: ow as u32,
                        k: *pool_size as u32,
                        _pad: 0,
                    };
                    LU::Pool(ctx.uniform(&l.name, &pp))
                }
                (LayerSpec::Dense { activation, .. }, Shape::Flat(n), Shape::Flat(o)) => {
                    // CPU shape: forward split over the inputs in chunks of DENSE_CHUNK
                    let dp = U::DenseParams {
                        batch: rows_u,
                        in_n: n as u32,
                        out_n: o as u32,
                        relu: (*activation == Activation::Relu) as u32,
                        chunk: DENSE_CHUNK,
                        chunks: (n as u32).div_ceil(DENSE_CHUNK),
                        ..Default::default()
                    };
                    LU::Dense(ctx.uniform(&l.name, &dp), dp)
                }
                _ => LU::None,
            });
        }

        // forward
        for (i, l) in self.model.layers.iter().enumerate() {
            match &lus[i] {
                LU::Conv(u, _) if self.fused[i] => {
                    // conv + relu + 2x2 max-pool: writes the pool's output and argmax
                    let (kern, bias) = l.params.expect("layer with weights");
                    let Shape::Spatial { h, w: ow, c } = l.output else {
                        unreachable!("conv output is spatial")
                    };
                    if self.set == KernelSet::Gpu {
                        let k = Kernel::Conv2dReluMaxPool2ForwardGpu;
                        let mut entries = forward_io(
                            u,
                            input_of(i),
                            &self.params,
                            (p(kern), p(bias)),
                            output_of(i + 1),
                        );
                        entries.push((11, whole(w.argmax[i + 1].as_ref().unwrap())));
                        out.push(pipes.dispatch(
                            ctx,
                            k,
                            false,
                            &entries,
                            (((h / 2) * (ow / 2) * c).div_ceil(256) as u32, rows_u, 1),
                        ));
                        continue;
                    }
                    let k = Kernel::Conv2dReluMaxPool2Forward;
                    let taps = w.taps[i].as_ref().expect("conv layer");
                    out.push(pipes.dispatch(
                        ctx,
                        k,
                        false,
                        &[
                            (0, whole(u)),
                            (1, whole(input_of(i))),
                            (3, span(&self.params, p(bias).offset, p(bias).len)),
                            (4, whole(output_of(i + 1))),
                            (11, whole(w.argmax[i + 1].as_ref().unwrap())),
                            (12, window(&self.params, p(kern).offset)),
                            (13, window(taps, 0)),
                        ],
                        (
                            ((h / 2) * (ow / 2).div_ceil(2)).div_ceil(32) as u32,
                            rows_u,
                            c.div_ceil(16) as u32,
                        ),
                    ));
                }
                LU::Pool(_) if i > 0 && self.fused[i - 1] => {}
                LU::Conv(u, _) => {
                    let (kern, bias) = l.params.expect("layer with weights");
                    let Shape::Spatial { h, w: ow, c } = l.output else {
                        unreachable!("conv output is spatial")
                    };
                    out.push(pipes.dispatch(
                        ctx,
                        Kernel::Conv2dForward,
                        false,
                        &forward_io(
                            u,
                            input_of(i),
                            &self.params,
                            (p(kern), p(bias)),
                            output_of(i),
                        ),
                        ((h * ow).div_ceil(256) as u32, rows_u, c.div_ceil(8) as u32),
                    ));
                }
                LU::Dense(u, dp) if self.set == KernelSet::Gpu => {
                    let (kern, bias) = l.params.expect("layer with weights");
                    out.push(pipes.dispatch(
                        ctx,
                        Kernel::DenseForwardGpu,
                        false,
                        &forward_io(
                            u,
                            input_of(i),
                            &self.params,
                            (p(kern), p(bias)),
                            output_of(i),
                        ),
                        (dp.out_n.div_ceil(16), rows_u, 1),
                    ));
                }
                LU::Dense(u, dp) => {
                    let (kern, bias) = l.params.expect("layer with weights");
                    let partials = ctx.storage_zeroed(
                        &format!("{} forward partials", l.name),
                        (dp.chunks as usize * rows * dp.out_n as usize * 4) as u64,
                    );
                    out.push(pipes.dispatch(
                        ctx,
                        Kernel::DenseForward,
                        false,
                        &[
                            (0, whole(u)),
                            (1, whole(input_of(i))),
                            (2, span(&self.params, p(kern).offset, p(kern).len)),
                            (9, whole(&partials)),
                        ],
                        (
                            dp.chunks.div_ceil(64),
                            rows.div_ceil(8) as u32,
                            dp.out_n.div_ceil(16),
                        ),
                    ));
                    out.push(pipes.dispatch(
                        ctx,
                        Kernel::DenseForwardReduce,
                        false,
                        &[
                            (0, whole(u)),
                            (3, span(&self.params, p(bias).offset, p(bias).len)),
                            (4, whole(output_of(i))),
                            (9, whole(&partials)),
                        ],
                        self.groups(rows * dp.out_n as usize),
                    ));
                }
                LU::Pool(u) => out.push(pipes.dispatch(
                    ctx,
                    Kernel::MaxPoolForward,
                    false,
                    &[
                        (0, whole(u)),
                        (1, whole(input_of(i))),
                        (2, whole(output_of(i))),
                        (3, whole(w.argmax[i].as_ref().unwrap())),
                    ],
                    match l.output {
                        Shape::Spatial { h, w, .. } => Self::grid(h * w, rows),
                        Shape::Flat(_) => unreachable!("pool output is spatial"),
                    },
                )),
                LU::None => {}
            }
        }

        // loss (+ dlogits)
        let last = self.model.layers.len() - 1;
        let advance = if training { 3 } else { 2 };
        let lp = U::LossParams {
            batch: rows_u,
            classes: self.model.classes as u32,
            advance,
            _pad: 0,
        };
        let lu = ctx.uniform("loss", &lp);
        out.push(pipes.dispatch(
            ctx,
            Kernel::SoftmaxXent,
            false,
            &[
                (0, whole(&lu)),
                (1, whole(output_of(last))),
                (2, whole(&w.y)),
                (3, whole(dout_of(last))),
                (4, whole(&w.per_example)),
            ],
            (rows.div_ceil(64) as u32, 1, 1),
        ));

        if training {
            // backward, last layer first; input gradients only where an earlier layer has weights
            let first_param_layer = self
                .model
                .layers
                .iter()
                .position(|l| l.params.is_some())
                .unwrap_or(0);
            for i in (0..=last).rev() {
                let l = &self.model.layers[i];
                let need_dx = i > first_param_layer;
                match &lus[i] {
                    LU::Conv(u, cp) => {
                        let (kern, bias) = l.params.unwrap();
                        let kkc = p(kern).len / cp.out_c as usize;
                        // fused with its pool: the gradients read the pool's output, gradient and argmax
                        let fused = self.fused[i];
                        let (partials_kernel, input_kernel, gate) = if fused {
                            (
                                Kernel::Conv2dWeightPartialsPooled,
                                Kernel::Conv2dBackwardInputPooled,
                                false,
                            )
                        } else {
                            (
                                Kernel::Conv2dWeightPartials,
                                Kernel::Conv2dBackwardInput,
                                gate_of[i],
                            )
                        };
                        let (y_of, dy_of) = if fused {
                            (output_of(i + 1), dout_of(i + 1))
                        } else {
                            (output_of(i), dout_of(i))
                        };
                        // the unfused variants still declare the argmax binding (dead code under POOLED = false)
                        let pool_argmax = Some(if fused {
                            w.argmax[i + 1].as_ref().unwrap()
                        } else {
                            &w.placeholder
                        });
                        let taps = w.taps[i].as_ref().expect("conv layer");
                        let partials = ctx.storage_zeroed(
                            &format!("{} weight-gradient partials", l.name),
                            (cp.chunks as usize * (kkc + 1) * cp.out_c as usize * 4) as u64,
                        );
                        let gpu_shapes = fused && self.set == KernelSet::Gpu;
                        if gpu_shapes {
                            out.push(pipes.dispatch(
                                ctx,
                                Kernel::Conv2dWeightPartialsPooledGpu,
                                false,
                                &[
                                    (0, whole(u)),
                                    (1, whole(input_of(i))),
                                    (5, whole(dy_of)),
                                    (9, whole(&partials)),
                                    (10, whole(taps)),
                                    (11, whole(w.argmax[i + 1].as_ref().unwrap())),
                                ],
                                (
                                    cp.chunks,
                                    (kkc + 1).div_ceil(POOLED_WEIGHT_GRAD_TILE.0) as u32,
                                    cp.out_c.div_ceil(32),
                                ),
                            ));
                        } else {
                            let mut entries = vec![
                                (0, whole(u)),
                                (1, whole(input_of(i))),
                                (5, whole(dy_of)),
                                (9, whole(&partials)),
                                (10, whole(taps)),
                            ];
                            if !fused {
                                // the fused variant needs only the pool's choice, not its output
                                entries.push((4, whole(y_of)));
                            }
                            entries.extend(pool_argmax.map(|a| (11, whole(a))));
                            out.push(pipes.dispatch(
                                ctx,
                                partials_kernel,
                                gate,
                                &entries,
                                // (chunks, patch-row groups, channel groups)
                                {
                                    let (rows, channels) = if fused {
                                        POOLED_WEIGHT_GRAD_TILE
                                    } else {
                                        WEIGHT_GRAD_TILE
                                    };
                                    (
                                        (cp.chunks as usize).div_ceil(64) as u32,
                                        (kkc + 1).div_ceil(rows) as u32,
                                        cp.out_c.div_ceil(channels),
                                    )
                                },
                            ));
                        }
                        // the chunks' partial sums into dK and db: an invocation per output, or (GPU
                        // shape) 8 lanes per output in workgroups of 32 outputs
                        let outputs = (kkc + 1) * cp.out_c as usize;
                        let (reduce, groups) = if gpu_shapes {
                            (
                                Kernel::Conv2dWeightReduceGpu,
                                self.groups_of(outputs * 8, 256),
                            )
                        } else {
                            (Kernel::Conv2dWeightReduce, self.groups(outputs))
                        };
                        out.push(pipes.dispatch(
                            ctx,
                            reduce,
                            false,
                            &[
                                (0, whole(u)),
                                (6, span(&w.grads, p(kern).offset, p(kern).len)),
                                (7, span(&w.grads, p(bias).offset, p(bias).len)),
                                (9, whole(&partials)),
                            ],
                            groups,
                        ));
                        if need_dx {
                            let mut entries = vec![
                                (0, whole(u)),
                                (2, span(&self.params, p(kern).offset, p(kern).len)),
                                (4, whole(y_of)),
                                (5, whole(dy_of)),
                                (8, whole(dout_of(i - 1))),
                            ];
                            entries.extend(pool_argmax.map(|a| (11, whole(a))));
                            out.push(pipes.dispatch(
                                ctx,
                                input_kernel,
                                gate,
                                &entries,
                                match l.input {
                                    Shape::Spatial { h, w, .. } => Self::grid(h * w, rows),
                                    Shape::Flat(_) => unreachable!("conv input is spatial"),
                                },
                            ));
                        }
                    }
                    LU::Dense(u, dp) if self.set == KernelSet::Gpu => {
                        let (kern, bias) = l.params.unwrap();
                        out.push(pipes.dispatch(
                            ctx,
                            Kernel::DenseBackwardWeightGpu,
                            gate_of[i],
                            &[
                                (0, whole(u)),
                                (1, whole(input_of(i))),
                                (4, whole(output_of(i))),
                                (5, whole(dout_of(i))),
                                (6, span(&w.grads, p(kern).offset, p(kern).len)),
                                (7, span(&w.grads, p(bias).offset, p(bias).len)),
                            ],
                            self.groups_of((dp.in_n as usize + 1) * dp.out_n as usize, 256),
                        ));
                        if need_dx {
                            out.push(pipes.dispatch(
                                ctx,
                                Kernel::DenseBackwardInputGpu,
                                gate_of[i],
                                &[
                                    (0, whole(u)),
                                    (2, span(&self.params, p(kern).offset, p(kern).len)),
                                    (4, whole(output_of(i))),
                                    (5, whole(dout_of(i))),
                                    (8, whole(dout_of(i - 1))),
                                ],
                                self.groups_of(rows * dp.in_n as usize, 256),
                            ));
                        }
                    }
                    LU::Dense(u, dp) => {
                        let (kern, bias) = l.params.unwrap();
                        // dy through a uniform window where the layer's gradient buffer is one
                        let dy_uniform = w.dy_uniform[w.act_of[i]];
                        let kernel = |k: Kernel| if dy_uniform { k.dy_uniform() } else { k };
                        let dy: [(u32, wgpu::BufferBinding); 2] = if dy_uniform {
                            [(5, whole(&w.placeholder)), (13, window(dout_of(i), 0))]
                        } else {
                            [
                                (5, whole(dout_of(i))),
                                (13, window(&w.placeholder_window, 0)),
                            ]
                        };
                        out.push(pipes.dispatch(
                            ctx,
                            kernel(Kernel::DenseBackwardWeight),
                            gate_of[i],
                            &[
                                (0, whole(u)),
                                (1, whole(input_of(i))),
                                (4, whole(output_of(i))),
                                (6, span(&w.grads, p(kern).offset, p(kern).len)),
                                dy[0].clone(),
                                dy[1].clone(),
                            ],
                            (
                                (dp.in_n as usize).div_ceil(256) as u32,
                                (dp.out_n as usize).div_ceil(16) as u32,
                                1,
                            ),
                        ));
                        out.push(pipes.dispatch(
                            ctx,
                            kernel(Kernel::DenseBackwardBias),
                            gate_of[i],
                            &[
                                (0, whole(u)),
                                (4, whole(output_of(i))),
                                (7, span(&w.grads, p(bias).offset, p(bias).len)),
                                dy[0].clone(),
                                dy[1].clone(),
                            ],
                            self.groups(dp.out_n as usize),
                        ));
                        if need_dx {
                            // the first 16 outputs, then (OUT > 16) the others added
                            let passes: &[Kernel] = if dp.out_n > 16 {
                                &[Kernel::DenseBackwardInput, Kernel::DenseBackwardInputRest]
                            } else {
                                &[Kernel::DenseBackwardInput]
                            };
                            for &k in passes {
                                out.push(pipes.dispatch(
                                    ctx,
                                    kernel(k),
                                    gate_of[i],
                                    &[
                                        (0, whole(u)),
                                        (2, span(&self.params, p(kern).offset, p(kern).len)),
                                        (4, whole(output_of(i))),
                                        (8, whole(dout_of(i - 1))),
                                        dy[0].clone(),
                                        dy[1].clone(),
                                    ],
                                    ((dp.in_n as usize).div_ceil(256) as u32, 1, 1),
                                ));
                            }
                        }
                    }
                    LU::Pool(u) => {
                        // a pool fused with the conv before it has no backward pass of its own
                        if need_dx && !self.fused[i - 1] {
                            out.push(pipes.dispatch(
                                ctx,
                                Kernel::MaxPoolBackward,
                                gate_of[i],
                                &[
                                    (0, whole(u)),
                                    (2, whole(output_of(i))),
                                    (3, whole(w.argmax[i].as_ref().unwrap())),
                                    (4, whole(dout_of(i))),
                                    (5, whole(dout_of(i - 1))),
                                ],
                                match l.input {
                                    Shape::Spatial { h, w, .. } => Self::grid(h * w, rows),
                                    Shape::Flat(_) => unreachable!("pool input is spatial"),
                                },
                            ));
                        }
                    }
                    LU::None => {}
                }
            }
            // regularization loss on the pre-update weights, then Adam (+penalty), then constraints
            if w.any_penalty {
                out.push(self.reg_dispatch(w));
            }
            if w.clip_by_norm {
                out.push(pipes.dispatch(
                    ctx,
                    Kernel::GradientSumsq,
                    false,
                    &[
                        (0, whole(&w.adam_uniform)),
                        (1, whole(&w.grads)),
                        (2, window(&w.segments, 0)),
                        (4, whole(&self.params)),
                        (9, whole(&w.sumsq)),
                    ],
                    (w.n_segments, 1, 1),
                ));
            }
            out.push(pipes.dispatch(
                ctx,
                Kernel::AdamUpdate,
                false,
                &[
                    (0, whole(&w.adam_uniform)),
                    (2, window(&w.segments, 0)),
                    (3, whole(&self.train_state)),
                    (8, whole(&self.alphas)),
                    (9, whole(&w.sumsq)),
                    (10, whole(&self.params)),
                    (11, whole(&w.grads)),
                    (12, whole(&self.m)),
                    (13, whole(&self.v)),
                ],
                self.groups(self.model.flat_len),
            ));
            out.extend(self.constraint_dispatches(false));
        }

        out.push(pipes.dispatch(
            ctx,
            Kernel::Accumulate,
            false,
            &[
                (0, whole(&lu)),
                (4, whole(&w.per_example)),
                (5, whole(&w.reg)),
                (6, whole(metrics)),
                (7, whole(state)),
            ],
            (1, 1, 1),
        ));
        out
    }

    /// The fused constraint passes, in the order the restrictions list them: those after every step, or
    /// (`epoch_end`) those after each epoch.
    fn constraint_dispatches(&self, epoch_end: bool) -> Vec<Dispatch> {
        let ctx = self.ctx;
        let mut out = Vec::new();
        for (name, t) in &self.restrictions.tensors {
            let p = self.model.param(name).expect("validated");
            let list = if epoch_end {
                &t.epoch_constraints
            } else {
                &t.constraints
            };
            for c in list {
                out.push(match constraint_uniform(c, p.offset, &p.shape) {
                    ConstraintUniform::Clip(cp) => self.pipes.dispatch(
                        ctx,
                        Kernel::ClipByValue,
                        false,
                        &[
                            (0, whole(&ctx.uniform("clip", &cp))),
                            (2, whole(&self.params)),
                        ],
                        self.groups(p.len),
                    ),
                    ConstraintUniform::Norm(np) => self.pipes.dispatch(
                        ctx,
                        Kernel::NormConstraint,
                        false,
                        &[
                            (1, whole(&ctx.uniform("norm", &np))),
                            (2, whole(&self.params)),
                        ],
                        (np.n_groups.div_ceil(64), 1, 1),
                    ),
                });
            }
        }
        out
    }

    /// Every recorded plan as text (`gpu::listing`): the full and last training steps, the full and last
    /// evaluation steps, the evaluation's regularization loss and the epoch-end constraints. A test pins it.
    pub fn dispatch_listing(&self) -> Result<String> {
        let mut plans: Vec<(&str, &[Dispatch])> = vec![("train", &self.train_full)];
        if let Some(p) = &self.train_last {
            plans.push(("train (last batch)", p));
        }
        plans.push(("eval", &self.eval_full));
        if let Some(p) = &self.eval_last {
            plans.push(("eval (last batch)", p));
        }
        if let Some(d) = &self.eval_reg {
            plans.push(("eval regularization", std::slice::from_ref(d)));
        }
        plans.push(("epoch end", &self.epoch_end));
        crate::gpu::listing(self.ctx, &plans)
    }

    pub fn train_examples(&self) -> usize {
        self.train.n
    }

    /// Dispatches in one full training step.
    pub fn dispatches_per_step(&self) -> usize {
        self.train_full.len()
    }

    /// Training steps recorded into one submit.
    pub fn steps_per_submit(&self) -> usize {
        CHUNK_STEPS
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.train.n.div_ceil(self.batch_size)
    }

    /// One pass over the training set in `order`. `on_tick` sees running metrics once per chunk.
    pub fn train_epoch(
        &mut self,
        epoch: usize,
        order: &[u32],
        on_tick: &mut dyn FnMut(Progress),
    ) -> Result<EpochStats> {
        self.train_steps(epoch, order, self.steps_per_epoch(), on_tick)
    }

    /// The first `limit` steps of an epoch in `order` (all of them when `limit` is the epoch's length;
    /// epoch-end constraints run only then). `clampnet bench` times steps with it.
    pub fn train_steps(
        &mut self,
        epoch: usize,
        order: &[u32],
        limit: usize,
        on_tick: &mut dyn FnMut(Progress),
    ) -> Result<EpochStats> {
        self.train_range(epoch, order, 0, limit, &|| false, on_tick)
    }

    /// Steps `first..end` of an epoch in `order`, `first` being the steps of this epoch already done
    /// (a resumed run), `self.step` the optimizer steps done in all. `stop` is asked before each chunk of
    /// steps is recorded: when it says yes, the steps already submitted finish and the epoch stops there
    /// (`EpochStats::next_step` says where). Metrics cover the steps of this call. Epoch-end constraints
    /// run when the epoch's last step is done.
    pub fn train_range(
        &mut self,
        epoch: usize,
        order: &[u32],
        first: usize,
        end: usize,
        stop: &dyn Fn() -> bool,
        on_tick: &mut dyn FnMut(Progress),
    ) -> Result<EpochStats> {
        let ctx = self.ctx;
        if order.len() != self.train.n {
            return Err(Error::Config(format!(
                "epoch order has {} entries for {} examples",
                order.len(),
                self.train.n
            )));
        }
        let per_epoch = self.steps_per_epoch();
        let end = end.min(per_epoch);
        if first > end || first as u64 > self.step {
            return Err(Error::Config(format!(
                "cannot start an epoch at step {first} of {per_epoch} after {} steps",
                self.step
            )));
        }
        ctx.queue
            .write_buffer(&self.train.perm, 0, bytemuck::cast_slice(order));
        let epoch_base = self.step - first as u64;
        let alphas: Vec<f32> = (1..=per_epoch as u64)
            .map(|i| self.hyper.alpha(epoch_base + i))
            .collect();
        ctx.queue
            .write_buffer(&self.alphas, 0, bytemuck::cast_slice(&alphas));
        ctx.queue.write_buffer(
            &self.train_state,
            0,
            bytemuck::bytes_of(&U::State {
                step: self.step as u32,
                batch: first as u32,
            }),
        );
        ctx.queue.write_buffer(
            &self.train_metrics,
            0,
            bytemuck::bytes_of(&U::Metrics::default()),
        );
        let start = Instant::now();
        let mut pending: Option<(usize, wgpu::SubmissionIndex, usize)> = None;
        let mut last = PassMetrics::default();
        let mut chunk = 0usize;
        let mut s = first;
        while s < end && !stop() {
            let stop_at = (s + CHUNK_STEPS).min(end);
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for step in s..stop_at {
                    let plan = match (&self.train_last, step + 1 == per_epoch) {
                        (Some(last), true) => last,
                        _ => &self.train_full,
                    };
                    for d in plan {
                        d.encode(&mut pass, &self.pipes);
                    }
                }
            }
            let slot = chunk % 2;
            enc.copy_buffer_to_buffer(&self.train_metrics, 0, &self.staging[slot], 0, 16);
            let idx = ctx.queue.submit([enc.finish()]);
            if let Some((pslot, pidx, pdone)) = pending.take() {
                last = self.read_metrics(pslot, pidx, epoch, pdone - first)?;
                let secs = start.elapsed().as_secs_f64();
                on_tick(Progress {
                    step: pdone,
                    steps: per_epoch,
                    metrics: last,
                    images_per_second: last.count as f64 / secs.max(1e-9),
                });
            }
            pending = Some((slot, idx, stop_at));
            chunk += 1;
            s = stop_at;
        }
        if let Some((pslot, pidx, pdone)) = pending.take() {
            last = self.read_metrics(pslot, pidx, epoch, pdone - first)?;
        }
        if s == per_epoch && !self.epoch_end.is_empty() {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for d in &self.epoch_end {
                    d.encode(&mut pass, &self.pipes);
                }
            }
            ctx.queue.submit([enc.finish()]);
        }
        let train_seconds = start.elapsed().as_secs_f64();
        let steps = s - first;
        self.step += steps as u64;
        on_tick(Progress {
            step: s,
            steps: per_epoch,
            metrics: last,
            images_per_second: last.count as f64 / train_seconds.max(1e-9),
        });
        Ok(EpochStats {
            train: last,
            train_seconds,
            steps,
            next_step: s,
            completed: s == per_epoch,
        })
    }

    /// Reset the evaluation state and metrics: (batch rows, steps) of a pass over the test set.
    fn begin_eval(&self) -> (usize, usize) {
        let ctx = self.ctx;
        ctx.queue.write_buffer(
            &self.eval_state,
            0,
            bytemuck::bytes_of(&U::State::default()),
        );
        ctx.queue.write_buffer(
            &self.eval_metrics,
            0,
            bytemuck::bytes_of(&U::Metrics::default()),
        );
        let eb = self.batch_size.min(self.test.n);
        (eb, self.test.n.div_ceil(eb))
    }

    /// The recorded evaluation step for step `step` of `steps` (the last may be short).
    fn eval_plan(&self, step: usize, steps: usize) -> &[Dispatch] {
        match (&self.eval_last, step + 1 == steps) {
            (Some(last), true) => last,
            _ => &self.eval_full,
        }
    }

    /// The logits of every test example, in order ([n_test, classes], row-major): the evaluation pass,
    /// reading each batch's logits back.
    pub fn predict_test(&mut self) -> Result<Vec<f32>> {
        let ctx = self.ctx;
        let (eb, steps) = self.begin_eval();
        let k = self.model.classes;
        let mut out = Vec::with_capacity(self.test.n * k);
        for step in 0..steps {
            let rows = eb.min(self.test.n - step * eb);
            let plan = self.eval_plan(step, steps);
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for d in plan {
                    d.encode(&mut pass, &self.pipes);
                }
            }
            ctx.queue.submit([enc.finish()]);
            out.extend(ctx.read_f32(&self.logits, 0, (rows * k) as u64)?);
        }
        Ok(out)
    }

    /// GPU time of each dispatch of a full training step, from timestamp queries: every dispatch in its
    /// own compute pass with begin/end timestamps, `steps` steps in one submit, the median per dispatch. None when the
    /// device was not opened with timestamp queries. Disturbs the training state: for `clampnet bench`.
    pub fn profile_step_timestamps(&self, steps: usize) -> Result<Option<Vec<(Kernel, f64)>>> {
        let ctx = self.ctx;
        if !ctx.timestamps || steps == 0 {
            return Ok(None);
        }
        let n = self.train_full.len();
        let timer = PassTimer::new(ctx, n * steps);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        for s in 0..steps {
            for (k, d) in self.train_full.iter().enumerate() {
                let mut pass = enc.begin_compute_pass(&timer.pass((s * n + k) as u32));
                d.encode(&mut pass, &self.pipes);
            }
        }
        let secs = timer.finish(ctx, enc)?;
        // the median over the steps: robust to a step slowed by something else on the machine
        let out = self
            .train_full
            .iter()
            .enumerate()
            .map(|(k, d)| {
                let mut t: Vec<f64> = (0..steps).map(|s| secs[s * n + k]).collect();
                t.sort_by(f64::total_cmp);
                (d.kernel, t[steps / 2])
            })
            .collect();
        Ok(Some(out))
    }

    /// What one training step costs apart from the kernels themselves, for `clampnet bench`: the host
    /// time to record a step's dispatches (the best of 3 recordings of `steps` steps, not submitted),
    /// and, where the device has timestamp queries, the GPU time per step of `steps` steps in one pass
    /// (barriers and launch gaps included, the host excluded). Disturbs the training state.
    pub fn profile_step_overheads(&self, steps: usize) -> Result<(f64, Option<f64>)> {
        let ctx = self.ctx;
        let steps = steps.max(1);
        let record = |pass: &mut wgpu::ComputePass| {
            for _ in 0..steps {
                for d in &self.train_full {
                    d.encode(pass, &self.pipes);
                }
            }
        };
        let mut encode = f64::INFINITY;
        for _ in 0..3 {
            let start = Instant::now();
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            record(&mut enc.begin_compute_pass(&Default::default()));
            let cb = enc.finish();
            encode = encode.min(start.elapsed().as_secs_f64() / steps as f64);
            drop(cb);
        }
        if !ctx.timestamps {
            return Ok((encode, None));
        }
        let timer = PassTimer::new(ctx, 1);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        record(&mut enc.begin_compute_pass(&timer.pass(0)));
        let gpu = timer.finish(ctx, enc)?[0] / steps as f64;
        Ok((encode, Some(gpu)))
    }

    /// Adam's first and second moments, per tensor, in the model's parameter order.
    pub fn optimizer_state(&self) -> Result<(Tensors, Tensors)> {
        let m = self.ctx.read_f32(&self.m, 0, self.model.flat_len as u64)?;
        let v = self.ctx.read_f32(&self.v, 0, self.model.flat_len as u64)?;
        let split = |flat: &[f32]| {
            self.model
                .params
                .iter()
                .map(|p| flat[p.offset..p.offset + p.len].to_vec())
                .collect()
        };
        Ok((split(&m), split(&v)))
    }

    /// Restore Adam's moments and the optimizer step count (a resumed run).
    pub fn set_optimizer_state(&mut self, m: &[Vec<f32>], v: &[Vec<f32>], step: u64) -> Result<()> {
        for (what, buf, values) in [("m", &self.m, m), ("v", &self.v, v)] {
            if values.len() != self.model.params.len() {
                return Err(Error::Model(format!(
                    "optimizer state {what}: {} tensors, the model has {}",
                    values.len(),
                    self.model.params.len()
                )));
            }
            for (p, t) in self.model.params.iter().zip(values) {
                if t.len() != p.len {
                    return Err(Error::Model(format!(
                        "optimizer state {what} of {}: {} values, expected {}",
                        p.name,
                        t.len(),
                        p.len
                    )));
                }
                self.ctx
                    .queue
                    .write_buffer(buf, (p.offset * 4) as u64, bytemuck::cast_slice(t));
            }
        }
        self.step = step;
        Ok(())
    }

    fn read_metrics(
        &self,
        slot: usize,
        idx: wgpu::SubmissionIndex,
        epoch: usize,
        steps_done: usize,
    ) -> Result<PassMetrics> {
        let staging = &self.staging[slot];
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.ctx
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(idx),
                timeout: None,
            })
            .map_err(|e| Error::gpu("waiting for the GPU", e))?;
        rx.recv()
            .map_err(|e| Error::gpu("metrics readback", e))?
            .map_err(|e| Error::gpu("metrics readback", e))?;
        let m: U::Metrics = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::gpu("metrics readback", e))?;
            bytemuck::pod_read_unaligned(&view[..16])
        };
        staging.unmap();
        self.ctx.check()?;
        if m.nonfinite != 0 {
            return Err(Error::NonFinite {
                epoch,
                step: self.step + steps_done as u64,
            });
        }
        Ok(to_pass(m))
    }

    /// Loss (regularization included, as Keras' evaluate reports it) and accuracy on the test set.
    pub fn evaluate(&mut self) -> Result<PassMetrics> {
        let ctx = self.ctx;
        let (_, steps) = self.begin_eval();
        let mut s = 0;
        let mut first = true;
        while s < steps {
            let end = (s + CHUNK_STEPS).min(steps);
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                if first {
                    if let Some(r) = &self.eval_reg {
                        r.encode(&mut pass, &self.pipes);
                    }
                    first = false;
                }
                for step in s..end {
                    let plan = self.eval_plan(step, steps);
                    for d in plan {
                        d.encode(&mut pass, &self.pipes);
                    }
                }
            }
            ctx.queue.submit([enc.finish()]);
            s = end;
        }
        let bytes = ctx.read_bytes(&self.eval_metrics, 0, 16)?;
        Ok(to_pass(bytemuck::pod_read_unaligned(&bytes)))
    }

    /// Time every dispatch of the full training step on its own: `reps` back-to-back copies of it in one
    /// compute pass, one submit, wall-clock to completion. Returns (kernel, seconds per dispatch). Used by
    /// `clampnet bench`; the dispatches overwrite the work buffers, so call it outside an epoch.
    pub fn profile_step(&self, reps: usize) -> Result<Vec<(Kernel, f64)>> {
        let mut out = Vec::new();
        for d in &self.train_full {
            let run = |n: usize| -> Result<f64> {
                let mut enc = self.ctx.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    for _ in 0..n {
                        d.encode(&mut pass, &self.pipes);
                    }
                }
                let t = Instant::now();
                self.ctx.queue.submit([enc.finish()]);
                self.ctx
                    .device
                    .poll(wgpu::PollType::wait_indefinitely())
                    .map_err(|e| Error::gpu("profiling", e))?;
                Ok(t.elapsed().as_secs_f64())
            };
            run(1)?;
            out.push((d.kernel, run(reps)? / reps as f64));
        }
        Ok(out)
    }

    /// The weights, in the model's parameter order and Keras layout.
    pub fn weights(&self) -> Result<Weights> {
        let flat = self
            .ctx
            .read_f32(&self.params, 0, self.model.flat_len as u64)?;
        Ok(self
            .model
            .params
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.shape.clone(),
                    flat[p.offset..p.offset + p.len].to_vec(),
                )
            })
            .collect())
    }

    /// The gradients of the data loss from the last training step, per tensor (penalty gradients are
    /// added inside the Adam shader and are not part of these).
    pub fn gradients(&self) -> Result<Weights> {
        let flat = self
            .ctx
            .read_f32(&self.grads, 0, self.model.flat_len as u64)?;
        Ok(self
            .model
            .params
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.shape.clone(),
                    flat[p.offset..p.offset + p.len].to_vec(),
                )
            })
            .collect())
    }
}

/// Timestamp queries at the beginning and end of compute passes (profiling only; the device must have
/// been opened with `GpuOptions::timestamps`).
struct PassTimer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    passes: u32,
}

impl PassTimer {
    fn new(ctx: &Context, passes: usize) -> Self {
        let passes = passes as u32;
        PassTimer {
            queries: ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("pass timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * passes,
            }),
            resolve: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("pass timestamps"),
                size: 16 * passes as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            passes,
        }
    }

    /// The descriptor of timed pass `i`.
    fn pass(&self, i: u32) -> wgpu::ComputePassDescriptor<'_> {
        wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &self.queries,
                beginning_of_pass_write_index: Some(2 * i),
                end_of_pass_write_index: Some(2 * i + 1),
            }),
        }
    }

    /// Submit `enc` with the queries resolved, wait, and return each pass's GPU time in seconds.
    fn finish(self, ctx: &Context, mut enc: wgpu::CommandEncoder) -> Result<Vec<f64>> {
        enc.resolve_query_set(&self.queries, 0..2 * self.passes, &self.resolve, 0);
        ctx.queue.submit([enc.finish()]);
        let ticks: Vec<u64> =
            bytemuck::pod_collect_to_vec(&ctx.read_bytes(&self.resolve, 0, self.resolve.size())?);
        let period_s = ctx.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(ticks
            .chunks_exact(2)
            .map(|t| t[1].saturating_sub(t[0]) as f64 * period_s)
            .collect())
    }
}

/// v / 255 for every byte value v in f32 (IEEE division, as numpy computes Keras' inputs): the table the
/// batch gather reads pixels through.
pub fn byte_to_unit() -> [f32; 256] {
    std::array::from_fn(|v| v as f32 / 255.0)
}

/// The bindings a forward pass of a layer with weights starts with: its uniform (0), input (1), kernel (2)
/// and bias (3) spans of the parameters, output (4).
fn forward_io<'b>(
    u: &'b wgpu::Buffer,
    input: &'b wgpu::Buffer,
    params: &'b wgpu::Buffer,
    (kern, bias): (&ParamSpec, &ParamSpec),
    output: &'b wgpu::Buffer,
) -> Vec<(u32, wgpu::BufferBinding<'b>)> {
    vec![
        (0, whole(u)),
        (1, whole(input)),
        (2, span(params, kern.offset, kern.len)),
        (3, span(params, bias.offset, bias.len)),
        (4, whole(output)),
    ]
}

/// Per layer: true for a relu conv2d followed by a 2x2 max-pool, which run as one fused pass (with the
/// CPU kernel set, only where the kernel and its patch-row table fit the uniform windows it reads them
/// through).
pub fn fused_conv_pool(model: &ModelPlan, set: KernelSet) -> Vec<bool> {
    let l = &model.layers;
    (0..l.len())
        .map(|i| {
            let fits = set == KernelSet::Gpu
                || l[i].params.is_some_and(|(kern, bias)| {
                    let window = crate::gpu::UNIFORM_WINDOW as usize;
                    let taps = model.params[kern].len / model.params[bias].len + 1;
                    model.params[kern].len * 4 <= window
                        && taps.div_ceil(TAPS_MULTIPLE) * TAPS_MULTIPLE * 16 <= window
                });
            fits && matches!(
                l[i].spec,
                LayerSpec::Conv2d {
                    activation: Activation::Relu,
                    ..
                }
            ) && matches!(
                l.get(i + 1).map(|n| &n.spec),
                Some(LayerSpec::MaxPool2d { pool_size: 2 })
            )
        })
        .collect()
}

/// The uniform of one constraint pass over the tensor at element `offset` of the flat parameters.
pub enum ConstraintUniform {
    /// clip_by_value (kind 0) or non_neg (kind 1): `clip_by_value` in constraints.wgsl
    Clip(U::ClipParams),
    /// unit_norm (kind 0), max_norm (1), min_max_norm (2): `norm_constraint` in constraints.wgsl
    Norm(U::NormParams),
}

pub fn constraint_uniform(c: &Constraint, offset: usize, shape: &[usize]) -> ConstraintUniform {
    let len: usize = shape.iter().product();
    let clip = |lo, hi, kind| {
        ConstraintUniform::Clip(U::ClipParams {
            start: offset as u32,
            len: len as u32,
            lo,
            hi,
            kind,
            ..Default::default()
        })
    };
    let norm = |axes: &[usize], kind, min_value, max_value, rate| {
        let (ks, kst, rs, rst) = norm_layout(shape, axes);
        ConstraintUniform::Norm(U::NormParams {
            start: offset as u32,
            n_groups: ks.iter().product(),
            n_reduce: rs.iter().product(),
            kind,
            min_value,
            max_value,
            rate,
            eps: 1e-7,
            kept_size: ks,
            kept_stride: kst,
            red_size: rs,
            red_stride: rst,
        })
    };
    match c {
        Constraint::ClipByValue { lo, hi } => clip(*lo, *hi, 0),
        Constraint::NonNeg => clip(0.0, 0.0, 1),
        Constraint::UnitNorm { axes } => norm(axes, 0, 0.0, 0.0, 0.0),
        Constraint::MaxNorm { max_value, axes } => norm(axes, 1, 0.0, *max_value, 0.0),
        Constraint::MinMaxNorm {
            min_value,
            max_value,
            rate,
            axes,
        } => norm(axes, 2, *min_value, *max_value, *rate),
    }
}

/// The conv weight gradient's register tile per invocation, (patch rows, output channels), as
/// conv2d.wgsl writes them: `conv2d_weight_partials` and the fused `conv2d_weight_partials_pooled`.
pub const WEIGHT_GRAD_TILE: (usize, u32) = (8, 8);
pub const POOLED_WEIGHT_GRAD_TILE: (usize, u32) = (10, 16);

/// How the GPU shape of the pooled conv weight gradient splits a step: (`chunk_len`, `chunks`), chunks of
/// `chunk_len` pooled positions (a multiple of its 8 lanes, at least 32), about 128 chunks.
pub fn pooled_chunks_gpu(positions: usize) -> (u32, u32) {
    let len = positions.div_ceil(128).next_multiple_of(8).max(32);
    (len as u32, positions.div_ceil(len).max(1) as u32)
}

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
pub fn conv_taps(cp: &U::ConvParams) -> Vec<[i32; 4]> {
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
const TAPS_MULTIPLE: usize = {
    let (a, b) = (WEIGHT_GRAD_TILE.0, POOLED_WEIGHT_GRAD_TILE.0);
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
};

fn to_pass(m: U::Metrics) -> PassMetrics {
    let count = m.count as f64;
    PassMetrics {
        loss: if count > 0.0 {
            m.loss_sum as f64 / count
        } else {
            0.0
        },
        accuracy: if count > 0.0 {
            m.correct as f64 / count
        } else {
            0.0
        },
        count: m.count as usize,
    }
}
