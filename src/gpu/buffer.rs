//! GPU buffers: a labelled handle, the few kinds clampnet creates (storage, storage that can also be read
//! through a uniform window, uniform, readback staging), uploads and readbacks.

use std::sync::Arc;

use super::{Context, UNIFORM_WINDOW};
use crate::error::{Error, Result};

/// A buffer on the GPU, with the label it was created with. Cloning shares the buffer.
#[derive(Clone, Debug)]
pub struct Buffer {
    pub(crate) raw: wgpu::Buffer,
    pub(crate) label: Arc<str>,
    /// a buffer of a K-model step (`with_models`): bytes from one model's part to the next (0: one
    /// part, which every model shares)
    pub(crate) model_stride: u64,
    /// the models it holds a part for (1 when shared)
    pub(crate) models: u32,
}

thread_local! {
    /// the models every storage buffer created on this thread holds (`with_models`)
    static MODELS: std::cell::Cell<usize> = const { std::cell::Cell::new(1) };
}

/// Run `f` with every storage buffer it creates (through a `Context`) holding one part per model, for
/// `models` models stepping together (`gpu::batched`): each model's part is the one-model buffer,
/// padded to 256 bytes, and a write without a model writes every part. Uniforms stay single.
pub fn with_models<R>(models: usize, f: impl FnOnce() -> R) -> R {
    let before = MODELS.with(|m| m.replace(models.max(1)));
    let out = f();
    MODELS.with(|m| m.set(before));
    out
}

/// The models a storage buffer created now holds (`with_models`).
pub fn models() -> usize {
    MODELS.with(|m| m.get())
}

/// Whether a buffer of `bytes` per model, created now (`with_models`), can be read through one uniform
/// window: one model's bytes, or K models' parts.
pub fn fits_window(bytes: u64) -> bool {
    match models() as u64 {
        1 => bytes <= UNIFORM_WINDOW,
        k => part(bytes) * k <= UNIFORM_WINDOW,
    }
}

/// Bytes of one model's part of a buffer of `bytes` for one model.
fn part(bytes: u64) -> u64 {
    bytes.max(4).div_ceil(256) * 256
}

impl PartialEq for Buffer {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}
impl Eq for Buffer {}
impl std::hash::Hash for Buffer {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.raw.hash(state)
    }
}

impl Buffer {
    /// Bytes.
    pub fn size(&self) -> u64 {
        self.raw.size()
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Bytes from one model's part to the next (0: shared by all models).
    pub fn model_stride(&self) -> u64 {
        self.model_stride
    }

    /// The byte offset of model `m`'s part.
    fn part_offset(&self, m: usize) -> u64 {
        self.model_stride * m as u64
    }

    /// An immutable uniform buffer (created by `Context::uniform`).
    pub(crate) fn is_uniform(&self) -> bool {
        self.raw.usage() == UNIFORM_USAGE
    }
}

const UNIFORM_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::UNIFORM
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

impl Context {
    fn wrap(&self, raw: wgpu::Buffer, label: &str) -> Buffer {
        Buffer {
            raw,
            label: label.into(),
            model_stride: 0,
            models: 1,
        }
    }

    /// A storage buffer holding `bytes` (padded to a non-zero multiple of 4, as storage bindings need);
    /// for K models (`with_models`), K copies of it.
    pub fn storage_init(&self, label: &str, bytes: &[u8]) -> Buffer {
        match models() {
            1 => {
                let size = (bytes.len().max(1).div_ceil(4) * 4) as u64;
                self.buffer_init(label, bytes, size, wgpu::BufferUsages::empty())
            }
            k => self.stacked_init(label, bytes, k, 0, wgpu::BufferUsages::empty()),
        }
    }

    /// A storage buffer holding `bytes` once, shared by all models of a K-model step (the data).
    pub fn storage_init_shared(&self, label: &str, bytes: &[u8]) -> Buffer {
        with_models(1, || self.storage_init(label, bytes))
    }

    /// A storage buffer that can also be bound as a uniform window of `UNIFORM_WINDOW` bytes at any
    /// 256-byte aligned offset inside it (padded at the end so every such window fits).
    pub fn storage_uniform_init(&self, label: &str, bytes: &[u8]) -> Buffer {
        match models() {
            1 => {
                let size = (bytes.len().div_ceil(256) * 256) as u64 + UNIFORM_WINDOW;
                self.buffer_init(label, bytes, size, wgpu::BufferUsages::UNIFORM)
            }
            k => self.stacked_init(label, bytes, k, UNIFORM_WINDOW, wgpu::BufferUsages::UNIFORM),
        }
    }

    /// `storage_zeroed` that can also be bound as a uniform window (see `storage_uniform_init`).
    pub fn storage_uniform_zeroed(&self, label: &str, bytes: u64) -> Buffer {
        let k = models();
        if k > 1 {
            return self.stacked_zeroed(
                label,
                bytes,
                k,
                UNIFORM_WINDOW,
                wgpu::BufferUsages::UNIFORM,
            );
        }
        let size = bytes.div_ceil(256) * 256 + UNIFORM_WINDOW;
        self.storage_buffer(label, size, wgpu::BufferUsages::UNIFORM, false)
    }

    /// A zero-filled storage buffer of `bytes` (rounded up to a non-zero multiple of 4).
    pub fn storage_zeroed(&self, label: &str, bytes: u64) -> Buffer {
        let k = models();
        if k > 1 {
            return self.stacked_zeroed(label, bytes, k, 0, wgpu::BufferUsages::empty());
        }
        let size = bytes.max(4).div_ceil(4) * 4;
        self.storage_buffer(label, size, wgpu::BufferUsages::empty(), false)
    }

    /// K parts of `part(bytes)` each, then `tail` bytes.
    fn stacked_zeroed(
        &self,
        label: &str,
        bytes: u64,
        k: usize,
        tail: u64,
        extra: wgpu::BufferUsages,
    ) -> Buffer {
        let stride = part(bytes);
        let mut b = self.storage_buffer(label, stride * k as u64 + tail, extra, false);
        b.model_stride = stride;
        b.models = k as u32;
        b
    }

    /// `stacked_zeroed` with `bytes` in every part.
    fn stacked_init(
        &self,
        label: &str,
        bytes: &[u8],
        k: usize,
        tail: u64,
        extra: wgpu::BufferUsages,
    ) -> Buffer {
        let stride = part(bytes.len() as u64) as usize;
        let mut all = vec![0u8; stride * k];
        for m in 0..k {
            all[m * stride..m * stride + bytes.len()].copy_from_slice(bytes);
        }
        let mut b = self.buffer_init(label, &all, (stride * k) as u64 + tail, extra);
        b.model_stride = stride as u64;
        b.models = k as u32;
        b
    }

    /// A storage buffer holding one `T` per model (per-model uniform values, such as a constraint's,
    /// which K-model kernels read from storage), each part padded to a multiple of 256 bytes and of
    /// the value's size.
    pub fn per_model_table<T: bytemuck::Pod>(&self, label: &str, values: &[T]) -> Buffer {
        let size = std::mem::size_of::<T>();
        let mut stride = 256;
        while stride % size != 0 {
            stride += 256;
        }
        let mut all = vec![0u8; stride * values.len().max(1)];
        for (m, v) in values.iter().enumerate() {
            all[m * stride..m * stride + size].copy_from_slice(bytemuck::bytes_of(v));
        }
        let mut b = self.buffer_init(label, &all, all.len() as u64, wgpu::BufferUsages::empty());
        b.model_stride = stride as u64;
        b.models = values.len() as u32;
        b
    }

    /// `storage_zeroed`, refused with an error naming the buffer when it is larger than a storage binding
    /// may be on this device.
    pub fn storage_checked(&self, label: &str, bytes: u64) -> Result<Buffer> {
        let k = models() as u64;
        self.check_binding(label, if k > 1 { part(bytes) * k } else { bytes })?;
        Ok(self.storage_zeroed(label, bytes))
    }

    /// `storage_uniform_zeroed`, checked as `storage_checked` is.
    pub fn storage_uniform_checked(&self, label: &str, bytes: u64) -> Result<Buffer> {
        let k = models() as u64;
        self.check_binding(label, if k > 1 { part(bytes) * k } else { bytes })?;
        Ok(self.storage_uniform_zeroed(label, bytes))
    }

    /// An error naming `what` when `bytes` exceed the device's storage-binding size.
    pub fn check_binding(&self, what: &str, bytes: u64) -> Result<()> {
        let max = self.limits.max_storage_buffer_binding_size;
        if bytes > max {
            return Err(Error::gpu(
                format!("buffer '{what}'"),
                format!(
                    "needs {bytes} bytes, above the adapter's max_storage_buffer_binding_size of {max}; \
                     use --limit-train / a smaller --batch-size"
                ),
            ));
        }
        Ok(())
    }

    /// A uniform buffer holding `value` (immutable: only ever written here).
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> Buffer {
        use wgpu::util::DeviceExt;
        let raw = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(value),
                usage: UNIFORM_USAGE,
            });
        self.wrap(raw, label)
    }

    /// A host-mappable buffer that `Context::submit` can copy into and `read_staged` reads.
    pub fn staging(&self, label: &str, size: u64) -> Buffer {
        let raw = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.wrap(raw, label)
    }

    /// A buffer of `size` bytes (a multiple of 4) holding `bytes` then zeros, written in place through
    /// its mapping (no second host copy: the dataset is the largest upload).
    fn buffer_init(
        &self,
        label: &str,
        bytes: &[u8],
        size: u64,
        extra: wgpu::BufferUsages,
    ) -> Buffer {
        let buffer = self.storage_buffer(label, size, extra, true);
        buffer
            .raw
            .slice(..)
            .get_mapped_range_mut()
            .expect("a buffer mapped at creation maps")
            .slice(..bytes.len())
            .copy_from_slice(bytes);
        buffer.raw.unmap();
        buffer
    }

    /// A storage buffer (copyable both ways, plus `extra` usages) of `size` bytes, counted in
    /// `allocated_bytes`.
    fn storage_buffer(
        &self,
        label: &str,
        size: u64,
        extra: wgpu::BufferUsages,
        mapped_at_creation: bool,
    ) -> Buffer {
        self.count(size);
        let raw = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST
                | extra,
            mapped_at_creation,
        });
        self.wrap(raw, label)
    }

    /// Write `data` at byte `offset` of `buffer` (queued: it lands before the next submit runs); of
    /// every model's part, in a K-model buffer.
    pub fn write<T: bytemuck::Pod>(&self, buffer: &Buffer, offset: u64, data: &[T]) {
        for m in 0..buffer.models as usize {
            self.write_model(buffer, m, offset, data);
        }
    }

    /// Write `data` at byte `offset` of model `m`'s part of `buffer`.
    pub fn write_model<T: bytemuck::Pod>(
        &self,
        buffer: &Buffer,
        m: usize,
        offset: u64,
        data: &[T],
    ) {
        self.queue.write_buffer(
            &buffer.raw,
            buffer.part_offset(m) + offset,
            bytemuck::cast_slice(data),
        );
    }

    /// Copy `size` bytes at `offset` of `buffer` back to the host (one submit, one wait).
    pub async fn read_bytes_async(
        &self,
        buffer: &Buffer,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>> {
        let staging = self.staging("readback", size);
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&buffer.raw, offset, &staging.raw, 0, size);
        self.queue.submit([enc.finish()]);
        self.read_staged_async(&staging, None).await
    }

    /// The bytes of a staging buffer once `submission` (None: all submitted work) has run. Natively the
    /// device is polled until then (the future is ready when first polled); in a browser the map
    /// completes once control returns to the event loop, so it must be awaited.
    pub async fn read_staged_async(
        &self,
        staging: &Buffer,
        submission: Option<&super::Submission>,
    ) -> Result<Vec<u8>> {
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.raw.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: submission.map(|s| s.0.clone()),
                timeout: None,
            })
            .map_err(|e| Error::gpu("waiting for the GPU", e))?;
        #[cfg(target_arch = "wasm32")]
        let _ = submission;
        rx.await
            .map_err(|e| Error::gpu("readback", e))?
            .map_err(|e| Error::gpu("mapping a readback buffer", e))?;
        self.check()?;
        let bytes = staging
            .raw
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::gpu("reading a mapped buffer", e))?
            .to_vec();
        staging.raw.unmap();
        Ok(bytes)
    }

    /// `read_f32_async` of model `m`'s part of `buffer`: `len` values from element `offset_elems`.
    pub async fn read_f32_model_async(
        &self,
        buffer: &Buffer,
        m: usize,
        offset_elems: u64,
        len: u64,
    ) -> Result<Vec<f32>> {
        let at = buffer.part_offset(m) + offset_elems * 4;
        let bytes = self.read_bytes_async(buffer, at, len * 4).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// `read_bytes_async` of model `m`'s part of `buffer`.
    pub async fn read_bytes_model_async(
        &self,
        buffer: &Buffer,
        m: usize,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>> {
        self.read_bytes_async(buffer, buffer.part_offset(m) + offset, size)
            .await
    }
}

/// The blocking readers of the native build: each is its `_async` twin, run to completion.
#[cfg(not(target_arch = "wasm32"))]
impl Context {
    pub fn read_bytes(&self, buffer: &Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        pollster::block_on(self.read_bytes_async(buffer, offset, size))
    }

    pub fn read_staged(
        &self,
        staging: &Buffer,
        submission: Option<&super::Submission>,
    ) -> Result<Vec<u8>> {
        pollster::block_on(self.read_staged_async(staging, submission))
    }

    pub fn read_f32(&self, buffer: &Buffer, offset_elems: u64, len: u64) -> Result<Vec<f32>> {
        self.read_f32_model(buffer, 0, offset_elems, len)
    }

    pub fn read_f32_model(
        &self,
        buffer: &Buffer,
        m: usize,
        offset_elems: u64,
        len: u64,
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.read_f32_model_async(buffer, m, offset_elems, len))
    }

    pub fn read_bytes_model(
        &self,
        buffer: &Buffer,
        m: usize,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>> {
        pollster::block_on(self.read_bytes_model_async(buffer, m, offset, size))
    }

    pub fn read_u32(&self, buffer: &Buffer, offset_elems: u64, len: u64) -> Result<Vec<u32>> {
        let bytes = self.read_bytes(buffer, offset_elems * 4, len * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}
