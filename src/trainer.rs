//! The training loop: epochs, resumption, evaluation and the numbers a run reports. The GPU work is the
//! step's (`step::Step`): data, weights, gradients, optimizer state and metrics live on the GPU, the
//! plans are recorded once and replayed `CHUNK_STEPS` steps per submit, and the batch index and step
//! counter advance on the GPU, so a step needs neither an upload nor a readback. The host reads the
//! 16-byte metrics block once per chunk (the progress tick), while the next chunk runs.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::Weights;
use crate::data::Split;
use crate::error::{Error, Result};
use crate::gpu::{timer, Buffer, Context, KernelSet, Submission};
use crate::model::ModelPlan;
use crate::optim::Settings;
use crate::restrict::Restrictions;
use crate::step::loss::Metrics;
use crate::step::{Step, StepSetup};

/// Per-tensor values in the model's parameter order.
pub type Tensors = Vec<Vec<f32>>;

/// Steps recorded into one command buffer; the metrics of a chunk are read while the next one runs.
const CHUNK_STEPS: usize = 64;

/// What a training run trains, and how.
#[derive(Clone, Debug)]
pub struct Setup {
    pub model: ModelPlan,
    pub restrictions: Restrictions,
    pub optimizer: Settings,
    pub batch_size: usize,
    /// run a relu conv followed by a 2x2 max-pool as one fused op where the kernel set can (the
    /// default), or as separate ops
    pub fuse: bool,
    /// the kernel shapes (None: the context's)
    pub kernel_set: Option<KernelSet>,
    /// the run's seed: dropout masks are a function of (seed, layer, step, element)
    pub seed: u64,
    /// the loss (label smoothing; from_logits is the model's last layer)
    pub loss: crate::losses::LossSpec,
    /// Keras' class_weight: one weight per class on the training loss (None: all 1)
    pub class_weight: Option<Vec<f32>>,
    /// a validation split held out of the training data (Keras' `validation_split`), evaluated by
    /// `Trainer::validate`
    pub validation: Option<Split>,
}

impl Setup {
    pub fn new(
        model: ModelPlan,
        restrictions: Restrictions,
        optimizer: Settings,
        batch_size: usize,
    ) -> Self {
        Setup {
            model,
            restrictions,
            optimizer,
            batch_size,
            fuse: true,
            kernel_set: None,
            seed: 0,
            loss: Default::default(),
            class_weight: None,
            validation: None,
        }
    }
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

/// Averages over a pass: Keras' loss tracker (batch-size-weighted mean, regularization included) and accuracy.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PassMetrics {
    pub loss: f64,
    pub accuracy: f64,
    pub count: usize,
}

impl From<Metrics> for PassMetrics {
    fn from(m: Metrics) -> Self {
        let count = m.count as f64;
        let mean = |v: f32| if count > 0.0 { v as f64 / count } else { 0.0 };
        PassMetrics {
            loss: mean(m.loss_sum),
            accuracy: mean(m.correct),
            count: m.count as usize,
        }
    }
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
    pub model: ModelPlan,
    pub restrictions: Restrictions,
    pub optimizer: Settings,
    pub batch_size: usize,
    /// the kernel shapes this trainer runs
    pub kernel_set: KernelSet,
    gpu: Step,
    /// where the metrics of alternate chunks are copied for reading
    staging: [Buffer; 2],
    /// optimizer steps done (Keras `iterations`)
    pub step: u64,
}

impl<'a> Trainer<'a> {
    /// Check the settings and the sizes, upload the data, allocate every buffer and record the plans.
    pub fn new(
        ctx: &'a Context,
        setup: Setup,
        train: &Split,
        test: &Split,
        weights: &[Vec<f32>],
    ) -> Result<Self> {
        let Setup {
            model,
            restrictions,
            optimizer,
            batch_size,
            fuse,
            kernel_set,
            seed,
            loss,
            class_weight,
            validation,
        } = setup;
        if let Some(w) = &class_weight {
            if w.len() != model.classes {
                return Err(Error::Config(format!(
                    "class_weight has {} weights for a model of {} classes",
                    w.len(),
                    model.classes
                )));
            }
        }
        loss.validate(model.softmax)?;
        restrictions.validate(&model)?;
        check_batch(ctx, batch_size)?;
        optimizer.validate()?;
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
        let set = kernel_set.unwrap_or(ctx.kernel_set);
        let gpu = Step::new(
            ctx,
            StepSetup {
                model: model.clone(),
                restrictions: &restrictions,
                optimizer: &optimizer,
                batch: batch_size,
                set,
                fuse,
                seed,
                label_smoothing: loss.label_smoothing,
                val: validation.as_ref(),
                class_weight: class_weight.as_deref(),
            },
            train,
            test,
            weights,
        )?;
        Ok(Trainer {
            ctx,
            model,
            restrictions,
            optimizer,
            batch_size,
            kernel_set: set,
            gpu,
            staging: [
                ctx.staging("metrics readback", 16),
                ctx.staging("metrics readback", 16),
            ],
            step: 0,
        })
    }

    pub fn train_examples(&self) -> usize {
        self.gpu.train.n
    }

    /// Dispatches in one full training step.
    pub fn dispatches_per_step(&self) -> usize {
        self.gpu.plans.train_full.len()
    }

    /// Training steps recorded into one submit.
    pub fn steps_per_submit(&self) -> usize {
        CHUNK_STEPS
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.gpu.train.n.div_ceil(self.batch_size)
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
        let (ctx, gpu) = (self.ctx, &self.gpu);
        if order.len() != gpu.train.n {
            return Err(Error::Config(format!(
                "epoch order has {} entries for {} examples",
                order.len(),
                gpu.train.n
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
        ctx.write(&gpu.train.perm, 0, order);
        gpu.update
            .prologue
            .set_step_sizes(ctx, self.step - first as u64, per_epoch);
        gpu.train.begin(ctx, self.step, first);
        let start = Instant::now();
        let mut pending: Option<(usize, Submission, usize)> = None;
        let mut last = PassMetrics::default();
        let mut chunk = 0usize;
        let mut s = first;
        while s < end && !stop() {
            let stop_at = (s + CHUNK_STEPS).min(end);
            let plans = (s..stop_at).flat_map(|step| {
                match (&gpu.plans.train_last, step + 1 == per_epoch) {
                    (Some(last), true) => last,
                    _ => &gpu.plans.train_full,
                }
            });
            let slot = chunk % 2;
            let sub = ctx.submit(plans, Some((&gpu.train.metrics, &self.staging[slot], 16)));
            if let Some((pslot, psub, pdone)) = pending.take() {
                last = self.read_metrics(pslot, &psub, epoch, pdone - first)?;
                let secs = start.elapsed().as_secs_f64();
                on_tick(Progress {
                    step: pdone,
                    steps: per_epoch,
                    metrics: last,
                    images_per_second: last.count as f64 / secs.max(1e-9),
                });
            }
            pending = Some((slot, sub, stop_at));
            chunk += 1;
            s = stop_at;
        }
        if let Some((pslot, psub, pdone)) = pending.take() {
            last = self.read_metrics(pslot, &psub, epoch, pdone - first)?;
        }
        if s == per_epoch && !self.gpu.plans.epoch_end.is_empty() {
            ctx.submit(&self.gpu.plans.epoch_end, None);
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

    fn read_metrics(
        &self,
        slot: usize,
        submission: &Submission,
        epoch: usize,
        steps_done: usize,
    ) -> Result<PassMetrics> {
        let bytes = self
            .ctx
            .read_staged(&self.staging[slot], Some(submission))?;
        let m: Metrics = bytemuck::pod_read_unaligned(&bytes[..16]);
        if m.nonfinite != 0 {
            return Err(Error::NonFinite {
                epoch,
                step: self.step + steps_done as u64,
            });
        }
        Ok(m.into())
    }

    /// Loss (regularization included, as Keras' evaluate reports it) and accuracy on the test set.
    pub fn evaluate(&mut self) -> Result<PassMetrics> {
        let p = &self.gpu.plans;
        self.pass(&self.gpu.test, (&p.eval_full, p.eval_last.as_deref()))
    }

    /// The validation split's loss (data + regularization) and accuracy, in inference; None without
    /// a validation split.
    pub fn validate(&mut self) -> Result<Option<PassMetrics>> {
        let p = &self.gpu.plans;
        match &self.gpu.val {
            Some(v) => self.pass(v, (&p.val_full, p.val_last.as_deref())).map(Some),
            None => Ok(None),
        }
    }

    /// An inference pass over `split` with its recorded plans.
    fn pass(
        &self,
        split: &crate::step::gather::GpuSplit,
        (full, last): (&[crate::gpu::Dispatch], Option<&[crate::gpu::Dispatch]>),
    ) -> Result<PassMetrics> {
        let (ctx, gpu) = (self.ctx, &self.gpu);
        split.begin(ctx, 0, 0);
        let eb = self.batch_size.min(split.n);
        let steps = split.n.div_ceil(eb);
        let mut s = 0;
        while s < steps {
            let end = (s + CHUNK_STEPS).min(steps);
            // the regularization loss once, before the first batch reads it
            let reg = if s == 0 { &gpu.plans.eval_reg[..] } else { &[] };
            let plans = (s..end).flat_map(|step| match (last, step + 1 == steps) {
                (Some(last), true) => last,
                _ => full,
            });
            ctx.submit(reg.iter().chain(plans), None);
            s = end;
        }
        let bytes = ctx.read_bytes(&split.metrics, 0, 16)?;
        Ok(bytemuck::pod_read_unaligned::<Metrics>(&bytes).into())
    }

    /// Every recorded plan as text (`gpu::listing`): the full and last training steps, the full and last
    /// evaluation steps, the evaluation's regularization loss and the epoch-end constraints. A test pins it.
    pub fn dispatch_listing(&self) -> Result<String> {
        let p = &self.gpu.plans;
        let mut plans: Vec<(&str, &[crate::gpu::Dispatch])> = vec![("train", &p.train_full)];
        if let Some(l) = &p.train_last {
            plans.push(("train (last batch)", l));
        }
        plans.push(("eval", &p.eval_full));
        if let Some(l) = &p.eval_last {
            plans.push(("eval (last batch)", l));
        }
        if !p.eval_reg.is_empty() {
            plans.push(("eval regularization", &p.eval_reg));
        }
        plans.push(("epoch end", &p.epoch_end));
        crate::gpu::listing(self.ctx, &plans)
    }

    /// Time every dispatch of the full training step on its own: `reps` back-to-back copies of it in one
    /// compute pass, one submit, wall-clock to completion. Returns (kernel name, seconds per dispatch).
    /// Used by `clampnet bench`; the dispatches overwrite the work buffers, so call it outside an epoch.
    pub fn profile_step(&self, reps: usize) -> Result<Vec<(&'static str, f64)>> {
        let plan = &self.gpu.plans.train_full;
        let t = timer::time_each(self.ctx, plan, reps)?;
        Ok(plan.iter().map(|d| d.kernel.name).zip(t).collect())
    }

    /// GPU time of each dispatch of a full training step, from timestamp queries (`timer::timestamps_each`).
    /// None when the device was not opened with timestamp queries. Disturbs the training state.
    pub fn profile_step_timestamps(
        &self,
        steps: usize,
    ) -> Result<Option<Vec<(&'static str, f64)>>> {
        let plan = &self.gpu.plans.train_full;
        let t = timer::timestamps_each(self.ctx, plan, steps)?;
        Ok(t.map(|t| plan.iter().map(|d| d.kernel.name).zip(t).collect()))
    }

    /// What one training step costs apart from the kernels themselves (`timer::overheads`): host
    /// recording time, and GPU time per step where timestamps exist. Disturbs the training state.
    pub fn profile_step_overheads(&self, steps: usize) -> Result<(f64, Option<f64>)> {
        timer::overheads(self.ctx, &self.gpu.plans.train_full, steps)
    }

    /// The optimizer's slots ("m", "v" for Adam), per tensor, in the model's parameter order.
    pub fn optimizer_slots(&self) -> Result<Vec<(&'static str, Tensors)>> {
        self.gpu
            .update
            .optimizer
            .slots()
            .into_iter()
            .map(|(name, buf)| Ok((name, self.split_flat(buf)?)))
            .collect()
    }

    /// Adam's first and second moments, per tensor, in the model's parameter order.
    pub fn optimizer_state(&self) -> Result<(Tensors, Tensors)> {
        let mut slots = self.optimizer_slots()?.into_iter().map(|(_, t)| t);
        match (slots.next(), slots.next()) {
            (Some(m), Some(v)) => Ok((m, v)),
            _ => Err(Error::Model("the optimizer has no (m, v) slots".into())),
        }
    }

    /// Restore Adam's moments and the optimizer step count (a resumed run).
    pub fn set_optimizer_state(&mut self, m: &[Vec<f32>], v: &[Vec<f32>], step: u64) -> Result<()> {
        self.set_optimizer_slots(&[m, v], step)
    }

    /// The names of the optimizer's slots, in order ("m", "v" for Adam).
    pub fn optimizer_slot_names(&self) -> Vec<&'static str> {
        let slots = self.gpu.update.optimizer.slots();
        slots.into_iter().map(|(name, _)| name).collect()
    }

    /// Restore the optimizer's slots (in `optimizer_slot_names` order, per tensor) and the optimizer
    /// step count (a resumed run).
    pub fn set_optimizer_slots(&mut self, values: &[&[Vec<f32>]], step: u64) -> Result<()> {
        let slots = self.gpu.update.optimizer.slots();
        if values.len() != slots.len() {
            return Err(Error::Model(format!(
                "{} optimizer slots given, the optimizer has {}",
                values.len(),
                slots.len()
            )));
        }
        for ((what, buf), values) in slots.into_iter().zip(values) {
            if values.len() != self.model.params.len() {
                return Err(Error::Model(format!(
                    "optimizer state {what}: {} tensors, the model has {}",
                    values.len(),
                    self.model.params.len()
                )));
            }
            for (p, t) in self.model.params.iter().zip(values.iter()) {
                if t.len() != p.len {
                    return Err(Error::Model(format!(
                        "optimizer state {what} of {}: {} values, expected {}",
                        p.name,
                        t.len(),
                        p.len
                    )));
                }
                self.ctx.write(buf, (p.offset * 4) as u64, t);
            }
        }
        self.step = step;
        Ok(())
    }

    /// A flat buffer read back and cut into the model's tensors.
    fn split_flat(&self, buffer: &Buffer) -> Result<Tensors> {
        let flat = self.ctx.read_f32(buffer, 0, self.model.flat_len as u64)?;
        Ok(self
            .model
            .params
            .iter()
            .map(|p| flat[p.offset..p.offset + p.len].to_vec())
            .collect())
    }

    fn named(&self, values: Tensors) -> Weights {
        self.model
            .params
            .iter()
            .zip(values)
            .map(|(p, v)| (p.name.clone(), p.shape.clone(), v))
            .collect()
    }

    /// Set the learning rate (Keras' `optimizer.learning_rate = lr`, as ReduceLROnPlateau does), from
    /// the next epoch on; refused with a schedule, as Keras refuses it.
    pub fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        if self.optimizer.schedule != crate::optim::Schedule::Constant {
            return Err(Error::Config(
                "the learning rate follows a schedule: it cannot be set (as in Keras)".into(),
            ));
        }
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(Error::Config(format!(
                "learning rate must be positive, got {lr}"
            )));
        }
        self.optimizer.lr = lr;
        self.gpu.update.prologue.set_learning_rate(lr);
        Ok(())
    }

    /// Replace the weights (the parameters' order, as `init_weights`): EarlyStopping's
    /// restore_best_weights.
    pub fn set_weights(&mut self, weights: &[Vec<f32>]) -> Result<()> {
        let flat = crate::step::flatten_weights(&self.model, weights)?;
        self.ctx.write(&self.gpu.net.params, 0, &flat);
        Ok(())
    }

    /// The weights, in the model's parameter order and Keras layout.
    pub fn weights(&self) -> Result<Weights> {
        Ok(self.named(self.split_flat(&self.gpu.net.params)?))
    }

    /// The gradients of the data loss from the last training step, per tensor (penalty gradients are
    /// added inside the update shader and are not part of these).
    pub fn gradients(&self) -> Result<Weights> {
        let grads = self
            .gpu
            .net
            .grads
            .as_ref()
            .expect("a trainer has gradients");
        Ok(self.named(self.split_flat(grads)?))
    }
}

/// A batch size the device can run and the data can fill.
fn check_batch(ctx: &Context, batch_size: usize) -> Result<()> {
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
    Ok(())
}
