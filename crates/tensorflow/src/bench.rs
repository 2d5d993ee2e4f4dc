//! A baseline for benchmarks: the probe's "bare C API" loop, with no soma types in it.
//! Each iteration allocates the input tensor, copies the data in, runs the session, reads
//! the first output and deletes both tensors. Not part of soma's serving path.

use std::time::{Duration, Instant};

use crate::ffi::TF_Tensor;
use crate::{PreparedSignature, SavedModel};

impl SavedModel {
    /// Runs `iterations` calls of a single-input float32 signature; returns each call's
    /// latency. Panics on TensorFlow errors (benchmarks only).
    #[doc(hidden)]
    pub fn bench_raw_c_api(
        &self,
        signature: &PreparedSignature,
        dims: &[i64],
        data: &[f32],
        iterations: usize,
    ) -> Vec<Duration> {
        let api = &self.tf.api;
        let feed = signature.inputs[0].raw();
        let fetch = signature.outputs[0].raw();
        let bytes = std::mem::size_of_val(data);
        let mut latencies = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let started = Instant::now();
            // SAFETY: same calls and ownership as `SavedModel::run`, unrolled.
            unsafe {
                let input = (api.allocate_tensor)(1, dims.as_ptr(), dims.len() as i32, bytes);
                std::ptr::copy_nonoverlapping(
                    data.as_ptr().cast::<u8>(),
                    (api.tensor_data)(input).cast::<u8>(),
                    bytes,
                );
                let mut output: *mut TF_Tensor = std::ptr::null_mut();
                let ((), failed) = self.tf.with_status(|s| {
                    (api.session_run)(
                        self.session,
                        std::ptr::null(),
                        &feed,
                        &input,
                        1,
                        &fetch,
                        &mut output,
                        1,
                        std::ptr::null(),
                        0,
                        std::ptr::null_mut(),
                        s,
                    )
                });
                assert!(failed.is_none(), "{failed:?}");
                let out = (api.tensor_data)(output).cast::<f32>();
                std::hint::black_box(*out);
                (api.delete_tensor)(output);
                (api.delete_tensor)(input);
            }
            latencies.push(started.elapsed());
        }
        latencies
    }
}
