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

use super::batched::{self, Kind};
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
    /// the models each dispatch steps (`with_models` when the recorder was made): above 1, the
    /// K-model kernels (`gpu::batched`), each dispatch with K copies of its grid in z
    models: usize,
}

impl<'a> Recorder<'a> {
    pub fn new(ctx: &'a Context, pipes: &'a Pipelines) -> Self {
        Recorder {
            ctx,
            pipes,
            placeholder: ctx.storage_zeroed("placeholder", 16),
            placeholder_window: ctx.storage_uniform_zeroed("placeholder window", 0),
            uniforms: HashMap::new(),
            plan: Vec::new(),
            error: None,
            models: super::models(),
        }
    }

    /// The models each dispatch steps.
    pub fn models(&self) -> usize {
        self.models
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
            strides: [0; batched::MAX_SLOTS],
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
    /// K models: each binding's per-model stride, in elements of its array
    strides: [u32; batched::MAX_SLOTS],
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

    /// A 16-byte placeholder (one vec4) as `name`: the kernel variant declares the binding but never reads it.
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
        if self.r.models > 1 {
            return self.add_per_model(name, buffer, offset, size, window);
        }
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

    /// `add` for a K-model dispatch: a per-model binding spans every model's part (from model 0's
    /// `offset`), and its stride goes into the models uniform; a uniform window of a per-model table
    /// is a storage range now.
    fn add_per_model(
        mut self,
        name: &str,
        buffer: &Buffer,
        offset: u64,
        size: u64,
        window: bool,
    ) -> Self {
        let what = format!("kernel {} (K models)", self.kernel.name);
        let pm = self.r.pipes.per_model(self.kernel, name);
        let slot = match self.r.pipes.slot(self.kernel, name) {
            Ok(s) => s,
            Err(e) => {
                self.r.fail(e);
                return self;
            }
        };
        let Some(pm) = pm else {
            // shared by the models: as for one model (model 0's part of a per-model buffer)
            if slot.uniform && !window && !buffer.is_uniform() {
                self.r
                    .fail(Error::gpu(what, format!("binding '{name}' is a uniform")));
            } else {
                self.bindings.push(BindingDesc {
                    slot: slot.binding,
                    buffer: buffer.clone(),
                    offset,
                    size,
                });
            }
            return self;
        };
        let stride = buffer.model_stride;
        let k = (buffer.models as u64).max(1);
        if !stride.is_multiple_of(pm.unit as u64)
            || (pm.kind == Kind::Storage && buffer.is_uniform())
        {
            self.r.fail(Error::gpu(
                what,
                format!(
                    "binding '{name}' needs a storage buffer whose per-model stride ({stride} bytes) \
                     is a multiple of {} bytes",
                    pm.unit
                ),
            ));
            return self;
        }
        if pm.kind == Kind::Window && stride * k > UNIFORM_WINDOW {
            self.r.fail(Error::gpu(
                what,
                format!(
                    "{k} models' '{name}' ({stride} bytes each) do not fit one {UNIFORM_WINDOW}-byte \
                     uniform window: use fewer --models-per-pass"
                ),
            ));
            return self;
        }
        self.strides[slot.binding as usize] = (stride / pm.unit as u64) as u32;
        let whole = offset == 0 && size == buffer.size();
        let size = if whole || pm.kind == Kind::Window {
            size
        } else {
            (stride * (k - 1) + size).min(buffer.size() - offset)
        };
        self.bindings.push(BindingDesc {
            slot: slot.binding,
            buffer: buffer.clone(),
            offset,
            size,
        });
        self
    }

    /// Finish the dispatch over `groups` workgroups (K copies of them in z for K models).
    pub fn grid(self, groups: (u32, u32, u32)) {
        let DispatchBuilder {
            r,
            kernel,
            gate,
            mut bindings,
            strides,
        } = self;
        let mut groups = groups;
        if r.models > 1 {
            let k = r.models as u32;
            let max = r.ctx.limits.max_compute_workgroups_per_dimension;
            if groups.2.saturating_mul(k) > max {
                r.fail(Error::gpu(
                    format!("kernel {} (K models)", kernel.name),
                    format!(
                        "{} models x {} workgroups in z exceed the adapter's {max}: use fewer --models-per-pass",
                        k, groups.2
                    ),
                ));
                return;
            }
            let u = r.uniform(
                "models",
                &batched::ModelsParams {
                    gz: groups.2,
                    models: k,
                    _pad: [0; 2],
                    stride: strides,
                },
            );
            match r.pipes.slot(kernel, batched::MODELS_NAME) {
                Ok(slot) => bindings.push(BindingDesc {
                    slot: slot.binding,
                    size: u.size(),
                    buffer: u,
                    offset: 0,
                }),
                Err(e) => {
                    r.fail(e);
                    return;
                }
            }
            groups.2 *= k;
        }
        match r.pipes.dispatch(r.ctx, kernel, gate, bindings, groups) {
            Ok(d) => r.plan.push(d),
            Err(e) => r.fail(e),
        }
    }
}
