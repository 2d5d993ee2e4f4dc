//! Moving tensors across the C boundary.

use std::ffi::c_char;

use soma_core::{DType, Tensor, TensorData};

use crate::ffi::{TF_TString, TF_Tensor};
use crate::{TensorFlow, TfError};

/// A `TF_Tensor` built from a soma tensor, deleted on drop.
///
/// String ownership. A string tensor holds `TF_TString` slots, and strings longer than 22
/// bytes own a heap block. soma never frees those blocks itself: `TF_DeleteTensor`
/// (`TensorInterface::Release` in tf_tensor.cc) runs `TF_TString_Dealloc` on every slot,
/// but only when it drops the *last* reference to a buffer that TensorFlow allocated
/// (`CanMove()`: refcount one and `TF_AllocateTensor`'s owns-memory flag). That matters
/// because `TF_SessionRun` may hand back an output that shares the input's buffer (an
/// `Identity` of a string input): freeing the strings when the input is deleted would
/// leave that output reading emptied slots (this happened; see the test
/// `long_strings_survive_an_identity`). With TensorFlow's rule the strings are freed
/// exactly once, by whichever of the input and the output is deleted last.
pub(crate) struct InputTensor<'tf> {
    tf: &'tf TensorFlow,
    pub(crate) ptr: *mut TF_Tensor,
}

impl<'tf> InputTensor<'tf> {
    pub(crate) fn new(tf: &'tf TensorFlow, tensor: &Tensor) -> Result<InputTensor<'tf>, TfError> {
        let dims: Vec<i64> = tensor.shape().iter().map(|d| *d as i64).collect();
        let api = &tf.api;
        match tensor.data() {
            TensorData::Fixed(bytes) => {
                // SAFETY: allocates `bytes.len()` bytes for the declared dtype and shape
                // (Tensor::new checked that they agree, and that TensorFlow can represent
                // the shape: it aborts the process on one it cannot), then fills them.
                unsafe {
                    let ptr = (api.allocate_tensor)(
                        tensor.dtype().to_proto(),
                        dims.as_ptr(),
                        dims.len() as i32,
                        bytes.len(),
                    );
                    if ptr.is_null() {
                        return Err(TfError::InvalidInput(
                            "TensorFlow could not allocate an input tensor".into(),
                        ));
                    }
                    if !bytes.is_empty() {
                        let data = (api.tensor_data)(ptr).cast::<u8>();
                        std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len());
                        if tensor.dtype() == DType::Bool {
                            // A C++ `bool` holding anything but 0 or 1 is undefined
                            // behaviour in TensorFlow's kernels; soma's bytes are unchecked.
                            let flags = std::slice::from_raw_parts_mut(data, bytes.len());
                            for flag in flags {
                                *flag = u8::from(*flag != 0);
                            }
                        }
                    }
                    Ok(InputTensor { tf, ptr })
                }
            }
            TensorData::Strings(items) => {
                let size = items.len() * std::mem::size_of::<TF_TString>();
                // SAFETY: the buffer holds exactly `items.len()` TF_TString slots (24 bytes,
                // `TF_TString` in ffi.rs); each is initialised (TF_StringInit) before it is
                // written (TF_StringCopy copies the bytes, so `items` need not outlive it).
                unsafe {
                    let ptr = (api.allocate_tensor)(
                        DType::String.to_proto(),
                        dims.as_ptr(),
                        dims.len() as i32,
                        size,
                    );
                    if ptr.is_null() {
                        return Err(TfError::InvalidInput(
                            "TensorFlow could not allocate a string tensor".into(),
                        ));
                    }
                    let slots = (api.tensor_data)(ptr).cast::<TF_TString>();
                    for (i, item) in items.iter().enumerate() {
                        let slot = slots.add(i);
                        (api.string_init)(slot);
                        (api.string_copy)(slot, item.as_ptr().cast::<c_char>(), item.len());
                    }
                    Ok(InputTensor { tf, ptr })
                }
            }
        }
    }
}

impl Drop for InputTensor<'_> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from TF_AllocateTensor and is deleted exactly once. String
        // slots are freed by TF_DeleteTensor itself, if this is the buffer's last reference
        // (see the type's documentation).
        unsafe { (self.tf.api.delete_tensor)(self.ptr) };
    }
}

/// Copies an output `TF_Tensor` into a soma tensor and deletes it (also on error).
///
/// # Safety
/// `ptr` must be a valid tensor returned by `TF_SessionRun`, owned by the caller.
pub(crate) unsafe fn take_output(tf: &TensorFlow, ptr: *mut TF_Tensor) -> Result<Tensor, TfError> {
    let api = &tf.api;
    // SAFETY: guaranteed by the caller; the tensor is read, then deleted exactly once.
    let result = unsafe {
        let code = (api.tensor_type)(ptr);
        let dims: Vec<usize> = (0..(api.num_dims)(ptr))
            .map(|i| (api.dim)(ptr, i).max(0) as usize)
            .collect();
        let count: usize = dims.iter().product();
        let data = (api.tensor_data)(ptr);
        let byte_size = (api.tensor_byte_size)(ptr);
        match DType::from_proto(code) {
            Some(DType::String) => {
                let slots = data.cast::<TF_TString>();
                let items = (0..count)
                    .map(|i| {
                        let slot = slots.add(i);
                        let start = (api.string_get_data_pointer)(slot).cast::<u8>();
                        let len = (api.string_get_size)(slot);
                        if len == 0 {
                            Vec::new()
                        } else {
                            std::slice::from_raw_parts(start, len).to_vec()
                        }
                    })
                    .collect();
                Tensor::from_strings(dims, items).map_err(|e| TfError::Proto(e.to_string()))
            }
            Some(dtype) if dtype.byte_size().is_some() => {
                let bytes = if byte_size == 0 {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(data.cast::<u8>(), byte_size).to_vec()
                };
                Tensor::new(dtype, dims, TensorData::Fixed(bytes))
                    .map_err(|e| TfError::Proto(e.to_string()))
            }
            other => Err(TfError::Run {
                kind: soma_core::ErrorKind::Unimplemented,
                message: format!(
                    "the model returned a tensor of dtype {} that soma cannot carry",
                    other.map_or_else(|| code.to_string(), |d| d.name().to_string())
                ),
            }),
        }
    };
    // SAFETY: deleted exactly once, after its data was copied.
    unsafe { (api.delete_tensor)(ptr) };
    result
}
