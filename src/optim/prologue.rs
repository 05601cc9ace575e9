//! What every optimizer's update shares (shaders/update_prologue.wgsl, read before each optimizer's own
//! shader): the per-tensor table of penalties (`segments`), the regularization loss, the gradient sums
//! of squares that clipnorm and global_clipnorm read, the uniform of clipping and weight decay, and the
//! table of per-step step sizes. The update applies them in Keras' order: penalty gradient, clipping,
//! weight decay, then the optimizer's own step, then the proximal L1 step.

use super::{GradClip, Settings, UpdateIo};
use crate::error::{Error, Result};
use crate::gpu::{Buffer, Context, KernelDef, Recorder, Shader};
use crate::model::ModelPlan;
use crate::restrict::Restrictions;

pub static SHADER: Shader = crate::shader!("update_prologue.wgsl");

/// one workgroup: reg[0] = sum over tensors of l1 * sum|w| + l2 * sum w^2
pub static REGULARIZATION_LOSS: KernelDef = KernelDef {
    name: "RegularizationLoss",
    shader: &SHADER,
    entry: "regularization_loss",
    constants: &[],
    gated: false,
};
/// one workgroup per tensor: the sum of squares of its penalised gradient (clipnorm, global_clipnorm)
pub static GRADIENT_SUMSQ: KernelDef = KernelDef {
    name: "GradientSumsq",
    shader: &SHADER,
    entry: "gradient_sumsq",
    constants: &[],
    gated: false,
};

pub static KERNELS: &[&KernelDef] = &[&REGULARIZATION_LOSS, &GRADIENT_SUMSQ];

/// One row of the per-tensor table, field for field with the WGSL `Segment`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Segment {
    pub start: u32,
    pub len: u32,
    pub l1: f32,
    pub l2: f32,
    pub proximal: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}
const _: () = assert!(std::mem::size_of::<Segment>() == 32);

/// The prologue's uniform, field for field with the WGSL `UpdateParams`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct UpdateParams {
    /// elements of the flat parameters
    pub n: u32,
    pub n_segments: u32,
    pub lr: f32,
    pub weight_decay: f32,
    /// 0 none, 1 clipnorm, 2 global_clipnorm, 3 clipvalue
    pub clip_mode: u32,
    pub clip_value: f32,
    pub _pad0: u32,
    pub _pad1: u32,
}
const _: () = assert!(std::mem::size_of::<UpdateParams>() == 32);

/// The update shader reads the segments as a uniform array of this many.
pub const MAX_SEGMENTS: usize = 2048;

/// The per-tensor table and the buffers of the prologue.
pub struct Prologue {
    /// per model (one, or the K of a K-model step): their learning rates differ
    settings: Vec<Settings>,
    /// one `Segment` per trainable tensor, readable as a uniform window
    pub segments: Buffer,
    pub n_segments: u32,
    /// `UpdateParams`
    pub uniform: Buffer,
    /// per tensor: the sum of squares of its penalised gradient
    pub sumsq: Buffer,
    /// the regularization loss of the weights before this step's update, [1]
    pub reg: Buffer,
    /// per step of the current epoch (indexed by the step state's batch): (the optimizer's step size,
    /// the learning rate), the pair the update reads
    pub step_sizes: Buffer,
    /// some tensor has a penalty (else the regularization loss is not computed)
    pub any_penalty: bool,
    clip_by_norm: bool,
}

impl Prologue {
    /// Over `segs` (one per trainable tensor) of flat parameters of `n` elements, with a step-size table
    /// of `steps_per_epoch` entries.
    pub fn new(
        ctx: &Context,
        segs: &[Segment],
        n: usize,
        settings: &Settings,
        steps_per_epoch: usize,
    ) -> Result<Self> {
        if segs.len() > MAX_SEGMENTS {
            return Err(Error::Model(format!(
                "{} parameter tensors; clampnet's optimizer takes at most {MAX_SEGMENTS}: use fewer layers",
                segs.len()
            )));
        }
        let n_segments = segs.len() as u32;
        let (clip_mode, clip_value) = match settings.clip {
            GradClip::None => (0, 0.0),
            GradClip::Norm(c) => (1, c),
            GradClip::GlobalNorm(c) => (2, c),
            GradClip::Value(c) => (3, c),
        };
        let p = UpdateParams {
            n: n as u32,
            n_segments,
            lr: settings.lr,
            weight_decay: settings.weight_decay,
            clip_mode,
            clip_value,
            ..Default::default()
        };
        Ok(Prologue {
            settings: vec![*settings; crate::gpu::models()],
            any_penalty: segs.iter().any(|s| s.l1 != 0.0 || s.l2 != 0.0),
            clip_by_norm: clip_mode == 1 || clip_mode == 2,
            segments: ctx.storage_uniform_init("penalty segments", bytemuck::cast_slice(segs)),
            n_segments,
            uniform: ctx.uniform("update params", &p),
            sumsq: ctx.storage_zeroed("gradient sums of squares", (n_segments * 4) as u64),
            reg: ctx.storage_zeroed("regularization loss", 4),
            step_sizes: ctx.storage_zeroed("step sizes", (steps_per_epoch * 8) as u64),
        })
    }

    /// Model `m`'s settings and penalty table (a K-model step: they differ in the learning rate and
    /// the penalties only).
    pub fn set_model(&mut self, ctx: &Context, m: usize, settings: &Settings, segs: &[Segment]) {
        self.settings[m] = *settings;
        self.any_penalty |= segs.iter().any(|s| s.l1 != 0.0 || s.l2 != 0.0);
        ctx.write_model(&self.segments, m, 0, segs);
    }

    /// A new (initial) learning rate of model `m`, from the next `set_step_sizes` on
    /// (ReduceLROnPlateau).
    pub fn set_learning_rate(&mut self, m: usize, lr: f32) {
        self.settings[m].lr = lr;
    }

    /// Write this epoch's step sizes and learning rates (`Settings::step_size`, `Settings::lr_at`):
    /// steps `first_step + 1 ..= first_step + steps`, of every model.
    pub fn set_step_sizes(&self, ctx: &Context, first_step: u64, steps: usize) {
        for (m, settings) in self.settings.iter().enumerate() {
            let table: Vec<f32> = (1..=steps as u64)
                .flat_map(|i| {
                    let t = first_step + i;
                    [settings.step_size(t), settings.lr_at(t)]
                })
                .collect();
            ctx.write_model(&self.step_sizes, m, 0, &table);
        }
    }

    /// The regularization loss of the current weights into `reg` (nothing where no tensor has a
    /// penalty: `reg` stays 0).
    pub fn record_regularization_loss(&self, r: &mut Recorder, params: &Buffer) {
        if !self.any_penalty {
            return;
        }
        r.dispatch(&REGULARIZATION_LOSS)
            .bind("U", &self.uniform)
            .window("segments", &self.segments, 0)
            .bind("params", params)
            .bind("reg", &self.reg)
            .grid((1, 1, 1));
    }

    /// The sums of squares clipnorm and global_clipnorm read (nothing for other clippings).
    pub fn record_gradient_sumsq(&self, r: &mut Recorder, io: &UpdateIo) {
        if !self.clip_by_norm {
            return;
        }
        r.dispatch(&GRADIENT_SUMSQ)
            .bind("U", &self.uniform)
            .bind("grads", io.grads)
            .window("segments", &self.segments, 0)
            .bind("params", io.params)
            .bind("sumsq", &self.sumsq)
            .grid((self.n_segments, 1, 1));
    }

    /// Bind what an optimizer's update reads of the prologue (its shader is the prologue's followed by
    /// its own): the uniform, the segments, the step state and step sizes, the sums of squares, and the
    /// parameters and gradients as vec4 arrays.
    pub fn bind<'r, 'a>(
        &self,
        d: crate::gpu::DispatchBuilder<'r, 'a>,
        io: &UpdateIo,
    ) -> crate::gpu::DispatchBuilder<'r, 'a> {
        d.bind("U", &self.uniform)
            .window("segments", &self.segments, 0)
            .bind("state", io.state)
            .bind("step_sizes", &self.step_sizes)
            .bind("sumsq", &self.sumsq)
            .bind("params4", io.params)
            .bind("grads4", io.grads)
    }
}

/// One segment per trainable tensor: its span and penalties.
pub fn segments(model: &ModelPlan, restrictions: &Restrictions) -> Vec<Segment> {
    model
        .params
        .iter()
        .filter(|p| p.trainable)
        .map(|p| {
            let r = restrictions
                .get(&p.name)
                .and_then(|t| t.regularizer)
                .unwrap_or_default();
            Segment {
                start: p.offset as u32,
                len: p.len as u32,
                l1: r.l1,
                l2: r.l2,
                proximal: r.proximal as u32,
                ..Default::default()
            }
        })
        .collect()
}
