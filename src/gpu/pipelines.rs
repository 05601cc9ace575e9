//! Every compute pipeline, built once (on its first dispatch, or all at once) inside an error scope
//! that turns a validation error into one naming the shader and entry point; the binding table of every
//! shader, read from the WGSL by naga, so that code binds buffers by the names the shader gives them and
//! binding numbers are written once, in the WGSL; and the recorded dispatch.

use std::collections::HashMap;

use super::batched::{self, PerModel};
use super::{Buffer, Context, KernelDef};
use crate::error::{Error, Result};

/// A binding of a shader: its number in group 0 and whether it is a uniform (else storage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub binding: u32,
    pub uniform: bool,
}

/// Compute pipelines by (kernel name, GATE variant). Layouts are derived from each entry point (only
/// the bindings an entry point uses appear in its layout); bind groups are made against them. Built all
/// at once (`new`), or each on its first dispatch (`shared`: a step uses about 15 of the 70-odd
/// variants, and on lavapipe every pipeline is compiled to machine code, which costs host memory).
pub struct Pipelines {
    pipelines: std::sync::Mutex<HashMap<(&'static str, bool), wgpu::ComputePipeline>>,
    /// every variant that may be built, by (kernel name, GATE variant)
    kernels: HashMap<(&'static str, bool), &'static KernelDef>,
    /// per shader file: its module
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    device: wgpu::Device,
    /// per shader file: binding name -> slot
    slots: HashMap<&'static str, HashMap<String, Slot>>,
    /// the K-model variants (`gpu::batched`): per shader file, its per-model bindings
    pub(crate) per_model: Option<HashMap<&'static str, HashMap<String, PerModel>>>,
}

/// The group-0 bindings a WGSL source declares, by variable name.
pub fn reflect(file: &str, source: &str) -> Result<HashMap<String, Slot>> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| Error::gpu(format!("parsing shaders/{file}"), e.emit_to_string(source)))?;
    let mut slots = HashMap::new();
    for (_, var) in module.global_variables.iter() {
        let (Some(name), Some(rb)) = (&var.name, &var.binding) else {
            continue;
        };
        if rb.group != 0 {
            return Err(Error::gpu(
                format!("shaders/{file}"),
                format!(
                    "binding {name} is in group {}: clampnet binds group 0 only",
                    rb.group
                ),
            ));
        }
        let uniform = var.space == naga::AddressSpace::Uniform;
        slots.insert(
            name.clone(),
            Slot {
                binding: rb.binding,
                uniform,
            },
        );
    }
    Ok(slots)
}

impl Pipelines {
    /// The pipelines of `kernels` on `ctx`, built on first use and then shared: every trainer and
    /// predictor on one device reuses them. Each pipeline is built on its first dispatch.
    /// Inside `with_models(K)`, K > 1, the K-model variants (`gpu::batched`).
    pub fn shared(ctx: &Context, kernels: &[&'static KernelDef]) -> Result<std::sync::Arc<Self>> {
        let many = super::models() > 1;
        let mut key: Vec<&'static str> = kernels.iter().map(|k| k.name).collect();
        if many {
            key.push("(K models)");
        }
        let mut cache = ctx.pipeline_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = cache.iter().find(|(k, _)| *k == key) {
            return Ok(p.clone());
        }
        let p = std::sync::Arc::new(Self::build(ctx, kernels, many, false)?);
        cache.push((key, p.clone()));
        Ok(p)
    }

    /// Build every variant of `kernels` (names must be unique).
    pub fn new(ctx: &Context, kernels: &[&'static KernelDef]) -> Result<Self> {
        Self::build(ctx, kernels, false, true)
    }

    /// The shader modules of `kernels`; with `many` the K-model variants; with `eager` every pipeline
    /// built now, else each on its first dispatch.
    fn build(
        ctx: &Context,
        kernels: &[&'static KernelDef],
        many: bool,
        eager: bool,
    ) -> Result<Self> {
        let mut modules = HashMap::new();
        let mut variants = HashMap::new();
        let mut slots = HashMap::new();
        let mut per_model = HashMap::new();
        for kernel in kernels {
            let file = kernel.shader.file;
            // a subgroup kernel's module cannot be made without the feature; its baseline twin runs
            if kernel.shader.needs_subgroups() && !ctx.subgroups {
                continue;
            }
            if variants.contains_key(&(kernel.name, false)) {
                return Err(Error::gpu(
                    format!("kernel {}", kernel.name),
                    "declared twice: kernel names must be unique",
                ));
            }
            if !slots.contains_key(file) {
                let source = if many {
                    let b = batched::batched(file, kernel.shader.source)?;
                    per_model.insert(file, b.per_model);
                    b.source
                } else {
                    kernel.shader.source.to_string()
                };
                slots.insert(file, reflect(file, &source)?);
                let module = ctx.validated(&format!("building shaders/{file}"), || {
                    ctx.device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(file),
                            source: wgpu::ShaderSource::Wgsl(source.into()),
                        })
                })?;
                modules.insert(file, module);
            }
            for &gate in kernel.variants() {
                variants.insert((kernel.name, gate), *kernel);
            }
        }
        let p = Pipelines {
            pipelines: std::sync::Mutex::new(HashMap::new()),
            kernels: variants,
            modules,
            device: ctx.device.clone(),
            slots,
            per_model: many.then_some(per_model),
        };
        if eager {
            let started = web_time::Instant::now();
            let all: Vec<(&'static KernelDef, bool)> =
                p.kernels.iter().map(|(&(_, g), &k)| (k, g)).collect();
            for (k, gate) in &all {
                p.get(k, *gate)?;
            }
            log::info!(
                "built {} pipelines{} in {:.2} s",
                all.len(),
                if many { " (K models)" } else { "" },
                started.elapsed().as_secs_f64()
            );
        }
        Ok(p)
    }

    /// The pipeline of `kernel` (variant `gate`), built on first use inside an error scope that turns a
    /// validation error into one naming the shader and entry point.
    fn get(&self, kernel: &KernelDef, gate: bool) -> Result<wgpu::ComputePipeline> {
        let key = (kernel.name, gate && kernel.gated);
        let mut built = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = built.get(&key) {
            return Ok(p.clone());
        }
        let kernel = *self.kernels.get(&key).ok_or_else(|| {
            Error::gpu(
                format!("kernel {}", kernel.name),
                "not among the pipelines built (missing from step::kernels()?)",
            )
        })?;
        let file = kernel.shader.file;
        // in a browser the scope cannot be waited for: errors come at the next readback
        #[cfg(not(target_arch = "wasm32"))]
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let constants = kernel.constants(key.1);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: None,
                module: &self.modules[file],
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    ..Default::default()
                },
                cache: None,
            });
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(err) = pollster::block_on(scope.pop()) {
            // the description names the cause ("Validation Error" alone says little)
            let msg = match &err {
                wgpu::Error::Validation { description, .. } => description.clone(),
                other => other.to_string(),
            };
            return Err(Error::gpu(
                format!("building shaders/{file} entry point {}", kernel.entry),
                msg,
            ));
        }
        built.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// How binding `name` of `kernel` finds its model's part (None: shared, or not a K-model set).
    pub(crate) fn per_model(&self, kernel: &KernelDef, name: &str) -> Option<PerModel> {
        self.per_model
            .as_ref()?
            .get(kernel.shader.file)?
            .get(name)
            .copied()
    }

    /// The slot of the binding `name` of `kernel`'s shader.
    pub fn slot(&self, kernel: &KernelDef, name: &str) -> Result<Slot> {
        self.slots
            .get(kernel.shader.file)
            .and_then(|s| s.get(name))
            .copied()
            .ok_or_else(|| {
                Error::gpu(
                    format!("kernel {}", kernel.name),
                    format!(
                        "shaders/{} declares no binding named '{name}'",
                        kernel.shader.file
                    ),
                )
            })
    }

    /// A recorded dispatch of `kernel` (variant `gate`) over `groups` workgroups with these bindings
    /// (binding number, buffer, byte offset, byte size).
    pub(crate) fn dispatch(
        &self,
        ctx: &Context,
        kernel: &'static KernelDef,
        gate: bool,
        bindings: Vec<BindingDesc>,
        groups: (u32, u32, u32),
    ) -> Result<Dispatch> {
        let gate = gate && kernel.gated;
        let pipeline = self.get(kernel, gate)?;
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .map(|b| wgpu::BindGroupEntry {
                binding: b.slot,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &b.buffer.raw,
                    offset: b.offset,
                    size: std::num::NonZeroU64::new(b.size),
                }),
            })
            .collect();
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.entry),
            layout: &layout,
            entries: &entries,
        });
        Ok(Dispatch {
            kernel,
            gate,
            pipeline,
            bind_group,
            groups,
            bindings,
        })
    }
}

/// One recorded dispatch of a step: the pipeline, its bind group (built once), the workgroup grid, and
/// what it binds.
pub struct Dispatch {
    pub kernel: &'static KernelDef,
    /// the `GATE` variant of a gated kernel
    pub gate: bool,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    pub groups: (u32, u32, u32),
    pub bindings: Vec<BindingDesc>,
}

/// Record `dispatches` into `pass` (each holds its pipeline and bind group).
pub(crate) fn encode<'d>(
    pass: &mut wgpu::ComputePass<'_>,
    dispatches: impl IntoIterator<Item = &'d Dispatch>,
) {
    for d in dispatches {
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind_group, &[]);
        pass.dispatch_workgroups(d.groups.0, d.groups.1, d.groups.2);
    }
}

/// One binding of a recorded dispatch: binding number, buffer, byte range.
#[derive(Clone, Debug)]
pub struct BindingDesc {
    pub slot: u32,
    pub buffer: Buffer,
    pub offset: u64,
    pub size: u64,
}

/// A text listing of dispatch plans, one line per dispatch: kernel, variant, grid and bindings, buffers
/// numbered in order of first appearance (with their sizes), so that two recordings of the same step
/// compare equal exactly when they dispatch the same kernels over the same grids and buffers. Uniform
/// buffers (immutable) also show their contents: 32-bit words in hex, or a hash of larger ones.
// buffers hash by their identity, not by anything mutable
#[allow(clippy::mutable_key_type)]
#[cfg(not(target_arch = "wasm32"))]
pub fn listing(ctx: &Context, plans: &[(&str, &[Dispatch])]) -> Result<String> {
    let mut ids: HashMap<Buffer, usize> = HashMap::new();
    let mut out = String::new();
    for (name, plan) in plans {
        out.push_str(&format!("{name}:\n"));
        for d in plan.iter() {
            let mut b: Vec<&BindingDesc> = d.bindings.iter().collect();
            b.sort_by_key(|b| b.slot);
            let binds: Vec<String> = b
                .iter()
                .map(|b| {
                    let n = ids.len();
                    let id = *ids.entry(b.buffer.clone()).or_insert(n);
                    let contents = if id == n && b.buffer.is_uniform() {
                        let bytes = ctx.read_bytes(&b.buffer, 0, b.buffer.size())?;
                        if bytes.len() <= 128 {
                            let words: Vec<String> = bytes
                                .chunks(4)
                                .map(|w| {
                                    format!("{:x}", u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                                })
                                .collect();
                            format!("[{}]", words.join(","))
                        } else {
                            let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
                                (h ^ b as u64).wrapping_mul(0x100000001b3)
                            });
                            format!("[fnv {hash:016x}]")
                        }
                    } else {
                        String::new()
                    };
                    Ok(format!(
                        "{}=#{id}({}){contents}@{}+{}",
                        b.slot,
                        b.buffer.size(),
                        b.offset,
                        b.size
                    ))
                })
                .collect::<Result<_>>()?;
            out.push_str(&format!(
                "  {}{} {:?} {}\n",
                d.kernel.name,
                if d.gate { " GATE" } else { "" },
                d.groups,
                binds.join(" ")
            ));
        }
    }
    Ok(out)
}
