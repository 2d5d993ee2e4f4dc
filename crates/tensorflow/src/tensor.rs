//! Moving tensors across the C boundary.

use std::ffi::c_char;

use soma_core::{DType, Tensor, TensorData};

use crate::ffi::{TF_TString, TF_Tensor};
use crate::{TensorFlow, TfError};

/// A `TF_Tensor` built from a soma tensor, deleted on drop.
///
/// `TF_AllocateTensor` hands out raw memory that `TF_DeleteTensor` frees without running
/// the `TF_TString` destructors, so string elements (which may own heap memory) are
/// initialised here and deallocated here before the tensor is deleted.
pub(crate) struct InputTensor<'tf> {
    tf: &'tf TensorFlow,
    pub(crate) ptr: *mut TF_Tensor,
    strings: usize,
}

impl<'tf> InputTensor<'tf> {
    pub(crate) fn new(tf: &'tf TensorFlow, tensor: &Tensor) -> Result<InputTensor<'tf>, TfError> {
        let dims: Vec<i64> = tensor.shape().iter().map(|d| *d as i64).collect();
        let api = &tf.api;
        match tensor.data() {
            TensorData::Fixed(bytes) => {
                // SAFETY: allocates `bytes.len()` bytes for the declared dtype and shape
                // (Tensor::new checked that they agree), then fills them completely.
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
                        std::ptr::copy_nonoverlapping(
                            bytes.as_ptr(),
                            (api.tensor_data)(ptr).cast::<u8>(),
                            bytes.len(),
                        );
                    }
                    Ok(InputTensor {
                        tf,
                        ptr,
                        strings: 0,
                    })
                }
            }
            TensorData::Strings(items) => {
                let size = items.len() * std::mem::size_of::<TF_TString>();
                // SAFETY: the buffer holds exactly `items.len()` TF_TString slots; each is
                // initialised (TF_StringInit) before it is written (TF_StringCopy copies).
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
                    Ok(InputTensor {
                        tf,
                        ptr,
                        strings: items.len(),
                    })
                }
            }
        }
    }
}

impl Drop for InputTensor<'_> {
    fn drop(&mut self) {
        let api = &self.tf.api;
        // SAFETY: `ptr` came from TF_AllocateTensor and is deleted once; the first `strings`
        // slots were initialised in `new`.
        unsafe {
            if self.strings > 0 {
                let slots = (api.tensor_data)(self.ptr).cast::<TF_TString>();
                for i in 0..self.strings {
                    (api.string_dealloc)(slots.add(i));
                }
            }
            (api.delete_tensor)(self.ptr);
        }
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
