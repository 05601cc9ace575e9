//! Adam in Keras' form: `m += (g − m)(1 − β1)`, `v += (g² − v)(1 − β2)`, `w −= m·α/(√v + ε)` with
//! `α = lr·√(1 − β2^t)/(1 − β1^t)` computed per step on the host in float32 (as TensorFlow does; the
//! GPU's pow is an approximation) into a table per epoch; ε on the uncorrected √v, not PyTorch's form.
//! One invocation per 4 elements, the prologue (penalty, clipping, weight decay) fused in front, the
//! proximal L1 soft-threshold after. Slots: m, v. Twin: `reference::adam_update`.

use super::prologue::{Prologue, SHADER};
use super::{Optimizer, Settings, UpdateIo};
use crate::gpu::{Buffer, Context, KernelDef, Recorder};

pub static UPDATE: KernelDef = KernelDef {
    name: "AdamUpdate",
    shader: &SHADER,
    entry: "adam_update",
    constants: &[],
    gated: false,
};

pub static KERNELS: &[&KernelDef] = &[&UPDATE];

pub struct Adam {
    settings: Settings,
    /// elements of the flat parameters
    n: usize,
    m: Buffer,
    v: Buffer,
    /// α of each step of the current epoch, indexed by the step state's batch
    step_sizes: Buffer,
}

impl Adam {
    /// For flat parameters of `n` elements, `steps_per_epoch` entries of step sizes.
    pub fn new(ctx: &Context, n: usize, settings: &Settings, steps_per_epoch: usize) -> Self {
        // whole 64-element blocks: adam_update reads and writes them as vec4s
        let padded = n.div_ceil(64) * 64;
        Adam {
            settings: *settings,
            n,
            m: ctx.storage_zeroed("adam m", (padded * 4) as u64),
            v: ctx.storage_zeroed("adam v", (padded * 4) as u64),
            step_sizes: ctx.storage_zeroed("adam alphas", (steps_per_epoch * 4) as u64),
        }
    }
}

impl Optimizer for Adam {
    fn slots(&self) -> Vec<(&'static str, &Buffer)> {
        vec![("m", &self.m), ("v", &self.v)]
    }

    /// Grid: one workgroup of 16 invocations per 64 elements (folded), which lies inside one tensor.
    fn record(&self, r: &mut Recorder, prologue: &Prologue, io: &UpdateIo) {
        let grid = r.grid_1d(self.n, 64);
        r.dispatch(&UPDATE)
            .bind("P", &prologue.uniform)
            .window("segments", &prologue.segments, 0)
            .bind("state", io.state)
            .bind("alphas", &self.step_sizes)
            .bind("sumsq", &prologue.sumsq)
            .bind("params4", io.params)
            .bind("grads4", io.grads)
            .bind("m4", &self.m)
            .bind("v4", &self.v)
            .grid(grid);
    }

    fn set_step_sizes(&self, ctx: &Context, first_step: u64, steps: usize) {
        let alphas: Vec<f32> = (1..=steps as u64)
            .map(|i| self.settings.step_size(first_step + i))
            .collect();
        ctx.write(&self.step_sizes, 0, &alphas);
    }
}
