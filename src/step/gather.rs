//! The batch gather: a split's images live on the GPU once (u8, four to a u32), with the labels and this
//! epoch's order; each step gathers its rows and divides by 255 through a table of the 256 quotients
//! (bit-exact as numpy computes Keras' inputs). The batch index comes from the split's step state, which
//! the loss advances on the GPU. Shader: shaders/gather.wgsl. Twin: `reference::gather_batch`.

use crate::data::Split;
use crate::error::Result;
use crate::gpu::{Buffer, Context, KernelDef, KernelSet, Recorder, Shader};

pub static SHADER: Shader = crate::shader!("gather.wgsl");

pub static GATHER_BATCH: KernelDef = KernelDef {
    name: "GatherBatch",
    shader: &SHADER,
    entry: "gather_batch",
    constants: &[],
    gated: false,
};

/// the same, one invocation per 4 pixels (an image size that is a multiple of 4)
pub static GATHER_BATCH4: KernelDef = KernelDef {
    name: "GatherBatch4",
    shader: &SHADER,
    entry: "gather_batch4",
    constants: &[],
    gated: false,
};

/// 16 pixels per invocation, a 1-D grid over (row, word group): for CPU adapters (llvmpipe)
pub static GATHER_BATCH16: KernelDef = KernelDef {
    name: "GatherBatch16",
    shader: &SHADER,
    entry: "gather_batch16",
    constants: &[],
    gated: false,
};

pub static KERNELS: &[&KernelDef] = &[&GATHER_BATCH, &GATHER_BATCH4, &GATHER_BATCH16];

/// The uniform of gather.wgsl, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GatherParams {
    /// examples in this batch (the last batch of an epoch may be short)
    pub rows: u32,
    /// the configured batch size: the stride of the batch index into the order
    pub full_batch: u32,
    /// H * W * C
    pub per_image: u32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<GatherParams>() == 16);

/// The step state, field for field with the WGSL `State` (gather, loss and the optimizer read it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct State {
    /// optimizer steps done (Keras `iterations`)
    pub step: u32,
    /// the batch index inside the current pass over the data
    pub batch: u32,
}
const _: () = assert!(std::mem::size_of::<State>() == 8);

/// v / 255 for every byte value v in f32 (IEEE division, as numpy computes Keras' inputs): the table the
/// batch gather reads pixels through.
pub fn byte_to_unit() -> [f32; 256] {
    std::array::from_fn(|v| v as f32 / 255.0)
}

/// A data split on the GPU, with the state and metrics of passes over it.
pub struct GpuSplit {
    pub images: Buffer,
    pub labels: Buffer,
    /// the example order of the current pass
    pub perm: Buffer,
    /// `State`
    pub state: Buffer,
    /// `loss::Metrics` of the current pass
    pub metrics: Buffer,
    pub n: usize,
}

impl GpuSplit {
    /// Upload `s` (its images checked against the storage-binding limit first: `check_size`).
    pub fn upload(ctx: &Context, s: &Split, what: &str) -> GpuSplit {
        GpuSplit {
            // the data, shared by the models of a K-model step
            images: ctx.storage_init_shared(&format!("{what} images"), &s.images),
            labels: ctx
                .storage_init_shared(&format!("{what} labels"), bytemuck::cast_slice(&s.labels)),
            perm: ctx.storage_init(
                &format!("{what} order"),
                bytemuck::cast_slice(&(0..s.len() as u32).collect::<Vec<_>>()),
            ),
            state: ctx.storage_zeroed(&format!("{what} state"), 8),
            metrics: ctx.storage_zeroed(&format!("{what} metrics"), 16),
            n: s.len(),
        }
    }

    /// An error naming the split when its images do not fit one storage binding.
    pub fn check_size(ctx: &Context, s: &Split, what: &str) -> Result<()> {
        ctx.check_binding(&format!("{what} images"), s.images.len() as u64)
    }

    /// Start a pass at batch `batch` after `step` optimizer steps, with zeroed metrics.
    pub fn begin(&self, ctx: &Context, step: u64, batch: usize) {
        ctx.write(
            &self.state,
            0,
            &[State {
                step: step as u32,
                batch: batch as u32,
            }],
        );
        ctx.write(&self.metrics, 0, &[0u32; 4]);
    }
}

/// Where a gathered batch goes: the inputs `x` [batch, per_image] and labels `y` [batch].
pub struct Batch {
    pub x: Buffer,
    pub y: Buffer,
    /// `byte_to_unit()`, a uniform
    table: Buffer,
    per_image: usize,
    /// the kernel set's shape of the gather: 16 pixels per invocation for CPU adapters
    set: KernelSet,
}

impl Batch {
    pub fn new(ctx: &Context, set: KernelSet, batch: usize, per_image: usize) -> Result<Self> {
        Ok(Batch {
            x: ctx.storage_checked("batch x", (batch * per_image * 4) as u64)?,
            y: ctx.storage_zeroed("batch y", (batch * 4) as u64),
            table: ctx.uniform("byte to unit", &byte_to_unit()),
            per_image,
            set,
        })
    }

    /// Gather `rows` examples of `split` (batches of `full_batch` in its order, the state's batch).
    pub fn record(&self, r: &mut Recorder, split: &GpuSplit, rows: usize, full_batch: usize) {
        let p = GatherParams {
            rows: rows as u32,
            full_batch: full_batch as u32,
            per_image: self.per_image as u32,
            _pad: 0,
        };
        let u = r.uniform("gather", &p);
        // CPU set: 16 pixels per invocation, a quarter of the workgroups (llvmpipe's fixed cost per
        // workgroup: 375 -> 165 us at batch 128, 123 -> 95 at 32, interleaved); GPUs: 4 per invocation
        let (kernel, x, grid) = match (self.per_image % 4, self.set) {
            (0, KernelSet::Cpu) => (
                &GATHER_BATCH16,
                "x4",
                r.grid_1d(rows * self.per_image.div_ceil(16), 64),
            ),
            (0, KernelSet::Gpu) => (
                &GATHER_BATCH4,
                "x4",
                (self.per_image.div_ceil(256) as u32, rows as u32, 1),
            ),
            _ => (
                &GATHER_BATCH,
                "x",
                (self.per_image.div_ceil(64) as u32, rows as u32, 1),
            ),
        };
        r.dispatch(kernel)
            .bind("P", &u)
            .bind("images", &split.images)
            .bind("labels", &split.labels)
            .bind("perm", &split.perm)
            .bind("state", &split.state)
            .bind(x, &self.x)
            .bind("y", &self.y)
            .bind("byte_to_unit", &self.table)
            .grid(grid);
    }
}
