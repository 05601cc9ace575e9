//! The GPU context: the only module that talks to wgpu, so API churn touches one place.
//!
//! - `Context::new` picks the adapter (from `--backend` / `--adapter`, else `WGPU_BACKEND` /
//!   `WGPU_ADAPTER_NAME`, else the high-performance default), logs it, and asks for WebGPU-baseline
//!   limits only.
//! - `Pipelines` builds every compute pipeline once, inside an error scope that turns validation errors
//!   into an error naming the shader and entry point.
//! - Small helpers: buffer creation, bind groups by binding number, dispatch folding above 65,535
//!   workgroups per dimension, and one generic readback.

pub mod kernels;
pub mod portability;

use std::collections::HashMap;

use wgpu::util::DeviceExt;

pub use kernels::{uniforms, Kernel, SHADERS};

use crate::error::{Error, Result};

/// Which shapes of the kernels run: tuned for a CPU adapter (llvmpipe, lavapipe: loads cost more than
/// arithmetic, so large register tiles per invocation and uniform windows) or for a GPU (many invocations,
/// coalesced loads, reductions in workgroup memory). Both compute the same functions; by default the
/// adapter's type chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSet {
    Cpu,
    Gpu,
}

impl KernelSet {
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Self {
        if info.device_type == wgpu::DeviceType::Cpu {
            KernelSet::Cpu
        } else {
            KernelSet::Gpu
        }
    }

    /// "cpu" or "gpu", as `--kernel-set` takes it
    pub fn name(self) -> &'static str {
        match self {
            KernelSet::Cpu => "cpu",
            KernelSet::Gpu => "gpu",
        }
    }

    /// "auto" (None), "cpu" or "gpu"; anything else: what is allowed
    pub fn parse(name: &str) -> std::result::Result<Option<Self>, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "auto" => None,
            "cpu" => Some(KernelSet::Cpu),
            "gpu" => Some(KernelSet::Gpu),
            other => {
                return Err(format!(
                    "unknown kernel set '{other}': expected auto, cpu or gpu"
                ))
            }
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// vulkan | gl | metal | dx12 (None: WGPU_BACKEND, else all)
    pub backend: Option<String>,
    /// case-insensitive substring of the adapter name (None: WGPU_ADAPTER_NAME)
    pub adapter: Option<String>,
    /// request the optional timestamp-query feature when the adapter has it (profiling only)
    pub timestamps: bool,
    /// the kernel shapes to run (None: CLAMPNET_KERNEL_SET, else by the adapter's type,
    /// `KernelSet::for_adapter`)
    pub kernel_set: Option<KernelSet>,
}

pub fn parse_backends(name: &str) -> Result<wgpu::Backends> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => wgpu::Backends::VULKAN,
        "gl" | "gles" | "opengl" => wgpu::Backends::GL,
        "metal" | "mtl" => wgpu::Backends::METAL,
        "dx12" | "d3d12" => wgpu::Backends::DX12,
        "primary" => wgpu::Backends::PRIMARY,
        "all" => wgpu::Backends::all(),
        other => {
            return Err(Error::Config(format!(
                "unknown backend '{other}': expected one of vulkan, gl, metal, dx12, primary, all"
            )))
        }
    })
}

pub struct Context {
    /// the device was opened with timestamp queries (see `GpuOptions::timestamps`)
    pub timestamps: bool,
    /// the kernel shapes trainers on this context run
    pub kernel_set: KernelSet,
    /// bytes of every buffer created through this context
    allocated: std::sync::atomic::AtomicU64,
    /// the first uncaptured device error or device loss, reported by `check()` instead of a panic
    failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    pub instance: wgpu::Instance,
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
}

/// What to do when a device cannot be opened on `info`. wgpu's GL backend runs compute shaders only in
/// an OpenGL 4.3+ (or GLES 3.1+) context, and on NVIDIA under Linux it is given a 3.3 context
/// (gfx-rs/wgpu#8676; seen on an H100 with driver 580): the device then fails to open.
pub fn open_failure_hint(info: &wgpu::AdapterInfo) -> String {
    if info.backend != wgpu::Backend::Gl {
        return String::new();
    }
    format!(
        ".\n  wgpu's GL backend needs an OpenGL 4.3 or GLES 3.1 context for compute shaders; this context \
         reports '{}' (NVIDIA drivers under Linux give wgpu a 3.3 context: gfx-rs/wgpu#8676).\n  \
         Use another backend: --backend vulkan",
        info.driver_info.trim()
    )
}

/// A short description of an adapter: "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu, driver llvmpipe)".
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} ({:?}, {:?}, driver {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    )
}

impl Context {
    pub fn new(opts: &GpuOptions) -> Result<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if let Some(b) = &opts.backend {
            desc.backends = parse_backends(b)?;
        }
        let backends = desc.backends;
        let instance = wgpu::Instance::new(desc);
        let wanted = opts
            .adapter
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .filter(|s| !s.is_empty());
        let adapter =
            match &wanted {
                Some(name) => {
                    let all = pollster::block_on(instance.enumerate_adapters(backends));
                    let names: Vec<String> = all.iter().map(|a| describe(&a.get_info())).collect();
                    let needle = name.to_lowercase();
                    all.into_iter()
                        .find(|a| a.get_info().name.to_lowercase().contains(&needle))
                        .ok_or_else(|| Error::NoAdapter {
                            detail: format!(
                            " named like '{name}' (backends {backends:?}); adapters present: {}",
                            if names.is_empty() { "none".to_string() } else { names.join("; ") }
                        ),
                        })?
                }
                None => pollster::block_on(
                    instance.request_adapter(&wgpu::RequestAdapterOptions {
                        power_preference: wgpu::PowerPreference::from_env()
                            .unwrap_or(wgpu::PowerPreference::HighPerformance),
                        force_fallback_adapter: false,
                        compatible_surface: None,
                        ..Default::default()
                    }),
                )
                .map_err(|e| Error::NoAdapter {
                    detail: format!(" (backends {backends:?}: {e})"),
                })?,
            };
        let info = adapter.get_info();
        log::info!("adapter: {}", describe(&info));

        // WebGPU baseline limits; only the storage-binding size is raised up to what the adapter offers,
        // because a full dataset (60k x 784 bytes = 47 MB) fits the baseline 128 MiB anyway.
        let supported = adapter.limits();
        let mut limits = wgpu::Limits::default();
        limits.max_storage_buffers_per_shader_stage = 8;
        limits.max_storage_buffer_binding_size = limits
            .max_storage_buffer_binding_size
            .min(supported.max_storage_buffer_binding_size);
        limits.max_buffer_size = limits.max_buffer_size.min(supported.max_buffer_size);
        // Baseline only, except timestamp queries when asked for (profiling) and present.
        let timestamps =
            opts.timestamps && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let required_features = if timestamps {
            wgpu::Features::TIMESTAMP_QUERY
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("clampnet"),
            required_features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| {
            Error::gpu(
                format!("opening device on {}", describe(&info)),
                format!("{e}{}", open_failure_hint(&info)),
            )
        })?;
        // wgpu's default handler panics on an uncaptured error; keep the first one and report it as an
        // error at the next sync point instead.
        let failure: std::sync::Arc<std::sync::Mutex<Option<String>>> = Default::default();
        let f = failure.clone();
        device.on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
            log::error!("GPU error: {e}");
            f.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(|| e.to_string());
        }));
        let f = failure.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                f.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| format!("device lost ({reason:?}): {msg}"));
            }
        });
        let from_env = match std::env::var("CLAMPNET_KERNEL_SET") {
            Ok(v) if !v.is_empty() => KernelSet::parse(&v)
                .map_err(|e| Error::Config(format!("CLAMPNET_KERNEL_SET: {e}")))?,
            _ => None,
        };
        let kernel_set = opts
            .kernel_set
            .or(from_env)
            .unwrap_or_else(|| KernelSet::for_adapter(&info));
        log::info!("kernel set: {kernel_set:?}");
        Ok(Context {
            timestamps,
            kernel_set,
            allocated: Default::default(),
            failure,
            instance,
            adapter,
            device,
            queue,
            info,
            limits,
        })
    }

    /// The first uncaptured GPU error or device loss since the last check, as an error (reported once).
    pub fn check(&self) -> Result<()> {
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            None => Ok(()),
            Some(msg) => Err(Error::gpu(format!("on {}", self.info.name), msg)),
        }
    }

    /// Bytes of every buffer created through this context so far.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, bytes: u64) {
        self.allocated
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn storage_init(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        // wgpu requires a non-zero, 4-byte multiple size for storage bindings.
        let size = (bytes.len().max(1).div_ceil(4) * 4) as u64;
        self.buffer_init(label, bytes, size, wgpu::BufferUsages::empty())
    }

    /// A buffer of `size` bytes (a multiple of 4) holding `bytes` then zeros, written in place through
    /// its mapping (no second host copy: the dataset is the largest upload).
    fn buffer_init(
        &self,
        label: &str,
        bytes: &[u8],
        size: u64,
        extra: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        let buffer = self.storage_buffer(label, size, extra, true);
        buffer
            .slice(..)
            .get_mapped_range_mut()
            .expect("a buffer mapped at creation maps")
            .slice(..bytes.len())
            .copy_from_slice(bytes);
        buffer.unmap();
        buffer
    }

    /// A storage buffer that can also be bound as a uniform window of `UNIFORM_WINDOW` bytes at any
    /// 256-byte aligned offset inside it (padded at the end so every such window fits).
    pub fn storage_uniform_init(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        let size = (bytes.len().div_ceil(256) * 256) as u64 + UNIFORM_WINDOW;
        self.buffer_init(label, bytes, size, wgpu::BufferUsages::UNIFORM)
    }

    /// `storage_zeroed` that can also be bound as a uniform window (see `storage_uniform_init`).
    pub fn storage_uniform_zeroed(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        let size = bytes.div_ceil(256) * 256 + UNIFORM_WINDOW;
        self.storage_buffer(label, size, wgpu::BufferUsages::UNIFORM, false)
    }

    pub fn storage_zeroed(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        let size = bytes.max(4).div_ceil(4) * 4;
        self.storage_buffer(label, size, wgpu::BufferUsages::empty(), false)
    }

    /// A storage buffer (copyable both ways, plus `extra` usages) of `size` bytes, counted in
    /// `allocated_bytes`.
    fn storage_buffer(
        &self,
        label: &str,
        size: u64,
        extra: wgpu::BufferUsages,
        mapped_at_creation: bool,
    ) -> wgpu::Buffer {
        self.count(size);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST
                | extra,
            mapped_at_creation,
        })
    }

    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
            })
    }

    /// Fold a 1-D count of workgroups into (x, y) so neither exceeds the per-dimension limit;
    /// kernels rebuild the flat index as `wg.y * num_workgroups.x + wg.x` and bound-check it.
    pub fn fold(&self, groups: u32) -> (u32, u32) {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1);
        if groups <= max {
            (groups.max(1), 1)
        } else {
            (max, groups.div_ceil(max))
        }
    }

    /// Copy `size` bytes at `offset` of `buffer` back to the host (one submit, one wait).
    pub fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        self.map_and_read(&staging)
    }

    /// Map an already-filled MAP_READ buffer and return its bytes.
    pub fn map_and_read(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::gpu("waiting for the GPU", e))?;
        rx.recv()
            .map_err(|e| Error::gpu("readback", e))?
            .map_err(|e| Error::gpu("mapping a readback buffer", e))?;
        self.check()?;
        let bytes = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::gpu("reading a mapped buffer", e))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }

    pub fn read_f32(&self, buffer: &wgpu::Buffer, offset_elems: u64, len: u64) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(buffer, offset_elems * 4, len * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    pub fn read_u32(&self, buffer: &wgpu::Buffer, offset_elems: u64, len: u64) -> Result<Vec<u32>> {
        let bytes = self.read_bytes(buffer, offset_elems * 4, len * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}

/// Every compute pipeline, built once. Layouts are derived from each entry point (only the bindings an
/// entry point uses appear in its layout), and bind groups are made against the pipeline's layout.
/// Kernels with a `GATE` override exist in two variants (false, true).
pub struct Pipelines {
    pipelines: HashMap<(Kernel, bool), wgpu::ComputePipeline>,
}

impl Pipelines {
    pub fn new(ctx: &Context) -> Result<Self> {
        let mut modules = HashMap::new();
        let mut pipelines = HashMap::new();
        for kernel in Kernel::ALL {
            let (file, entry) = kernel.source();
            let variants: &[bool] = if kernel.has_gate() {
                &[false, true]
            } else {
                &[false]
            };
            for &gate in variants {
                let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
                let module = modules.entry(file).or_insert_with(|| {
                    ctx.device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(file),
                            source: wgpu::ShaderSource::Wgsl(kernel.source_text().into()),
                        })
                });
                let constants = kernel.constants(gate);
                let pipeline =
                    ctx.device
                        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                            label: Some(entry),
                            layout: None,
                            module,
                            entry_point: Some(entry),
                            compilation_options: wgpu::PipelineCompilationOptions {
                                constants: &constants,
                                ..Default::default()
                            },
                            cache: None,
                        });
                if let Some(err) = pollster::block_on(scope.pop()) {
                    return Err(Error::gpu(
                        format!("building shaders/{file} entry point {entry}"),
                        err,
                    ));
                }
                pipelines.insert((kernel, gate), pipeline);
            }
        }
        Ok(Pipelines { pipelines })
    }

    pub fn get(&self, kernel: Kernel, gate: bool) -> &wgpu::ComputePipeline {
        &self.pipelines[&(kernel, gate && kernel.has_gate())]
    }

    /// A bind group for `kernel` (variant `gate`) from (binding number, buffer range) pairs.
    pub fn bind(
        &self,
        ctx: &Context,
        kernel: Kernel,
        gate: bool,
        entries: &[(u32, wgpu::BufferBinding<'_>)],
    ) -> wgpu::BindGroup {
        let gate = gate && kernel.has_gate();
        let layout = self.get(kernel, gate).get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = entries
            .iter()
            .map(|(binding, b)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: wgpu::BindingResource::Buffer(b.clone()),
            })
            .collect();
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.source().1),
            layout: &layout,
            entries: &entries,
        })
    }
}

impl Pipelines {
    /// A recorded dispatch of `kernel` (variant `gate`) over `groups` workgroups with these bindings.
    pub fn dispatch(
        &self,
        ctx: &Context,
        kernel: Kernel,
        gate: bool,
        entries: &[(u32, wgpu::BufferBinding<'_>)],
        groups: (u32, u32, u32),
    ) -> Dispatch {
        Dispatch {
            kernel,
            gate,
            bind_group: self.bind(ctx, kernel, gate, entries),
            groups,
            bindings: entries
                .iter()
                .map(|(slot, b)| BindingDesc {
                    slot: *slot,
                    buffer: b.buffer.clone(),
                    offset: b.offset,
                    size: b.size.map_or(b.buffer.size() - b.offset, |s| s.get()),
                })
                .collect(),
        }
    }
}

/// A whole buffer as a binding.
pub fn whole(buffer: &wgpu::Buffer) -> wgpu::BufferBinding<'_> {
    buffer.as_entire_buffer_binding()
}

/// `len` f32 elements starting at element `offset` (offset must be 64-element aligned: 256 bytes).
pub fn span(buffer: &wgpu::Buffer, offset: usize, len: usize) -> wgpu::BufferBinding<'_> {
    wgpu::BufferBinding {
        buffer,
        offset: (offset * 4) as u64,
        size: std::num::NonZeroU64::new((len.max(1) * 4) as u64),
    }
}

/// Bytes of a uniform window (WebGPU's baseline `max_uniform_buffer_binding_size`): kernels that read
/// small read-only tensors through `var<uniform>` declare them as `array<vec4<f32>, 4096>`.
pub const UNIFORM_WINDOW: u64 = 65536;

/// The uniform window starting at element `offset` (64-element aligned) of a `storage_uniform_init` buffer.
pub fn window(buffer: &wgpu::Buffer, offset: usize) -> wgpu::BufferBinding<'_> {
    wgpu::BufferBinding {
        buffer,
        offset: (offset * 4) as u64,
        size: std::num::NonZeroU64::new(UNIFORM_WINDOW),
    }
}

/// One recorded dispatch of a step: the pipeline, its bind group (built once), the workgroup grid.
pub struct Dispatch {
    pub kernel: Kernel,
    /// the `GATE` variant of a gated kernel
    pub gate: bool,
    pub bind_group: wgpu::BindGroup,
    pub groups: (u32, u32, u32),
    /// what the bind group holds, for `listing`
    pub bindings: Vec<BindingDesc>,
}

/// One binding of a recorded dispatch: slot, buffer, byte range.
pub struct BindingDesc {
    pub slot: u32,
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

/// A text listing of dispatch plans, one line per dispatch: kernel, variant, grid and bindings, buffers
/// numbered in order of first appearance (with their sizes), so that two recordings of the same step
/// compare equal exactly when they dispatch the same kernels over the same grids and buffers.
/// Uniform buffers (immutable) also show their contents: 32-bit words in hex, or a hash of larger ones.
pub fn listing(ctx: &Context, plans: &[(&str, &[Dispatch])]) -> Result<String> {
    let mut ids: HashMap<wgpu::Buffer, usize> = HashMap::new();
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
                    let contents = if id == n && b.buffer.usage() == UNIFORM_USAGE {
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
                "  {:?}{} {:?} {}\n",
                d.kernel,
                if d.gate { " GATE" } else { "" },
                d.groups,
                binds.join(" ")
            ));
        }
    }
    Ok(out)
}

const UNIFORM_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::UNIFORM
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

impl Dispatch {
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, pipelines: &Pipelines) {
        pass.set_pipeline(pipelines.get(self.kernel, self.gate));
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups.0, self.groups.1, self.groups.2);
    }
}
