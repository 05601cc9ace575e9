//! Running recorded plans: one command buffer per submit, one compute pass holding every dispatch.

use super::{Buffer, Context, Dispatch};
use crate::error::{Error, Result};

/// A submitted command buffer, to wait for.
pub struct Submission(
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] pub(crate) wgpu::SubmissionIndex,
);

impl Context {
    /// Record `dispatches` into one compute pass, then (`copy`) copy `bytes` from the start of a buffer
    /// into a staging buffer, and submit.
    pub fn submit<'d>(
        &self,
        dispatches: impl IntoIterator<Item = &'d Dispatch>,
        copy: Option<(&Buffer, &Buffer, u64)>,
    ) -> Submission {
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            super::pipelines::encode(&mut pass, dispatches);
        }
        if let Some((from, to, bytes)) = copy {
            enc.copy_buffer_to_buffer(&from.raw, 0, &to.raw, 0, bytes);
        }
        Submission(self.queue.submit([enc.finish()]))
    }

    /// Wait until everything submitted has run.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::gpu("waiting for the GPU", e))?;
        self.check()
    }
}
