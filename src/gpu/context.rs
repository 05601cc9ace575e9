//! The device: `Context::new` picks the adapter (from `--backend` / `--adapter`, else `WGPU_BACKEND` /
//! `WGPU_ADAPTER_NAME`, else the high-performance default), logs it, and asks for WebGPU-baseline limits
//! only; the kernel set; the adapters `clampnet info` lists.

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
    /// opt in to the subgroup kernels (the optional `subgroup` feature) where the adapter has the
    /// feature (also CLAMPNET_SUBGROUPS=1); elsewhere the baseline kernels, said in the log
    pub subgroups: bool,
    /// opt in to the GPU set's tiled kernels (dense forward and weight gradient, fused conv + pool
    /// forward; also CLAMPNET_GPU_TILES=1): bit-identical to the untiled ones, for large batches on GPUs,
    /// not yet measured on one. Where a dense layer could take both, tiles before subgroups.
    pub gpu_tiles: bool,
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
    /// the device was opened with the `subgroup` feature (`GpuOptions::subgroups`): the kernels that
    /// have a subgroup variant run it
    pub subgroups: bool,
    /// the GPU set's tiled kernels run (`GpuOptions::gpu_tiles`)
    pub gpu_tiles: bool,
    /// bytes of every buffer created through this context
    allocated: std::sync::atomic::AtomicU64,
    /// the pipelines built on this device, by their kernel list (`Pipelines::shared`): the runs of a
    /// sweep build them once
    pub(crate) pipeline_cache:
        std::sync::Mutex<Vec<(Vec<&'static str>, std::sync::Arc<super::Pipelines>)>>,
    /// the first uncaptured device error or device loss, reported by `check()` instead of a panic
    failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// held for as long as the device is
    _instance: wgpu::Instance,
    _adapter: wgpu::Adapter,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
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

/// The optional features to request: none (WebGPU's baseline) but what is asked for and present:
/// timestamp queries (profiling), subgroups (opted in to; where absent, the log says the baseline runs).
/// Returns them, and whether timestamps and subgroups are on.
fn optional_features(opts: &GpuOptions, adapter: &wgpu::Adapter) -> (wgpu::Features, bool, bool) {
    let has = adapter.features();
    let timestamps = opts.timestamps && has.contains(wgpu::Features::TIMESTAMP_QUERY);
    let asked = opts.subgroups || env_flag("CLAMPNET_SUBGROUPS");
    let subgroups = asked && has.contains(wgpu::Features::SUBGROUP);
    if asked && !subgroups {
        log::warn!(
            "subgroups asked for, but {} lacks the subgroup feature: the baseline kernels run",
            adapter.get_info().name
        );
    }
    let mut features = wgpu::Features::empty();
    features.set(wgpu::Features::TIMESTAMP_QUERY, timestamps);
    features.set(wgpu::Features::SUBGROUP, subgroups);
    (features, timestamps, subgroups)
}

/// The kernel set (the option, else CLAMPNET_KERNEL_SET, else the adapter's type) and whether the gpu
/// set's tiled kernels run, logged with the subgroup kernels' state.
fn kernel_shapes(
    opts: &GpuOptions,
    info: &wgpu::AdapterInfo,
    subgroups: bool,
) -> Result<(KernelSet, bool)> {
    let from_env = match std::env::var("CLAMPNET_KERNEL_SET") {
        Ok(v) if !v.is_empty() => {
            KernelSet::parse(&v).map_err(|e| Error::Config(format!("CLAMPNET_KERNEL_SET: {e}")))?
        }
        _ => None,
    };
    let kernel_set = opts
        .kernel_set
        .or(from_env)
        .unwrap_or_else(|| KernelSet::for_adapter(info));
    log::info!("kernel set: {kernel_set:?}");
    let gpu_tiles = opts.gpu_tiles || env_flag("CLAMPNET_GPU_TILES");
    // both are shapes of the gpu kernel set: say so where the cpu set runs
    let unused = match kernel_set {
        KernelSet::Cpu => " (unused: the cpu kernel set runs)",
        KernelSet::Gpu => "",
    };
    if subgroups {
        log::info!("subgroup kernels: on{unused}");
    }
    if gpu_tiles {
        log::info!("tiled kernels: on{unused}");
    }
    Ok((kernel_set, gpu_tiles))
}

/// An opt-in switch from the environment: "1" or "true".
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v == "true")
}

/// A short description of an adapter: "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu, driver llvmpipe)".
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} ({:?}, {:?}, driver {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    )
}

impl Context {
    /// `new_async`, waited for (the command line).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(opts: &GpuOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(opts))
    }

    /// Open the device `opts` picks. In a browser the adapter is the page's WebGPU (`navigator.gpu`):
    /// the backend and adapter options do not apply there.
    pub async fn new_async(opts: &GpuOptions) -> Result<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if let Some(b) = &opts.backend {
            desc.backends = parse_backends(b)?;
        }
        #[cfg(target_arch = "wasm32")]
        {
            desc.backends = wgpu::Backends::BROWSER_WEBGPU;
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
                    let all = instance.enumerate_adapters(backends).await;
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
                None => instance
                    .request_adapter(&wgpu::RequestAdapterOptions {
                        power_preference: wgpu::PowerPreference::from_env()
                            .unwrap_or(wgpu::PowerPreference::HighPerformance),
                        force_fallback_adapter: false,
                        compatible_surface: None,
                        ..Default::default()
                    })
                    .await
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
        let (required_features, timestamps, subgroups) = optional_features(opts, &adapter);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("clampnet"),
                required_features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
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
        let (kernel_set, gpu_tiles) = kernel_shapes(opts, &info, subgroups)?;
        Ok(Context {
            timestamps,
            kernel_set,
            subgroups,
            gpu_tiles,
            allocated: Default::default(),
            pipeline_cache: Default::default(),
            failure,
            _instance: instance,
            _adapter: adapter,
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

    pub(crate) fn count(&self, bytes: u64) {
        self.allocated
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
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

    /// Run `f` inside a validation error scope: a validation error it causes (a bad binding, a grid past
    /// the limits) comes back as an error naming `what`, not as a later uncaptured failure.
    /// In a browser the scope cannot be waited for: an error there is reported by the next readback.
    pub fn validated<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let out = f();
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(Error::gpu(what, e));
            }
            self.check()?;
            Ok(out)
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = what;
            let out = f();
            self.check()?;
            Ok(out)
        }
    }
}

/// What `clampnet info` shows of one adapter.
pub struct AdapterSummary {
    /// `describe` of the adapter
    pub description: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_uniform_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_storage_buffers_per_shader_stage: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
    /// the optional features clampnet could use that the adapter has (it requests none by default)
    pub optional_features: Vec<&'static str>,
}

/// Every adapter of the backends `backend` names (None: `WGPU_BACKEND`, else all), and those backends.
#[cfg(not(target_arch = "wasm32"))]
pub fn adapters(backend: Option<&str>) -> Result<(String, Vec<AdapterSummary>)> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if let Some(b) = backend {
        desc.backends = parse_backends(b)?;
    }
    let backends = desc.backends;
    let instance = wgpu::Instance::new(desc);
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    let summaries = adapters
        .iter()
        .map(|a| {
            let l = a.limits();
            let f = a.features();
            let optional = [
                (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
                (wgpu::Features::SUBGROUP, "subgroup"),
                (wgpu::Features::SHADER_F16, "shader-f16"),
            ];
            AdapterSummary {
                description: describe(&a.get_info()),
                max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
                max_uniform_buffer_binding_size: l.max_uniform_buffer_binding_size,
                max_buffer_size: l.max_buffer_size,
                max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
                max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
                max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
                max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
                optional_features: optional
                    .iter()
                    .filter(|(flag, _)| f.contains(*flag))
                    .map(|(_, n)| *n)
                    .collect(),
            }
        })
        .collect();
    Ok((format!("{backends:?}"), summaries))
}
