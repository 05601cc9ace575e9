//! Recording dispatches: the one way code outside `gpu/` puts work on the GPU. An op asks the recorder
//! for its uniforms and per-plan scratch buffers and describes each dispatch by kernel, bindings (by the
//! names the WGSL gives them) and grid; `finish` hands back the plan, a list of dispatches replayed many
//! times.
//!
//! ```ignore
//! r.dispatch(&DENSE_FORWARD)
//!     .bind("P", &uniform)
//!     .bind("x", io.x)
//!     .span("kernel", io.params, kernel.offset, kernel.len)
//!     .bind("partials", &partials)
//!     .grid((chunks.div_ceil(64), rows.div_ceil(8), out.div_ceil(16)));
//! ```

use std::collections::HashMap;

use super::pipelines::BindingDesc;
use super::{Buffer, Context, Dispatch, KernelDef, Pipelines, UNIFORM_WINDOW};
use crate::error::{Error, Result};

pub struct Recorder<'a> {
    pub ctx: &'a Context,
    pipes: &'a Pipelines,
    /// bound where a kernel variant declares a storage buffer it never reads
    placeholder: Buffer,
    /// bound where a kernel variant declares a uniform window it never reads
    placeholder_window: Buffer,
    /// this plan's uniforms by (label, contents): an op's forward and backward share theirs
    uniforms: HashMap<(String, Vec<u8>), Buffer>,
    plan: Vec<Dispatch>,
    /// the first recording error (an unknown binding name, a storage buffer bound as a window)
    error: Option<Error>,
}

impl<'a> Recorder<'a> {
    pub fn new(ctx: &'a Context, pipes: &'a Pipelines) -> Self {
        Recorder {
            ctx,
            pipes,
            placeholder: ctx.storage_zeroed("placeholder", 4),
            placeholder_window: ctx.storage_uniform_zeroed("placeholder window", 0),
            uniforms: HashMap::new(),
            plan: Vec::new(),
            error: None,
        }
    }

    /// A uniform holding `value`, created once per plan for each (label, contents).
    pub fn uniform<T: bytemuck::Pod>(&mut self, label: &str, value: &T) -> Buffer {
        let key = (label.to_string(), bytemuck::bytes_of(value).to_vec());
        let ctx = self.ctx;
        self.uniforms
            .entry(key)
            .or_insert_with(|| ctx.uniform(label, value))
            .clone()
    }

    /// A zeroed storage buffer for this plan only (partial sums sized for its rows).
    pub fn scratch(&mut self, label: &str, bytes: u64) -> Buffer {
        self.ctx.storage_zeroed(label, bytes)
    }

    /// Start a dispatch of `kernel`; `grid` ends it.
    pub fn dispatch(&mut self, kernel: &'static KernelDef) -> DispatchBuilder<'_, 'a> {
        DispatchBuilder {
            r: self,
            kernel,
            gate: false,
            bindings: Vec::new(),
        }
    }

    /// The dispatches recorded since the last `finish`, or the first error among them. Uniforms are not
    /// shared across plans.
    pub fn finish(&mut self) -> Result<Vec<Dispatch>> {
        self.uniforms.clear();
        let plan = std::mem::take(&mut self.plan);
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(plan),
        }
    }

    /// A 1-D grid of `invocations` in workgroups of `size`, folded above the per-dimension limit.
    pub fn grid_1d(&self, invocations: usize, size: usize) -> (u32, u32, u32) {
        let (x, y) = self.ctx.fold(invocations.div_ceil(size) as u32);
        (x, y, 1)
    }

    fn fail(&mut self, e: Error) {
        self.error.get_or_insert(e);
    }
}

/// One dispatch being described: its variant and bindings, then `grid`.
pub struct DispatchBuilder<'r, 'a> {
    r: &'r mut Recorder<'a>,
    kernel: &'static KernelDef,
    gate: bool,
    bindings: Vec<BindingDesc>,
}

impl DispatchBuilder<'_, '_> {
    /// The `GATE` variant (the kernel applies relu'(y) to its incoming gradient).
    pub fn gate(mut self, gate: bool) -> Self {
        self.gate = gate;
        self
    }

    /// `buffer`, whole, as binding `name`.
    pub fn bind(self, name: &str, buffer: &Buffer) -> Self {
        let size = buffer.size();
        self.add(name, buffer, 0, size, false)
    }

    /// `len` f32 elements of `buffer` from element `offset` (64-element aligned: 256 bytes).
    pub fn span(self, name: &str, buffer: &Buffer, offset: usize, len: usize) -> Self {
        self.add(
            name,
            buffer,
            (offset * 4) as u64,
            (len.max(1) * 4) as u64,
            false,
        )
    }

    /// The `UNIFORM_WINDOW` bytes of `buffer` (a `storage_uniform_*` buffer) from element `offset`
    /// (64-element aligned), as the uniform binding `name`.
    pub fn window(self, name: &str, buffer: &Buffer, offset: usize) -> Self {
        self.add(name, buffer, (offset * 4) as u64, UNIFORM_WINDOW, true)
    }

    /// A 4-byte placeholder as `name`: the kernel variant declares the binding but never reads it.
    pub fn placeholder(self, name: &str) -> Self {
        let p = self.r.placeholder.clone();
        self.bind(name, &p)
    }

    /// A placeholder uniform window as `name` (declared, never read).
    pub fn placeholder_window(self, name: &str) -> Self {
        let p = self.r.placeholder_window.clone();
        self.window(name, &p, 0)
    }

    fn add(mut self, name: &str, buffer: &Buffer, offset: u64, size: u64, window: bool) -> Self {
        match self.r.pipes.slot(self.kernel, name) {
            Ok(slot) if slot.uniform && !window && !buffer.is_uniform() => {
                self.r.fail(Error::gpu(
                    format!("kernel {}", self.kernel.name),
                    format!("binding '{name}' is a uniform: bind a uniform buffer, or a window of this one"),
                ));
            }
            Ok(slot) if window && !slot.uniform => {
                self.r.fail(Error::gpu(
                    format!("kernel {}", self.kernel.name),
                    format!("binding '{name}' is a storage buffer, not a uniform window"),
                ));
            }
            Ok(slot) => self.bindings.push(BindingDesc {
                slot: slot.binding,
                buffer: buffer.clone(),
                offset,
                size,
            }),
            Err(e) => self.r.fail(e),
        }
        self
    }

    /// Finish the dispatch over `groups` workgroups.
    pub fn grid(self, groups: (u32, u32, u32)) {
        let DispatchBuilder {
            r,
            kernel,
            gate,
            bindings,
        } = self;
        match r.pipes.dispatch(r.ctx, kernel, gate, bindings, groups) {
            Ok(d) => r.plan.push(d),
            Err(e) => r.fail(e),
        }
    }
}
