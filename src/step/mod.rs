//! A training step on the GPU, and the model it runs.
//!
//! - `Network`: the model's ops (`model::fuse` of its plan, built by `layers`), its flat parameters and
//!   gradients, and the batch they read: everything a forward or backward pass over a batch touches.
//! - `Step`: a `Network` with the data splits, the loss, the update, and the recorded plans: the full
//!   and the short last step of a training epoch and of an evaluation pass, the evaluation's
//!   regularization loss, the epoch-end constraints. `record` below is the step, in order.

pub mod gather;
pub mod loss;

use crate::data::Split;
use crate::error::{Error, Result};
use crate::gpu::{Buffer, Context, Dispatch, KernelDef, KernelSet, Pipelines, Recorder};
use crate::layers::{build_op, Build, Io, LossIo, Op};
use crate::model::{fuse, ModelPlan};
use crate::optim::{Settings, Update, UpdateIo};
use crate::restrict::Restrictions;

use gather::{Batch, GpuSplit};
use loss::Loss;

/// Every kernel a step can dispatch: pipelines are built from this list.
pub fn kernels() -> Vec<&'static KernelDef> {
    let mut k: Vec<&'static KernelDef> = Vec::new();
    k.extend_from_slice(gather::KERNELS);
    k.extend(crate::layers::kernels());
    k.extend_from_slice(loss::KERNELS);
    k.extend(crate::optim::kernels());
    k
}

/// A training step, or an evaluation step (forward and loss only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    /// the test split, in inference
    Eval,
    /// the validation split (`validation_split`), in inference
    Validate,
}

/// The model on the GPU, for batches of up to `batch` rows.
pub struct Network {
    pub model: ModelPlan,
    pub batch: usize,
    /// the flat parameters [flat_len], also readable through uniform windows
    pub params: Buffer,
    /// the flat gradients [flat_len padded to 64], when training
    pub grads: Option<Buffer>,
    pub input: Batch,
    ops: Vec<Box<dyn Op>>,
    /// per op: an earlier op has weights, so its backward writes the gradient of its input
    needs_dx: Vec<bool>,
    /// the last op may compute the loss in its forward (a fused step: `StepSetup::fuse_loss`)
    pub fuse_loss: bool,
}

impl Network {
    /// `weights` in the model's parameter order; `training`: also the gradient buffers; `seed`: the
    /// run's (dropout masks).
    pub fn new(
        ctx: &Context,
        model: ModelPlan,
        (set, fuse, seeds): (KernelSet, bool, &[u64]),
        batch: usize,
        training: bool,
        weights: &[Vec<f32>],
    ) -> Result<Self> {
        let flat = model.flat_len;
        // the optimizer binds the whole flat parameter buffer (as it does the gradients and its slots)
        ctx.check_binding("parameters", (flat as u64).saturating_mul(4))?;
        ctx.check_binding("input batch", (batch * model.input_len() * 4) as u64)?;
        let flat_init = flatten_weights(&model, weights)?;
        let params = ctx.storage_uniform_init("params", bytemuck::cast_slice(&flat_init));
        let grads =
            training.then(|| ctx.storage_zeroed("grads", (flat.div_ceil(64) * 64 * 4) as u64));
        let input = Batch::new(ctx, set, batch, model.input_len())?;
        let b = Build {
            ctx,
            set,
            batch,
            training,
            seeds: seeds.to_vec(),
        };
        let plans = fuse::lower(&model, set, fuse);
        let ops = plans
            .iter()
            .map(|plan| build_op(&model, plan, &b))
            .collect::<Result<_>>()?;
        Ok(Network {
            batch,
            params,
            grads,
            input,
            ops,
            needs_dx: plans.iter().map(|p| p.needs_dx).collect(),
            fuse_loss: fuse,
            model,
        })
    }

    /// The buffers of op `i`: its input is the previous op's output (or the batch), its input gradient
    /// the previous op's output gradient, where an earlier op has weights.
    fn io<'a>(&'a self, i: usize, state: Option<&'a Buffer>) -> Io<'a> {
        let (x, dx) = if i == 0 {
            (&self.input.x, None)
        } else {
            let prev = self.ops[i - 1].out();
            (&prev.y, prev.dy.as_ref())
        };
        Io {
            x,
            dx: dx.filter(|_| self.needs_dx[i]),
            params: &self.params,
            grads: self.grads.as_ref(),
            state,
        }
    }

    /// Each op's forward; `state`: a training step's step state (None: inference).
    pub fn record_forward(&self, r: &mut Recorder, rows: usize, state: Option<&Buffer>) {
        for (i, op) in self.ops.iter().enumerate() {
            op.forward(r, &self.io(i, state), rows);
        }
    }

    /// Each op's forward, the last one with the loss `loss` where the step is fused
    /// and the op can (`Op::forward_with_loss`). Returns whether the loss was recorded.
    pub fn record_forward_with_loss(
        &self,
        r: &mut Recorder,
        rows: usize,
        state: Option<&Buffer>,
        loss: &LossIo,
    ) -> bool {
        let last = self.ops.len() - 1;
        for (i, op) in self.ops.iter().enumerate() {
            let io = self.io(i, state);
            let fusable = i == last && self.fuse_loss;
            if !(fusable && op.forward_with_loss(r, &io, rows, loss)) {
                op.forward(r, &io, rows);
                if i == last {
                    return false;
                }
            }
        }
        true
    }

    /// Each op's backward, last first, in the training step of `state`.
    pub fn record_backward(&self, r: &mut Recorder, rows: usize, state: Option<&Buffer>) {
        for (i, op) in self.ops.iter().enumerate().rev() {
            op.backward(r, &self.io(i, state), rows);
        }
    }

    /// The last op's output, [batch, classes].
    pub fn logits(&self) -> &Buffer {
        &self.ops.last().expect("a model has an op").out().y
    }

    /// The last op's output gradient, when training.
    pub fn dlogits(&self) -> Option<&Buffer> {
        self.ops
            .last()
            .expect("a model has an op")
            .out()
            .dy
            .as_ref()
    }
}

/// `weights` (per tensor, the model's order) laid out in the flat parameter memory.
pub fn flatten_weights(model: &ModelPlan, weights: &[Vec<f32>]) -> Result<Vec<f32>> {
    if weights.len() != model.params.len() {
        return Err(Error::Model(format!(
            "{} weight tensors given, the model has {}",
            weights.len(),
            model.params.len()
        )));
    }
    let mut flat = vec![0f32; model.flat_len];
    for (p, w) in model.params.iter().zip(weights) {
        if w.len() != p.len {
            return Err(Error::Model(format!(
                "{}: {} values given, expected {}",
                p.name,
                w.len(),
                p.len
            )));
        }
        flat[p.offset..p.offset + p.len].copy_from_slice(w);
    }
    Ok(flat)
}

/// Everything a training run keeps on the GPU, and its recorded plans.
pub struct Step {
    pub net: Network,
    pub update: Update,
    pub loss: Loss,
    pub train: GpuSplit,
    pub test: GpuSplit,
    /// the validation split, when the run holds one out
    pub val: Option<GpuSplit>,
    pub pipes: std::sync::Arc<Pipelines>,
    pub plans: Plans,
    /// the models stepping together: 1, or K (`gpu::batched`), each buffer holding a part per model
    pub models: usize,
}

/// What differs between the K models of a K-model step: restrictions (values), the optimizer's learning
/// rate, and the weights they start from.
#[derive(Clone, Copy)]
pub struct Part<'a> {
    pub restrictions: &'a Restrictions,
    pub optimizer: &'a Settings,
    pub weights: &'a [Vec<f32>],
    /// the run's seed (dropout masks)
    pub seed: u64,
}

/// The recorded plans of a training run.
#[derive(Default)]
pub struct Plans {
    pub train_full: Vec<Dispatch>,
    /// the short last step of an epoch
    pub train_last: Option<Vec<Dispatch>>,
    pub eval_full: Vec<Dispatch>,
    pub eval_last: Option<Vec<Dispatch>>,
    /// the validation passes (empty without a validation split)
    pub val_full: Vec<Dispatch>,
    pub val_last: Option<Vec<Dispatch>>,
    /// the regularization loss an evaluation pass adds (where a tensor has a penalty)
    pub eval_reg: Vec<Dispatch>,
    /// the constraints that run once after each epoch
    pub epoch_end: Vec<Dispatch>,
}

/// What a `Step` is built from.
pub struct StepSetup<'a> {
    pub model: ModelPlan,
    pub restrictions: &'a Restrictions,
    pub optimizer: &'a Settings,
    pub batch: usize,
    pub set: KernelSet,
    pub fuse: bool,
    /// with `fuse`: the loss in the last op's forward where it can (bit-identical either way)
    pub fuse_loss: bool,
    /// the run's seed (dropout masks)
    pub seed: u64,
    /// the loss' label smoothing (0: none)
    pub label_smoothing: f32,
    /// the validation split (Keras' `validation_split`), when held out
    pub val: Option<&'a Split>,
    /// Keras' class_weight, per class
    pub class_weight: Option<&'a [f32]>,
}

impl Step {
    /// Check every size against the device's limits, then upload the data, allocate every buffer and
    /// record the plans.
    pub fn new(
        ctx: &Context,
        s: StepSetup,
        train: &Split,
        test: &Split,
        weights: &[Vec<f32>],
    ) -> Result<Self> {
        let part = Part {
            restrictions: s.restrictions,
            optimizer: s.optimizer,
            weights,
            seed: s.seed,
        };
        Self::new_many(ctx, s, &[part], train, test)
    }

    /// A step of K models (one per part) in one set of dispatches: the K-model kernels
    /// (`gpu::batched`) over buffers holding a part per model. `s`'s restrictions and optimizer are
    /// the parts'.
    pub fn new_many(
        ctx: &Context,
        s: StepSetup,
        parts: &[Part],
        train: &Split,
        test: &Split,
    ) -> Result<Self> {
        crate::gpu::with_models(parts.len(), || Self::build(ctx, s, parts, train, test))
    }

    fn build(
        ctx: &Context,
        s: StepSetup,
        parts: &[Part],
        train: &Split,
        test: &Split,
    ) -> Result<Self> {
        GpuSplit::check_size(ctx, train, "train")?;
        GpuSplit::check_size(ctx, test, "test")?;
        if let Some(v) = s.val {
            GpuSplit::check_size(ctx, v, "validation")?;
        }
        let pipes = Pipelines::shared(ctx, &kernels())?;
        let steps_per_epoch = train.len().div_ceil(s.batch);
        let each: Vec<_> = parts
            .iter()
            .map(|p| (p.restrictions, p.optimizer))
            .collect();
        let update = Update::new_many(ctx, &s.model, &each, steps_per_epoch)?;
        let classes = s.model.classes;
        let mut net = Network::new(
            ctx,
            s.model,
            (
                s.set,
                s.fuse,
                &parts.iter().map(|p| p.seed).collect::<Vec<_>>(),
            ),
            s.batch,
            true,
            parts[0].weights,
        )?;
        net.fuse_loss &= s.fuse_loss;
        for (m, p) in parts.iter().enumerate().skip(1) {
            ctx.write_model(&net.params, m, 0, &flatten_weights(&net.model, p.weights)?);
        }
        let mut step = Step {
            loss: Loss::weighted(ctx, s.batch, classes, s.label_smoothing, s.class_weight),
            train: GpuSplit::upload(ctx, train, "train"),
            test: GpuSplit::upload(ctx, test, "test"),
            val: s.val.map(|v| GpuSplit::upload(ctx, v, "validation")),
            net,
            update,
            pipes,
            plans: Plans::default(),
            models: parts.len(),
        };
        step.plans = ctx.validated("recording the training step", || step.record_plans(ctx))??;
        Ok(step)
    }

    fn record_plans(&self, ctx: &Context) -> Result<Plans> {
        let mut r = Recorder::new(ctx, &self.pipes);
        let b = self.net.batch;
        let (n_train, n_test) = (self.train.n, self.test.n);
        let eb = b.min(n_test);
        let short = |n: usize, b: usize| (!n.is_multiple_of(b)).then_some(n % b);
        let mut plan = |rows: usize, mode: Mode| self.record(&mut r, rows, mode);
        let train_full = plan(b, Mode::Train)?;
        let train_last = short(n_train, b)
            .map(|rows| plan(rows, Mode::Train))
            .transpose()?;
        let eval_full = plan(eb, Mode::Eval)?;
        let eval_last = short(n_test, eb)
            .map(|rows| plan(rows, Mode::Eval))
            .transpose()?;
        let (val_full, val_last) = match &self.val {
            Some(v) => {
                let vb = b.min(v.n);
                (
                    plan(vb, Mode::Validate)?,
                    short(v.n, vb)
                        .map(|rows| plan(rows, Mode::Validate))
                        .transpose()?,
                )
            }
            None => (Vec::new(), None),
        };
        let p = &self.update.prologue;
        p.record_regularization_loss(&mut r, &self.net.params);
        let eval_reg = r.finish()?;
        self.update
            .constraints
            .record(&mut r, &self.net.params, true);
        let epoch_end = r.finish()?;
        Ok(Plans {
            train_full,
            train_last,
            eval_full,
            eval_last,
            val_full,
            val_last,
            eval_reg,
            epoch_end,
        })
    }

    /// One step over `rows` examples: the table of contents of clampnet's training.
    pub fn record(&self, r: &mut Recorder, rows: usize, mode: Mode) -> Result<Vec<Dispatch>> {
        let net = &self.net;
        let (split, full_batch) = match (mode, &self.val) {
            (Mode::Train, _) => (&self.train, net.batch),
            (Mode::Validate, Some(v)) => (v, net.batch.min(v.n)),
            _ => (&self.test, net.batch.min(self.test.n)),
        };
        let dlogits = net.dlogits().expect("a training network has gradients");
        net.input.record(r, split, rows, full_batch);
        // a training step's ops read its step state (dropout masks); evaluation is inference
        let state = (mode == Mode::Train).then_some(&split.state);
        let u = self.loss.params(r, rows, mode == Mode::Train);
        // the loss in the last op's forward where it can; else its own kernel
        if !net.record_forward_with_loss(r, rows, state, &self.loss.io(&u, &net.input.y)) {
            self.loss
                .record_softmax_xent_with(r, &u, (net.logits(), &net.input.y, dlogits), rows);
        }
        if mode == Mode::Train {
            net.record_backward(r, rows, state);
            let grads = net
                .grads
                .as_ref()
                .expect("a training network has gradients");
            self.update.record_step(
                r,
                &UpdateIo {
                    params: &net.params,
                    grads,
                    state: &split.state,
                },
            );
        }
        self.loss
            .record_accumulate(r, &u, &self.update.prologue.reg, split);
        r.finish()
    }
}
