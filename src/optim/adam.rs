//! Adam in Keras' form: `m += (g − m)(1 − β1)`, `v += (g² − v)(1 − β2)`, `w −= m·α/(√v + ε)` with
//! `α = lr·√(1 − β2^t)/(1 − β1^t)` computed per step on the host in float32 (as TensorFlow does; the
//! GPU's pow is an approximation) into the prologue's step-size table; ε on the uncorrected √v, not
//! PyTorch's form. One invocation per 4 elements, the prologue (penalty, clipping, weight decay) in front
//! and the proximal L1 step after, in one shader: shaders/update_prologue.wgsl + shaders/adam.wgsl.
//! Slots: m, v. Twin: `reference::adam_update`.

use super::prologue::Prologue;
use super::{Optimizer, UpdateIo};
use crate::gpu::{Buffer, Context, KernelDef, Recorder, Shader};

pub static SHADER: Shader = crate::shader!("update_prologue.wgsl", "adam.wgsl");

pub static UPDATE: KernelDef = KernelDef {
    name: "AdamUpdate",
    shader: &SHADER,
    entry: "adam_update",
    constants: &[],
    gated: false,
};

pub static KERNELS: &[&KernelDef] = &[&UPDATE];

/// Adam's own uniform, field for field with the WGSL `AdamParams`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AdamParams {
    pub beta1: f32,
    pub beta2: f32,
    /// Keras computes 1 - beta in Python (double) and casts: so does `Adam::new`
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    pub eps: f32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}
const _: () = assert!(std::mem::size_of::<AdamParams>() == 32);

pub struct Adam {
    /// elements of the flat parameters
    n: usize,
    uniform: Buffer,
    m: Buffer,
    v: Buffer,
}

impl Adam {
    /// For flat parameters of `n` elements, Adam's (or AdamW's) β1, β2, ε.
    pub fn new(ctx: &Context, n: usize, (beta1, beta2, eps): (f32, f32, f32)) -> Self {
        let p = AdamParams {
            beta1,
            beta2,
            one_minus_beta1: (1.0 - beta1 as f64) as f32,
            one_minus_beta2: (1.0 - beta2 as f64) as f32,
            eps,
            ..Default::default()
        };
        // whole 64-element blocks: adam_update reads and writes them as vec4s
        let padded = n.div_ceil(64) * 64;
        Adam {
            n,
            uniform: ctx.uniform("adam params", &p),
            m: ctx.storage_zeroed("adam m", (padded * 4) as u64),
            v: ctx.storage_zeroed("adam v", (padded * 4) as u64),
        }
    }
}

impl Optimizer for Adam {
    fn slots(&self) -> Vec<(&'static str, &Buffer)> {
        vec![("m", &self.m), ("v", &self.v)]
    }

    /// Grid: one workgroup of 64 invocations per 256 elements (folded); each invocation's 4 elements
    /// lie inside one tensor (tensors start 64-element aligned).
    fn record(&self, r: &mut Recorder, prologue: &Prologue, io: &UpdateIo) {
        let grid = r.grid_1d(self.n, 256);
        prologue
            .bind(r.dispatch(&UPDATE), io)
            .bind("A", &self.uniform)
            .bind("m4", &self.m)
            .bind("v4", &self.v)
            .grid(grid);
    }
}
