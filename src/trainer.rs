//! The training loop: epochs, resumption, evaluation and the numbers a run reports. The GPU work is the
//! step's (`step::Step`): data, weights, gradients, optimizer state and metrics live on the GPU, the
//! plans are recorded once and replayed `CHUNK_STEPS` steps per submit, and the batch index and step
//! counter advance on the GPU, so a step needs neither an upload nor a readback. The host reads the
//! 16-byte metrics block once per chunk (the progress tick), while the next chunk runs.

use web_time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::Weights;
use crate::data::Split;
use crate::error::{Error, Result};
#[cfg(not(target_arch = "wasm32"))]
use crate::gpu::timer;
use crate::gpu::{Buffer, Context, KernelSet, Submission};
#[cfg(not(target_arch = "wasm32"))]
use crate::group::Group;
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
    /// with `fuse`, compute the loss in the last op's forward where it can (the default; the results are
    /// bit-identical either way: false is for the tests that show it)
    pub fuse_loss: bool,
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
    /// the group this run steps together with, and its place in it (a sweep's trials: `Group`)
    #[cfg(not(target_arch = "wasm32"))]
    pub group: Option<(std::sync::Arc<Group>, usize)>,
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
            fuse_loss: true,
            kernel_set: None,
            seed: 0,
            loss: Default::default(),
            class_weight: None,
            validation: None,
            #[cfg(not(target_arch = "wasm32"))]
            group: None,
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
    engine: Engine,
    /// optimizer steps done (Keras `iterations`)
    pub step: u64,
}

/// Where a trainer's model lives on the GPU: a step of its own, or one of the K models of a group's
/// step (`group::Group`, a sweep's trials stepping together).
enum Engine {
    Solo(Box<Core>),
    #[cfg(not(target_arch = "wasm32"))]
    Member {
        group: std::sync::Arc<Group>,
        index: usize,
    },
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for Engine {
    fn drop(&mut self) {
        if let Engine::Member { group, index } = self {
            group.leave(*index);
        }
    }
}

/// The GPU side of a run: its step (one model, or K stepping together) and the metrics staging.
pub(crate) struct Core {
    gpu: Step,
    /// where the metrics of alternate chunks are copied for reading (every model's)
    staging: [Buffer; 2],
}

/// A flat per-model buffer of the step, for reading.
#[derive(Clone, Copy)]
enum Flat {
    Params,
    Grads,
    /// the optimizer's slot, in `slots()` order
    Slot(usize),
}

/// A model's share of a collective training call: its epoch order (None: a model whose run has left
/// the group, stepped but unread).
pub(crate) type Orders = Vec<Option<Vec<u32>>>;

impl Core {
    pub(crate) fn new(ctx: &Context, gpu: Step) -> Core {
        let bytes = Self::metrics_bytes(&gpu);
        Core {
            staging: [
                ctx.staging("metrics readback", bytes),
                ctx.staging("metrics readback", bytes),
            ],
            gpu,
        }
    }

    /// Bytes from the first model's metrics to the end of the last's.
    fn metrics_bytes(gpu: &Step) -> u64 {
        gpu.train.metrics.model_stride() * (gpu.models as u64 - 1) + 16
    }

    fn steps_per_epoch(&self) -> usize {
        self.gpu.train.n.div_ceil(self.gpu.net.batch)
    }

    /// The models its step runs.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn models(&self) -> usize {
        self.gpu.models
    }

    /// Steps `first..end` of an epoch for every model, model m in `orders[m]`, after `done` optimizer
    /// steps (`Trainer::train_range`). Per model: its stats, or its error (a non-finite loss stops
    /// that model's reading, not the others').
    pub(crate) async fn train_range(
        &self,
        ctx: &Context,
        (epoch, orders): (usize, &Orders),
        (first, end, done): (usize, usize, u64),
        stop: &dyn Fn() -> bool,
        on_tick: &mut dyn FnMut(usize, Progress),
    ) -> Result<Vec<Result<EpochStats>>> {
        let gpu = &self.gpu;
        let per_epoch = self.steps_per_epoch();
        for (m, order) in orders.iter().enumerate() {
            if let Some(order) = order {
                ctx.write_model(&gpu.train.perm, m, 0, order);
            }
        }
        gpu.update
            .prologue
            .set_step_sizes(ctx, done - first as u64, per_epoch);
        gpu.train.begin(ctx, done, first);
        let k = gpu.models;
        let mut failed: Vec<Option<Error>> = (0..k).map(|_| None).collect();
        let live =
            |failed: &[Option<Error>]| (0..k).any(|m| orders[m].is_some() && failed[m].is_none());
        let start = Instant::now();
        let mut pending: Option<(usize, Submission, usize)> = None;
        let mut last = vec![PassMetrics::default(); k];
        let mut chunk = 0usize;
        let mut s = first;
        let bytes = Self::metrics_bytes(gpu);
        while s < end && !stop() && live(&failed) {
            let stop_at = (s + CHUNK_STEPS).min(end);
            let plans = (s..stop_at).flat_map(|step| {
                match (&gpu.plans.train_last, step + 1 == per_epoch) {
                    (Some(last), true) => last,
                    _ => &gpu.plans.train_full,
                }
            });
            let slot = chunk % 2;
            let sub = ctx.submit(
                plans,
                Some((&gpu.train.metrics, &self.staging[slot], bytes)),
            );
            if let Some((pslot, psub, pdone)) = pending.take() {
                let steps = done + (pdone - first) as u64;
                self.read_metrics(ctx, pslot, &psub, (epoch, steps), &mut last, &mut failed)
                    .await?;
                let secs = start.elapsed().as_secs_f64();
                for (m, metrics) in last.iter().enumerate() {
                    on_tick(
                        m,
                        Progress {
                            step: pdone,
                            steps: per_epoch,
                            metrics: *metrics,
                            images_per_second: metrics.count as f64 / secs.max(1e-9),
                        },
                    );
                }
            }
            pending = Some((slot, sub, stop_at));
            chunk += 1;
            s = stop_at;
        }
        if let Some((pslot, psub, pdone)) = pending.take() {
            let steps = done + (pdone - first) as u64;
            self.read_metrics(ctx, pslot, &psub, (epoch, steps), &mut last, &mut failed)
                .await?;
        }
        if s == per_epoch && !gpu.plans.epoch_end.is_empty() {
            ctx.submit(&gpu.plans.epoch_end, None);
        }
        let train_seconds = start.elapsed().as_secs_f64();
        Ok(failed
            .into_iter()
            .zip(last)
            .enumerate()
            .map(|(m, (f, last))| match f {
                Some(e) => Err(e),
                None => {
                    on_tick(
                        m,
                        Progress {
                            step: s,
                            steps: per_epoch,
                            metrics: last,
                            images_per_second: last.count as f64 / train_seconds.max(1e-9),
                        },
                    );
                    Ok(EpochStats {
                        train: last,
                        train_seconds,
                        steps: s - first,
                        next_step: s,
                        completed: s == per_epoch,
                    })
                }
            })
            .collect())
    }

    /// Every model's metrics from staging `slot` once `submission` has run, into `last`; a model
    /// whose loss went non-finite gets its error in `failed` (and keeps its last metrics).
    async fn read_metrics(
        &self,
        ctx: &Context,
        slot: usize,
        submission: &Submission,
        (epoch, step): (usize, u64),
        last: &mut [PassMetrics],
        failed: &mut [Option<Error>],
    ) -> Result<()> {
        let bytes = ctx
            .read_staged_async(&self.staging[slot], Some(submission))
            .await?;
        let stride = self.gpu.train.metrics.model_stride() as usize;
        for (m, (last, failed)) in last.iter_mut().zip(failed.iter_mut()).enumerate() {
            if failed.is_some() {
                continue;
            }
            let at = m * stride;
            let metrics: Metrics = bytemuck::pod_read_unaligned(&bytes[at..at + 16]);
            if metrics.nonfinite != 0 {
                *failed = Some(Error::NonFinite { epoch, step });
            } else {
                *last = metrics.into();
            }
        }
        Ok(())
    }

    /// An inference pass over the test split (`val`: the validation split, None without one):
    /// every model's metrics.
    pub(crate) async fn pass(&self, ctx: &Context, val: bool) -> Result<Option<Vec<PassMetrics>>> {
        let gpu = &self.gpu;
        let p = &gpu.plans;
        let (split, full, last) = match (val, &gpu.val) {
            (false, _) => (&gpu.test, &p.eval_full, p.eval_last.as_deref()),
            (true, Some(v)) => (v, &p.val_full, p.val_last.as_deref()),
            (true, None) => return Ok(None),
        };
        split.begin(ctx, 0, 0);
        let eb = gpu.net.batch.min(split.n);
        let steps = split.n.div_ceil(eb);
        let mut s = 0;
        while s < steps {
            let end = (s + CHUNK_STEPS).min(steps);
            // the regularization loss once, before the first batch reads it
            let reg = if s == 0 { &p.eval_reg[..] } else { &[] };
            let plans = (s..end).flat_map(|step| match (last, step + 1 == steps) {
                (Some(last), true) => last,
                _ => full,
            });
            ctx.submit(reg.iter().chain(plans), None);
            s = end;
        }
        let mut out = Vec::with_capacity(gpu.models);
        for m in 0..gpu.models {
            let bytes = ctx.read_bytes_model_async(&split.metrics, m, 0, 16).await?;
            out.push(bytemuck::pod_read_unaligned::<Metrics>(&bytes).into());
        }
        Ok(Some(out))
    }

    fn flat(&self, which: Flat) -> &Buffer {
        let net = &self.gpu.net;
        match which {
            Flat::Params => &net.params,
            Flat::Grads => net.grads.as_ref().expect("a trainer has gradients"),
            Flat::Slot(i) => self.gpu.update.optimizer.slots()[i].1,
        }
    }

    /// Model `m`'s part of a flat buffer, cut into the model's tensors.
    async fn split_flat(&self, ctx: &Context, which: Flat, m: usize) -> Result<Tensors> {
        let model = &self.gpu.net.model;
        let flat = ctx
            .read_f32_model_async(self.flat(which), m, 0, model.flat_len as u64)
            .await?;
        Ok(model
            .params
            .iter()
            .map(|p| flat[p.offset..p.offset + p.len].to_vec())
            .collect())
    }
}

impl<'a> Trainer<'a> {
    /// Check the settings and the sizes, upload the data, allocate every buffer and record the plans.
    /// With `setup.group`, the model steps together with the group's others where they can share
    /// (`group::Group`), else on its own.
    pub fn new(
        ctx: &'a Context,
        mut setup: Setup,
        train: &Split,
        test: &Split,
        weights: &[Vec<f32>],
    ) -> Result<Self> {
        #[cfg(not(target_arch = "wasm32"))]
        let group = setup.group.take();
        #[cfg(target_arch = "wasm32")]
        let group: Option<((), usize)> = {
            let _ = &mut setup;
            None
        };
        check_setup(ctx, &setup, train, test)?;
        let set = setup.kernel_set.unwrap_or(ctx.kernel_set);
        let engine = match group {
            #[cfg(target_arch = "wasm32")]
            Some(_) => unreachable!("no groups in a browser"),
            #[cfg(not(target_arch = "wasm32"))]
            Some((group, index)) => {
                match group.join(index, ctx, (&setup, weights), (train, test)) {
                    Ok(()) => Engine::Member { group, index },
                    Err(e) => {
                        log::warn!("this run trains on its own: {e}");
                        group.leave(index);
                        Engine::Solo(Box::new(Core::new(
                            ctx,
                            solo_step(ctx, &setup, train, test, weights)?,
                        )))
                    }
                }
            }
            None => Engine::Solo(Box::new(Core::new(
                ctx,
                solo_step(ctx, &setup, train, test, weights)?,
            ))),
        };
        Ok(Trainer {
            ctx,
            model: setup.model,
            restrictions: setup.restrictions,
            optimizer: setup.optimizer,
            batch_size: setup.batch_size,
            kernel_set: set,
            engine,
            step: 0,
        })
    }

    /// The models this trainer's step runs in one set of dispatches (1 on its own).
    pub fn models_per_pass(&self) -> usize {
        self.core(|c, _| c.gpu.models)
    }

    /// `f` of the GPU side and this trainer's model index in it.
    fn core<R>(&self, f: impl FnOnce(&Core, usize) -> R) -> R {
        match &self.engine {
            Engine::Solo(c) => f(c, 0),
            #[cfg(not(target_arch = "wasm32"))]
            Engine::Member { group, index } => group.with_core(*index, |c, m| f(c, m)),
        }
    }

    /// `core`, mutably.
    fn core_mut<R>(&mut self, f: impl FnOnce(&mut Core, usize) -> R) -> R {
        match &mut self.engine {
            Engine::Solo(c) => f(c, 0),
            #[cfg(not(target_arch = "wasm32"))]
            Engine::Member { group, index } => group.with_core_mut(*index, f),
        }
    }

    pub fn train_examples(&self) -> usize {
        self.core(|c, _| c.gpu.train.n)
    }

    /// Dispatches in one full training step.
    pub fn dispatches_per_step(&self) -> usize {
        self.core(|c, _| c.gpu.plans.train_full.len())
    }

    /// Training steps recorded into one submit.
    pub fn steps_per_submit(&self) -> usize {
        CHUNK_STEPS
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.train_examples().div_ceil(self.batch_size)
    }

    /// Steps `first..end` of an epoch in `order`, `first` being the steps of this epoch already done
    /// (a resumed run), `self.step` the optimizer steps done in all. `stop` is asked before each chunk of
    /// steps is recorded: when it says yes, the steps already submitted finish and the epoch stops there
    /// (`EpochStats::next_step` says where). Metrics cover the steps of this call. Epoch-end constraints
    /// run when the epoch's last step is done. In a group, every member makes the same call, and
    /// `on_tick` sees the end of the call only.
    pub async fn train_range_async(
        &mut self,
        epoch: usize,
        order: &[u32],
        first: usize,
        end: usize,
        stop: &dyn Fn() -> bool,
        on_tick: &mut dyn FnMut(Progress),
    ) -> Result<EpochStats> {
        let n = self.train_examples();
        if order.len() != n {
            return Err(Error::Config(format!(
                "epoch order has {} entries for {n} examples",
                order.len(),
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
        let ctx = self.ctx;
        let range = (first, end, self.step);
        let stats = match &self.engine {
            Engine::Solo(core) => {
                let orders = vec![Some(order.to_vec())];
                let mut tick = |_: usize, p: Progress| on_tick(p);
                core.train_range(ctx, (epoch, &orders), range, stop, &mut tick)
                    .await?
                    .pop()
                    .expect("one model")
            }
            #[cfg(not(target_arch = "wasm32"))]
            Engine::Member { group, index } => {
                let stats = group.train_range(*index, ctx, (epoch, order.to_vec()), range, stop)?;
                if let Ok(s) = &stats {
                    on_tick(Progress {
                        step: s.next_step,
                        steps: per_epoch,
                        metrics: s.train,
                        images_per_second: s.train.count as f64 / s.train_seconds.max(1e-9),
                    });
                }
                stats
            }
        }?;
        self.step += stats.steps as u64;
        Ok(stats)
    }

    /// Loss (regularization included, as Keras' evaluate reports it) and accuracy on the test set.
    pub async fn evaluate_async(&mut self) -> Result<PassMetrics> {
        self.pass(false)
            .await?
            .ok_or_else(|| Error::Model("no test split".into()))
    }

    /// The validation split's loss (data + regularization) and accuracy, in inference; None without
    /// a validation split.
    pub async fn validate_async(&mut self) -> Result<Option<PassMetrics>> {
        self.pass(true).await
    }

    async fn pass(&self, val: bool) -> Result<Option<PassMetrics>> {
        match &self.engine {
            Engine::Solo(core) => Ok(core.pass(self.ctx, val).await?.map(|mut v| v.remove(0))),
            #[cfg(not(target_arch = "wasm32"))]
            Engine::Member { group, index } => group.pass(*index, self.ctx, val),
        }
    }

    /// This trainer's model's part of a flat buffer of the step, cut into the model's tensors.
    async fn read_flat(&self, which: Flat) -> Result<Tensors> {
        match &self.engine {
            Engine::Solo(core) => core.split_flat(self.ctx, which, 0).await,
            #[cfg(not(target_arch = "wasm32"))]
            Engine::Member { group, index } => group.with_core(*index, |c, m| {
                pollster::block_on(c.split_flat(self.ctx, which, m))
            }),
        }
    }

    /// The optimizer's slots ("m", "v" for Adam), per tensor, in the model's parameter order.
    pub async fn optimizer_slots_async(&self) -> Result<Vec<(&'static str, Tensors)>> {
        let mut out = Vec::new();
        for (i, name) in self.optimizer_slot_names().into_iter().enumerate() {
            out.push((name, self.read_flat(Flat::Slot(i)).await?));
        }
        Ok(out)
    }

    /// Restore Adam's moments and the optimizer step count (a resumed run).
    pub fn set_optimizer_state(&mut self, m: &[Vec<f32>], v: &[Vec<f32>], step: u64) -> Result<()> {
        self.set_optimizer_slots(&[m, v], step)
    }

    /// The names of the optimizer's slots, in order ("m", "v" for Adam).
    pub fn optimizer_slot_names(&self) -> Vec<&'static str> {
        self.core(|c, _| {
            let slots = c.gpu.update.optimizer.slots();
            slots.into_iter().map(|(name, _)| name).collect()
        })
    }

    /// Restore the optimizer's slots (in `optimizer_slot_names` order, per tensor) and the optimizer
    /// step count (a resumed run).
    pub fn set_optimizer_slots(&mut self, values: &[&[Vec<f32>]], step: u64) -> Result<()> {
        let (ctx, model) = (self.ctx, &self.model);
        self.core(|c, m| {
            let slots = c.gpu.update.optimizer.slots();
            if values.len() != slots.len() {
                return Err(Error::Model(format!(
                    "{} optimizer slots given, the optimizer has {}",
                    values.len(),
                    slots.len()
                )));
            }
            for ((what, buf), values) in slots.into_iter().zip(values) {
                if values.len() != model.params.len() {
                    return Err(Error::Model(format!(
                        "optimizer state {what}: {} tensors, the model has {}",
                        values.len(),
                        model.params.len()
                    )));
                }
                for (p, t) in model.params.iter().zip(values.iter()) {
                    if t.len() != p.len {
                        return Err(Error::Model(format!(
                            "optimizer state {what} of {}: {} values, expected {}",
                            p.name,
                            t.len(),
                            p.len
                        )));
                    }
                    ctx.write_model(buf, m, (p.offset * 4) as u64, t);
                }
            }
            Ok(())
        })?;
        self.step = step;
        Ok(())
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
        self.core_mut(|c, m| c.gpu.update.prologue.set_learning_rate(m, lr));
        Ok(())
    }

    /// Replace the weights (the parameters' order, as `init_weights`): EarlyStopping's
    /// restore_best_weights.
    pub fn set_weights(&mut self, weights: &[Vec<f32>]) -> Result<()> {
        let flat = crate::step::flatten_weights(&self.model, weights)?;
        let ctx = self.ctx;
        self.core(|c, m| ctx.write_model(&c.gpu.net.params, m, 0, &flat));
        Ok(())
    }

    /// The weights, in the model's parameter order and Keras layout.
    pub async fn weights_async(&self) -> Result<Weights> {
        Ok(self.named(self.read_flat(Flat::Params).await?))
    }

    /// What a checkpoint holds: the weights, then each tensor's optimizer slots as
    /// `optimizer/<slot>/<tensor>` (the names `files::save_checkpoint` reads back).
    pub async fn checkpoint_tensors_async(&self) -> Result<Weights> {
        let mut tensors = self.weights_async().await?;
        let slots = self.optimizer_slots_async().await?;
        for (i, p) in self.model.params.iter().enumerate() {
            for (name, values) in &slots {
                tensors.push((
                    format!("optimizer/{name}/{}", p.name),
                    p.shape.clone(),
                    values[i].clone(),
                ));
            }
        }
        Ok(tensors)
    }

    /// The gradients of the data loss from the last training step, per tensor (penalty gradients are
    /// added inside the update shader and are not part of these).
    pub async fn gradients_async(&self) -> Result<Weights> {
        Ok(self.named(self.read_flat(Flat::Grads).await?))
    }
}

/// The blocking calls of the native build: each is its `_async` twin, run to completion (a readback
/// polls the device, so the future is ready when first polled).
#[cfg(not(target_arch = "wasm32"))]
impl Trainer<'_> {
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

    /// `train_range_async`.
    pub fn train_range(
        &mut self,
        epoch: usize,
        order: &[u32],
        first: usize,
        end: usize,
        stop: &dyn Fn() -> bool,
        on_tick: &mut dyn FnMut(Progress),
    ) -> Result<EpochStats> {
        pollster::block_on(self.train_range_async(epoch, order, first, end, stop, on_tick))
    }

    /// `evaluate_async`.
    pub fn evaluate(&mut self) -> Result<PassMetrics> {
        pollster::block_on(self.evaluate_async())
    }

    /// `validate_async`.
    pub fn validate(&mut self) -> Result<Option<PassMetrics>> {
        pollster::block_on(self.validate_async())
    }

    /// `optimizer_slots_async`.
    pub fn optimizer_slots(&self) -> Result<Vec<(&'static str, Tensors)>> {
        pollster::block_on(self.optimizer_slots_async())
    }

    /// Adam's first and second moments, per tensor, in the model's parameter order.
    pub fn optimizer_state(&self) -> Result<(Tensors, Tensors)> {
        let mut slots = self.optimizer_slots()?.into_iter().map(|(_, t)| t);
        match (slots.next(), slots.next()) {
            (Some(m), Some(v)) => Ok((m, v)),
            _ => Err(Error::Model("the optimizer has no (m, v) slots".into())),
        }
    }

    /// `weights_async`.
    pub fn weights(&self) -> Result<Weights> {
        pollster::block_on(self.weights_async())
    }

    /// Every recorded plan as text (`gpu::listing`): the full and last training steps, the full and last
    /// evaluation steps, the evaluation's regularization loss and the epoch-end constraints. A test pins it.
    pub fn dispatch_listing(&self) -> Result<String> {
        self.core(|c, _| {
            let p = &c.gpu.plans;
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
        })
    }

    /// Time every dispatch of the full training step on its own: `reps` back-to-back copies of it in one
    /// compute pass, one submit, wall-clock to completion. Returns (kernel name, seconds per dispatch).
    /// Used by `clampnet bench`; the dispatches overwrite the work buffers, so call it outside an epoch.
    pub fn profile_step(&self, reps: usize) -> Result<Vec<(&'static str, f64)>> {
        self.core(|c, _| {
            let plan = &c.gpu.plans.train_full;
            let t = timer::time_each(self.ctx, plan, reps)?;
            Ok(plan.iter().map(|d| d.kernel.name).zip(t).collect())
        })
    }

    /// GPU time of each dispatch of a full training step, from timestamp queries (`timer::timestamps_each`).
    /// None when the device was not opened with timestamp queries. Disturbs the training state.
    pub fn profile_step_timestamps(
        &self,
        steps: usize,
    ) -> Result<Option<Vec<(&'static str, f64)>>> {
        self.core(|c, _| {
            let plan = &c.gpu.plans.train_full;
            let t = timer::timestamps_each(self.ctx, plan, steps)?;
            Ok(t.map(|t| plan.iter().map(|d| d.kernel.name).zip(t).collect()))
        })
    }

    /// What one training step costs apart from the kernels themselves (`timer::overheads`): host
    /// recording time, and GPU time per step where timestamps exist. Disturbs the training state.
    pub fn profile_step_overheads(&self, steps: usize) -> Result<(f64, Option<f64>)> {
        self.core(|c, _| timer::overheads(self.ctx, &c.gpu.plans.train_full, steps))
    }

    /// `checkpoint_tensors_async`.
    pub fn checkpoint_tensors(&self) -> Result<Weights> {
        pollster::block_on(self.checkpoint_tensors_async())
    }

    /// `gradients_async`.
    pub fn gradients(&self) -> Result<Weights> {
        pollster::block_on(self.gradients_async())
    }
}

/// The checks of `Trainer::new` before anything is allocated.
fn check_setup(ctx: &Context, setup: &Setup, train: &Split, test: &Split) -> Result<()> {
    let model = &setup.model;
    if let Some(w) = &setup.class_weight {
        if w.len() != model.classes {
            return Err(Error::Config(format!(
                "class_weight has {} weights for a model of {} classes",
                w.len(),
                model.classes
            )));
        }
    }
    setup.loss.validate(model.softmax)?;
    setup.restrictions.validate(model)?;
    check_batch(ctx, setup.batch_size)?;
    setup.optimizer.validate()?;
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
    if setup.batch_size > train.len() {
        return Err(Error::Config(format!(
            "batch size {} is larger than the {} training examples: lower --batch-size",
            setup.batch_size,
            train.len()
        )));
    }
    Ok(())
}

/// The step setup of `setup` (its restrictions and optimizer are the parts' of a group).
pub(crate) fn step_setup(setup: &Setup, set: KernelSet) -> StepSetup<'_> {
    StepSetup {
        model: setup.model.clone(),
        restrictions: &setup.restrictions,
        optimizer: &setup.optimizer,
        batch: setup.batch_size,
        set,
        fuse: setup.fuse,
        fuse_loss: setup.fuse_loss,
        seed: setup.seed,
        label_smoothing: setup.loss.label_smoothing,
        val: setup.validation.as_ref(),
        class_weight: setup.class_weight.as_deref(),
    }
}

fn solo_step(
    ctx: &Context,
    setup: &Setup,
    train: &Split,
    test: &Split,
    weights: &[Vec<f32>],
) -> Result<Step> {
    let set = setup.kernel_set.unwrap_or(ctx.kernel_set);
    Step::new(ctx, step_setup(setup, set), train, test, weights)
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
