//! Keras' SGD: `m = m·momentum − g·lr`, `w += m` (nesterov: `w += m·momentum − g·lr`); without momentum
//! `w −= g·lr`, with the proximal L1 step after it. lr is the step's learning rate (a schedule's value),
//! from the prologue's table. One invocation per 4 elements, the prologue in front, in one shader:
//! shaders/update_prologue.wgsl + shaders/sgd.wgsl. Slot: momentum (only with momentum > 0, as Keras).
//! Twin: `reference::sgd_update`.

use super::prologue::Prologue;
use super::{Optimizer, UpdateIo};
use crate::gpu::{Buffer, Context, KernelDef, Recorder, Shader};

pub static SHADER: Shader = crate::shader!("update_prologue.wgsl", "sgd.wgsl");

pub static UPDATE: KernelDef = KernelDef {
    name: "SgdUpdate",
    shader: &SHADER,
    entry: "sgd_update",
    constants: &[],
    gated: false,
};

pub static KERNELS: &[&KernelDef] = &[&UPDATE];

/// SGD's own uniform, field for field with the WGSL `SgdParams`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SgdParams {
    pub momentum: f32,
    pub nesterov: u32,
    pub has_momentum: u32,
    pub _pad0: u32,
}
const _: () = assert!(std::mem::size_of::<SgdParams>() == 16);

pub struct Sgd {
    n: usize,
    uniform: Buffer,
    /// the momentum slot (a placeholder of one block without momentum)
    momentum: Buffer,
    has_momentum: bool,
}

impl Sgd {
    /// For flat parameters of `n` elements.
    pub fn new(ctx: &Context, n: usize, momentum: f32, nesterov: bool) -> Self {
        let has_momentum = momentum != 0.0;
        let p = SgdParams {
            momentum,
            nesterov: nesterov as u32,
            has_momentum: has_momentum as u32,
            ..Default::default()
        };
        let padded = if has_momentum {
            n.div_ceil(64) * 64
        } else {
            64
        };
        Sgd {
            n,
            uniform: ctx.uniform("sgd params", &p),
            momentum: ctx.storage_zeroed("sgd momentum", (padded * 4) as u64),
            has_momentum,
        }
    }
}

impl Optimizer for Sgd {
    fn slots(&self) -> Vec<(&'static str, &Buffer)> {
        if self.has_momentum {
            vec![("momentum", &self.momentum)]
        } else {
            vec![]
        }
    }

    /// Grid: one workgroup of 64 invocations per 256 elements (folded); each invocation's 4 elements
    /// lie inside one tensor (tensors start 64-element aligned).
    fn record(&self, r: &mut Recorder, prologue: &Prologue, io: &UpdateIo) {
        let grid = r.grid_1d(self.n, 256);
        prologue
            .bind(r.dispatch(&UPDATE), io)
            .bind("S", &self.uniform)
            .bind("momentum4", &self.momentum)
            .grid(grid);
    }
}
