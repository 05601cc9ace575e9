//! The fusion of a relu Conv2D with the 2x2 MaxPool2D after it: one op whose forward writes only the
//! pooled output and the window position it chose (4, "none", where the pooled value is 0: relu' = 0
//! there), and whose weight gradient visits only the pooled positions (a quarter of the conv outputs,
//! the only ones with a gradient). The pool's backward and relu' are folded into the conv's gradients.
//! Shader: shaders/conv2d.wgsl (the fused and `_gpu` entry points, and the POOLED variants). Twin: the
//! conv twin then the pool twin.
//!
//! With the CPU kernel set the forward reads the kernel and the patch-row table through 64 KiB uniform
//! windows, so the fusion applies only where both fit one.

use super::conv2d::{conv_weight_chunks, ConvCore, POOLED_WEIGHT_GRAD_TILE, SHADER, TAPS_MULTIPLE};
use super::{Build, Fusion, Io, LayerSpec, Op, OpOutput};
use crate::error::Result;
use crate::gpu::{Buffer, KernelDef, KernelSet, Recorder, UNIFORM_WINDOW};
use crate::model::fuse::OpPlan;
use crate::model::{Activation, ModelPlan};

pub static FUSION: Fusion = Fusion {
    name: "conv2d + relu + max_pool2d(2)",
    matches,
    build,
    kernels: &[
        &FORWARD,
        &FORWARD_OC4,
        &FORWARD_K3C1,
        &FORWARD_K3C1X2,
        &FORWARD_K3C1_PACKED,
        &FORWARD_K3C1X2_PACKED,
        &WEIGHT_PARTIALS_K3C1_PACKED,
        &GROUP_KERNEL,
        &WEIGHT_PARTIALS,
        &WEIGHT_PARTIALS_K3C1,
        &BACKWARD_INPUT_POOLED,
        &FORWARD_GPU,
        &FORWARD_TILED_GPU,
        &WEIGHT_PARTIALS_GPU,
    ],
};

/// conv + relu + 2x2 max-pool (CPU shape): 2 pooled pixels x 16 channels per invocation
pub static FORWARD: KernelDef = KernelDef {
    name: "Conv2dReluMaxPool2Forward",
    shader: &SHADER,
    entry: "conv2d_relu_maxpool2_forward",
    constants: &[],
    gated: false,
};
/// the same, storing channel quads (OC % 4 == 0): a quarter of the stores, which llvmpipe runs one lane
/// at a time
pub static FORWARD_OC4: KernelDef = KernelDef {
    name: "Conv2dReluMaxPool2ForwardOc4",
    shader: &SHADER,
    entry: "conv2d_relu_maxpool2_forward_oc4",
    constants: &[],
    gated: false,
};
/// the same for a 3x3 kernel over one input channel, valid, IW % 4 == 0: straight-line code over the
/// pair's input patch, loaded once as quads (bit-identical sums)
pub static FORWARD_K3C1: KernelDef = KernelDef {
    name: "Conv2dReluMaxPool2ForwardK3C1",
    shader: &SHADER,
    entry: "conv2d_relu_maxpool2_forward_k3c1",
    constants: &[],
    gated: false,
};
/// the 3x3 one-channel forward's kernel and bias by 16-channel group (`ConvPoolOp::groups`)
pub static GROUP_KERNEL: KernelDef = KernelDef {
    name: "Conv2dGroupKernel",
    shader: &SHADER,
    entry: "conv2d_group_kernel",
    constants: &[],
    gated: false,
};
/// `FORWARD_K3C1` over two 16-channel groups per invocation (one dispatch per pair of groups): the patch
/// is loaded once for 32 channels
pub static FORWARD_K3C1X2: KernelDef = KernelDef {
    name: "Conv2dReluMaxPool2ForwardK3C1x2",
    shader: &SHADER,
    entry: "conv2d_relu_maxpool2_forward_k3c1",
    constants: &[("K3C1_GROUPS", 2.0)],
    gated: false,
};
/// `FORWARD_K3C1` and `FORWARD_K3C1X2` storing the pool's choices packed (`ConvPoolOp::packed`)
pub static FORWARD_K3C1_PACKED: KernelDef = KernelDef {
    name: "Conv2dReluMaxPool2ForwardK3C1Packed",
    shader: &SHADER,
    entry: "conv2d_relu_maxpool2_forward_k3c1",
    constants: &[("PACKED_ARGMAX", 1.0)],
    gated: false,
};
pub static FORWARD_K3C1X2_PACKED: KernelDef = KernelDef {
    name: "Conv2dReluMaxPool2ForwardK3C1x2Packed",
    shader: &SHADER,
    entry: "conv2d_relu_maxpool2_forward_k3c1",
    constants: &[("K3C1_GROUPS", 2.0), ("PACKED_ARGMAX", 1.0)],
    gated: false,
};
/// `WEIGHT_PARTIALS_K3C1` reading them
pub static WEIGHT_PARTIALS_K3C1_PACKED: KernelDef = KernelDef {
    name: "Conv2dWeightPartialsPooledK3C1Packed",
    shader: &SHADER,
    entry: "conv2d_weight_partials_pooled_k3c1",
    constants: &[("PACKED_ARGMAX", 1.0)],
    gated: false,
};
/// the weight gradient over the pooled positions for the layers `FORWARD_K3C1` serves: every access a
/// quad (bit-identical sums)
pub static WEIGHT_PARTIALS_K3C1: KernelDef = KernelDef {
    name: "Conv2dWeightPartialsPooledK3C1",
    shader: &SHADER,
    entry: "conv2d_weight_partials_pooled_k3c1",
    constants: &[],
    gated: false,
};
/// the weight gradient over the pooled positions (CPU shape): 10 patch rows x 16 channels per invocation
pub static WEIGHT_PARTIALS: KernelDef = KernelDef {
    name: "Conv2dWeightPartialsPooled",
    shader: &SHADER,
    entry: "conv2d_weight_partials_pooled",
    constants: &[("POOLED", 1.0)],
    gated: false,
};
/// the input gradient through the pool's choice
pub static BACKWARD_INPUT_POOLED: KernelDef = KernelDef {
    name: "Conv2dBackwardInputPooled",
    shader: &SHADER,
    entry: "conv2d_backward_input",
    constants: &[("POOLED", 1.0)],
    gated: false,
};
/// GPU shape: one invocation per (pooled pixel, channel)
pub static FORWARD_GPU: KernelDef = KernelDef {
    name: "Conv2dReluMaxPool2ForwardGpu",
    shader: &SHADER,
    entry: "conv2d_relu_maxpool2_forward_gpu",
    constants: &[],
    gated: false,
};
/// GPU shape, tiled (opt-in: `Context::gpu_tiles`): one workgroup per (pooled row, example), its input
/// rows staged in workgroup memory; bit-identical to `FORWARD_GPU`
pub static FORWARD_TILED_GPU: KernelDef = KernelDef {
    name: "Conv2dReluMaxPool2ForwardTiledGpu",
    shader: &SHADER,
    entry: "conv2d_relu_maxpool2_forward_tiled_gpu",
    constants: &[],
    gated: false,
};
/// The tiled forward stages (k + 1) input rows of this many values at most (`conv_rows`, 16 KiB).
const TILED_ROWS_MAX: usize = 4096;
/// GPU shape: workgroups of 32 channels x 8 lanes over chunks of pooled positions
pub static WEIGHT_PARTIALS_GPU: KernelDef = KernelDef {
    name: "Conv2dWeightPartialsPooledGpu",
    shader: &SHADER,
    entry: "conv2d_weight_partials_pooled_gpu",
    constants: &[],
    gated: false,
};

/// A relu conv2d at layer `i` followed by a 2x2 max-pool, whose kernel and patch-row table fit the
/// uniform windows the CPU shape reads them through (any size with the GPU shapes): 2 layers.
fn matches(plan: &ModelPlan, i: usize, set: KernelSet) -> Option<usize> {
    let l = &plan.layers;
    let LayerSpec::Conv2d(conv) = &l[i].spec else {
        return None;
    };
    let next_is_pool2 =
        matches!(l.get(i + 1).map(|n| &n.spec), Some(LayerSpec::MaxPool2d(p)) if p.plain2());
    if conv.activation != Activation::Relu || !next_is_pool2 || !conv.plain() {
        return None;
    }
    let kernel = plan.layer_params(i)[0];
    let window = UNIFORM_WINDOW as usize;
    let taps = kernel.len / conv.filters + 1;
    // K models stepping together read their K kernels from one window (a mirror: `ConvPoolOp`)
    let fits = crate::gpu::fits_window((kernel.len * 4) as u64)
        && taps.div_ceil(TAPS_MULTIPLE) * TAPS_MULTIPLE * 16 <= window;
    (set == KernelSet::Gpu || fits).then_some(2)
}

/// Floats per 16-channel group in `ConvPoolOp::groups` (9 taps x 16 + 16 bias, rounded up to 768 bytes:
/// window offsets are multiples of 256 bytes); `GROUP_STRIDE` in conv2d.wgsl.
const GROUP_STRIDE: usize = 192;

/// Whether the forward can take `FORWARD_K3C1`: a 3x3 kernel over one input channel, no padding, OC and
/// the input width multiples of 4 (the fusion is already stride 1).
fn k3c1(c: &ConvCore) -> bool {
    let ((_, w, ic), (_, _, oc)) = (c.input, c.conv_out);
    c.k == 3 && ic == 1 && c.pad == (0, 0) && oc.is_multiple_of(4) && w.is_multiple_of(4)
}

/// How the GPU shape of the pooled conv weight gradient splits a step: (`chunk_len`, `chunks`), chunks of
/// `chunk_len` pooled positions (a multiple of its 8 lanes, at least 32), about 128 chunks.
pub fn pooled_chunks_gpu(positions: usize) -> (u32, u32) {
    let len = positions.div_ceil(128).next_multiple_of(8).max(32);
    (len as u32, positions.div_ceil(len).max(1) as u32)
}

fn build(model: &ModelPlan, plan: &OpPlan, b: &Build) -> Result<Box<dyn Op>> {
    let LayerSpec::Conv2d(conv) = &model.layers[plan.layers.start].spec else {
        unreachable!("matched a conv2d")
    };
    let bytes = (b.batch * plan.output.len() * 4) as u64;
    let core = ConvCore::new(conv, &plan.name, &plan.params, plan.input, b);
    let groups = (b.set == KernelSet::Cpu && crate::gpu::models() == 1 && k3c1(&core)).then(|| {
        let bytes = (core.conv_out.2.div_ceil(16) * GROUP_STRIDE * 4) as u64;
        b.ctx
            .storage_uniform_zeroed(&format!("{} kernel groups", plan.name), bytes)
    });
    // the GPU set's tiled forward, where opted in to and its k + 1 input rows fit workgroup memory
    let (_, w, ic) = core.input;
    let tiles =
        b.set == KernelSet::Gpu && b.ctx.gpu_tiles && (core.k + 1) * w * ic <= TILED_ROWS_MAX;
    // a first layer (no gradient to its input) keeps the pool's choices packed
    let packed = (groups.is_some() && !plan.needs_dx).then(|| {
        let (oh, ow, oc) = core.conv_out;
        let bytes = (b.batch * (oh / 2) * (ow / 2) * oc.div_ceil(32) * 16) as u64;
        b.ctx
            .storage_zeroed(&format!("{} pool choices, packed", plan.name), bytes)
    });
    Ok(Box::new(ConvPoolOp {
        core,
        groups,
        packed,
        set: b.set,
        out: b.outputs(plan, false)?,
        argmax: b
            .ctx
            .storage_checked(&format!("{} pool argmax", plan.name), bytes)?,
        mirror: (b.set == KernelSet::Cpu && crate::gpu::models() > 1).then(|| {
            let len = plan.params[0].len;
            b.ctx
                .storage_uniform_zeroed(&format!("{} kernel mirror", plan.name), (len * 4) as u64)
        }),
        tiles,
    }))
}

struct ConvPoolOp {
    core: ConvCore,
    set: KernelSet,
    /// the pooled output [B, OH/2, OW/2, OC]
    out: OpOutput,
    /// the window position each pooled output came from (4: none, the value is 0)
    argmax: Buffer,
    /// the 3x3 one-channel forward (`FORWARD_K3C1`, one model per step): the kernel and bias by
    /// 16-channel group, rewritten before each forward, each group read through its own uniform window
    groups: Option<Buffer>,
    /// with `groups`, in a first layer: the pool's choices, 3 bits per channel, one quad of words per
    /// 32 channels per pooled pixel (`PACKED_ARGMAX`), written by the forward for the weight gradient
    /// in place of `argmax` (a quarter of the loads and stores)
    packed: Option<Buffer>,
    /// K models stepping together (CPU kernel set): each model's kernel copied here before the
    /// forward, so that one uniform window holds all K (in the parameters, they are a model apart)
    mirror: Option<Buffer>,
    /// the GPU set's tiled forward (`FORWARD_TILED_GPU`: opted in to, and its rows fit)
    tiles: bool,
}

impl ConvPoolOp {
    /// `FORWARD_K3C1`: the kernel and bias regrouped, then one dispatch per 16-channel group, each with
    /// its group's window (and its own uniform, which names the group).
    fn forward_k3c1(&self, r: &mut Recorder, io: &Io, rows: usize, groups: &Buffer) {
        let c = &self.core;
        let (u, _) = self.uniform(r, rows);
        let (oh, ow, oc) = c.conv_out;
        let n = oc.div_ceil(16);
        let grid = r.grid_1d(n * GROUP_STRIDE, 64);
        let d = r.dispatch(&GROUP_KERNEL).bind("P", &u).span(
            "kernel",
            io.params,
            c.kernel.offset,
            c.kernel.len,
        );
        c.bias(d, io).bind("kgroups", groups).grid(grid);
        // two groups per dispatch, the last alone when the count is odd
        for g in (0..n).step_by(2) {
            let mut p = c.params(rows, (0, 0, 0));
            p.group = g as u32;
            let ug = r.uniform(&format!("{} group {g}", c.name), &p);
            let kernel = match (g + 1 < n, self.packed.is_some()) {
                (true, false) => &FORWARD_K3C1X2,
                (false, false) => &FORWARD_K3C1,
                (true, true) => &FORWARD_K3C1X2_PACKED,
                (false, true) => &FORWARD_K3C1_PACKED,
            };
            r.dispatch(kernel)
                .bind("P", &ug)
                .bind("x4", io.x)
                .bind("y4", &self.out.y)
                .bind("argmax4", self.packed.as_ref().unwrap_or(&self.argmax))
                .window("kernel_u", groups, g * GROUP_STRIDE)
                .grid((
                    ((oh / 2) * (ow / 2).div_ceil(2)).div_ceil(32) as u32,
                    rows as u32,
                    1,
                ));
        }
    }

    /// The uniform over `rows` examples and the weight gradient's chunk count.
    fn uniform(&self, r: &mut Recorder, rows: usize) -> (Buffer, u32) {
        let (oh, ow, _) = self.core.conv_out;
        let (rows_per, chunks) = conv_weight_chunks(rows, oh, true);
        let (chunk_len, chunks) = match self.set {
            KernelSet::Gpu => pooled_chunks_gpu(rows * (oh / 2) * (ow / 2)),
            KernelSet::Cpu => (0, chunks),
        };
        let p = self.core.params(rows, (rows_per, chunks, chunk_len));
        (r.uniform(&self.core.name, &p), chunks)
    }
}

impl Op for ConvPoolOp {
    fn out(&self) -> &OpOutput {
        &self.out
    }

    fn forward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let c = &self.core;
        let (u, _) = self.uniform(r, rows);
        let (oh, ow, oc) = c.conv_out;
        let (ph, pw) = (oh / 2, ow / 2);
        match self.set {
            KernelSet::Gpu => {
                let (kernel, grid) = match self.tiles {
                    true => (&FORWARD_TILED_GPU, (ph as u32, rows as u32, 1)),
                    false => (
                        &FORWARD_GPU,
                        ((ph * pw * oc).div_ceil(256) as u32, rows as u32, 1),
                    ),
                };
                let d = r.dispatch(kernel).bind("P", &u).bind("x", io.x).span(
                    "kernel",
                    io.params,
                    c.kernel.offset,
                    c.kernel.len,
                );
                c.bias(d, io)
                    .bind("y", &self.out.y)
                    .bind("argmax", &self.argmax)
                    .grid(grid)
            }
            KernelSet::Cpu => {
                let (window, at) = match &self.mirror {
                    Some(mirror) => {
                        // the copy is dropout's inference pass (y = x), over every model's kernel
                        let n = c.kernel.len;
                        let p = super::dropout::DropoutParams {
                            n: n as u32,
                            ..Default::default()
                        };
                        // one value for all models (a K-model kernel reads `D` from storage)
                        let cu = r
                            .ctx
                            .storage_init_shared("kernel mirror copy", bytemuck::bytes_of(&p));
                        let grid = r.grid_1d(n, 64);
                        r.dispatch(&super::dropout::COPY)
                            .bind("D", &cu)
                            .span("x", io.params, c.kernel.offset, n)
                            .span("y", mirror, 0, n)
                            .grid(grid);
                        (mirror, 0)
                    }
                    None => (io.params, c.kernel.offset),
                };
                if let Some(groups) = &self.groups {
                    return self.forward_k3c1(r, io, rows, groups);
                }
                let (kernel, y, argmax) = match oc % 4 {
                    0 => (&FORWARD_OC4, "y4", "argmax4"),
                    _ => (&FORWARD, "y", "argmax"),
                };
                let d = r
                    .dispatch(kernel)
                    .bind("P", &u)
                    .bind("x", io.x)
                    .window("taps_u", &c.taps, 0);
                c.bias(d, io)
                    .bind(y, &self.out.y)
                    .bind(argmax, &self.argmax)
                    .window("kernel_u", window, at)
                    .grid((
                        (ph * pw.div_ceil(2)).div_ceil(32) as u32,
                        rows as u32,
                        oc.div_ceil(16) as u32,
                    ))
            }
        }
    }

    fn backward(&self, r: &mut Recorder, io: &Io, rows: usize) {
        let c = &self.core;
        let dy = self.out.dy();
        let (u, chunks) = self.uniform(r, rows);
        let partials = c.partials(r, chunks);
        let oc = c.conv_out.2 as u32;
        let row_groups = c.patch_rows().div_ceil(POOLED_WEIGHT_GRAD_TILE.0) as u32;
        // the weight gradient needs only the pool's choice, not its output
        let (kernel, grid) = match self.set {
            KernelSet::Gpu => (&WEIGHT_PARTIALS_GPU, (chunks, row_groups, oc.div_ceil(32))),
            KernelSet::Cpu => (
                &WEIGHT_PARTIALS,
                (
                    (chunks as usize).div_ceil(64) as u32,
                    row_groups,
                    oc.div_ceil(POOLED_WEIGHT_GRAD_TILE.1),
                ),
            ),
        };
        if self.set == KernelSet::Cpu && k3c1(c) {
            // all 10 patch rows in one invocation, every access a quad
            let kernel = match self.packed {
                Some(_) => &WEIGHT_PARTIALS_K3C1_PACKED,
                None => &WEIGHT_PARTIALS_K3C1,
            };
            r.dispatch(kernel)
                .bind("P", &u)
                .bind("x4", io.x)
                .bind("dy4", dy)
                .bind("partials4", &partials)
                .bind("argmax4", self.packed.as_ref().unwrap_or(&self.argmax))
                .grid((grid.0, 1, grid.2));
        } else {
            r.dispatch(kernel)
                .bind("P", &u)
                .bind("x", io.x)
                .bind("dy", dy)
                .bind("partials", &partials)
                .bind("taps", &c.taps)
                .bind("argmax", &self.argmax)
                .grid(grid);
        }
        c.reduce(r, &u, io, &partials, self.set == KernelSet::Gpu);
        if let Some(dx) = io.dx {
            r.dispatch(&BACKWARD_INPUT_POOLED)
                .bind("P", &u)
                .span("kernel", io.params, c.kernel.offset, c.kernel.len)
                .bind("y", &self.out.y)
                .bind("dy", dy)
                .bind("dx", dx)
                .bind("argmax", &self.argmax)
                .grid(c.input_grid(rows));
        }
    }
}
