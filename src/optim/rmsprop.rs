//! Keras' RMSprop: `v = ρv + (1−ρ)g²`; centered `a = ρa + (1−ρ)g`, `d = v − a² + ε`, else `d = v + ε`
//! (ε inside the square root); `inc = lr·g/√d`; with momentum `mom = momentum·mom + inc`, `w −= mom`,
//! else `w −= inc` and the proximal L1 step after it. One invocation per 4 elements, the prologue in
//! front, in one shader: shaders/update_prologue.wgsl + shaders/rmsprop.wgsl. Slots, as Keras creates
//! them: velocity, momentum (momentum > 0), average_gradient (centered). Twin:
//! `reference::rmsprop_update`.

use super::prologue::Prologue;
use super::{Optimizer, UpdateIo};
use crate::gpu::{Buffer, Context, KernelDef, Recorder, Shader};

pub static SHADER: Shader = crate::shader!("update_prologue.wgsl", "rmsprop.wgsl");

pub static UPDATE: KernelDef = KernelDef {
    name: "RmsPropUpdate",
    shader: &SHADER,
    entry: "rmsprop_update",
    constants: &[],
    gated: false,
};

pub static KERNELS: &[&KernelDef] = &[&UPDATE];

/// RMSprop's own uniform, field for field with the WGSL `RmsPropParams`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RmsPropParams {
    pub rho: f32,
    /// Keras computes 1 - rho in Python (double) and casts: so does `RmsProp::new`
    pub one_minus_rho: f32,
    pub momentum: f32,
    pub eps: f32,
    pub has_momentum: u32,
    pub centered: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}
const _: () = assert!(std::mem::size_of::<RmsPropParams>() == 32);

pub struct RmsProp {
    n: usize,
    uniform: Buffer,
    velocity: Buffer,
    /// placeholders of one block where the slot is not used
    momentum: Buffer,
    average: Buffer,
    has_momentum: bool,
    centered: bool,
}

impl RmsProp {
    /// For flat parameters of `n` elements.
    pub fn new(ctx: &Context, n: usize, rho: f32, momentum: f32, eps: f32, centered: bool) -> Self {
        let has_momentum = momentum > 0.0;
        let p = RmsPropParams {
            rho,
            one_minus_rho: (1.0 - rho as f64) as f32,
            momentum,
            eps,
            has_momentum: has_momentum as u32,
            centered: centered as u32,
            ..Default::default()
        };
        let padded = n.div_ceil(64) * 64;
        let slot = |used: bool, name: &str| {
            ctx.storage_zeroed(name, (if used { padded } else { 64 } * 4) as u64)
        };
        RmsProp {
            n,
            uniform: ctx.uniform("rmsprop params", &p),
            velocity: slot(true, "rmsprop velocity"),
            momentum: slot(has_momentum, "rmsprop momentum"),
            average: slot(centered, "rmsprop average gradient"),
            has_momentum,
            centered,
        }
    }
}

impl Optimizer for RmsProp {
    fn slots(&self) -> Vec<(&'static str, &Buffer)> {
        let mut s = vec![("velocity", &self.velocity)];
        if self.has_momentum {
            s.push(("momentum", &self.momentum));
        }
        if self.centered {
            s.push(("average_gradient", &self.average));
        }
        s
    }

    /// Grid: one workgroup of 64 invocations per 256 elements (folded); each invocation's 4 elements
    /// lie inside one tensor (tensors start 64-element aligned).
    fn record(&self, r: &mut Recorder, prologue: &Prologue, io: &UpdateIo) {
        let grid = r.grid_1d(self.n, 256);
        prologue
            .bind(r.dispatch(&UPDATE), io)
            .bind("R", &self.uniform)
            .bind("velocity4", &self.velocity)
            .bind("momentum4", &self.momentum)
            .bind("average4", &self.average)
            .grid(grid);
    }
}
