//! The C types and function signatures of TensorFlow's C API that soma uses
//! (`tensorflow/c/c_api.h`, `tf_tensor.h`, `tf_status.h`, `tf_buffer.h`, `tf_tstring.h`).

use std::ffi::{c_char, c_int, c_void};

/// Opaque handles.
#[repr(C)]
pub(crate) struct TF_Status {
    _private: [u8; 0],
}
#[repr(C)]
pub(crate) struct TF_Graph {
    _private: [u8; 0],
}
#[repr(C)]
pub(crate) struct TF_Session {
    _private: [u8; 0],
}
#[repr(C)]
pub(crate) struct TF_SessionOptions {
    _private: [u8; 0],
}
#[repr(C)]
pub(crate) struct TF_Operation {
    _private: [u8; 0],
}
#[repr(C)]
pub(crate) struct TF_Tensor {
    _private: [u8; 0],
}

/// `TF_Buffer` (tf_buffer.h).
#[repr(C)]
pub(crate) struct TF_Buffer {
    pub(crate) data: *const c_void,
    pub(crate) length: usize,
    pub(crate) data_deallocator: Option<unsafe extern "C" fn(*mut c_void, usize)>,
}

/// `TF_Output` (c_api.h): an operation's output by index.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct TF_Output {
    pub(crate) oper: *mut TF_Operation,
    pub(crate) index: c_int,
}

/// `TF_TString` (tsl/platform/ctstring_internal.h): a 24-byte union, 8-byte aligned.
#[repr(C, align(8))]
pub(crate) struct TF_TString {
    pub(crate) raw: [u8; 24],
}

// `TF_TString_Large` is {size_t size; size_t cap; char *ptr}: tensors of strings are arrays
// of these, so a different size would misplace every element after the first.
const _: () = assert!(std::mem::size_of::<TF_TString>() == 24);

pub(crate) type Version = unsafe extern "C" fn() -> *const c_char;
pub(crate) type NewStatus = unsafe extern "C" fn() -> *mut TF_Status;
pub(crate) type DeleteStatus = unsafe extern "C" fn(*mut TF_Status);
pub(crate) type GetCode = unsafe extern "C" fn(*const TF_Status) -> c_int;
pub(crate) type Message = unsafe extern "C" fn(*const TF_Status) -> *const c_char;
pub(crate) type NewGraph = unsafe extern "C" fn() -> *mut TF_Graph;
pub(crate) type DeleteGraph = unsafe extern "C" fn(*mut TF_Graph);
pub(crate) type NewSessionOptions = unsafe extern "C" fn() -> *mut TF_SessionOptions;
pub(crate) type DeleteSessionOptions = unsafe extern "C" fn(*mut TF_SessionOptions);
pub(crate) type SetConfig =
    unsafe extern "C" fn(*mut TF_SessionOptions, *const c_void, usize, *mut TF_Status);
pub(crate) type NewBuffer = unsafe extern "C" fn() -> *mut TF_Buffer;
pub(crate) type DeleteBuffer = unsafe extern "C" fn(*mut TF_Buffer);
pub(crate) type LoadSessionFromSavedModel = unsafe extern "C" fn(
    *const TF_SessionOptions,
    *const TF_Buffer,
    *const c_char,
    *const *const c_char,
    c_int,
    *mut TF_Graph,
    *mut TF_Buffer,
    *mut TF_Status,
) -> *mut TF_Session;
pub(crate) type CloseSession = unsafe extern "C" fn(*mut TF_Session, *mut TF_Status);
pub(crate) type DeleteSession = unsafe extern "C" fn(*mut TF_Session, *mut TF_Status);
pub(crate) type GraphOperationByName =
    unsafe extern "C" fn(*mut TF_Graph, *const c_char) -> *mut TF_Operation;
pub(crate) type OperationNumOutputs = unsafe extern "C" fn(*mut TF_Operation) -> c_int;
pub(crate) type SessionRun = unsafe extern "C" fn(
    *mut TF_Session,
    *const TF_Buffer,
    *const TF_Output,
    *const *mut TF_Tensor,
    c_int,
    *const TF_Output,
    *mut *mut TF_Tensor,
    c_int,
    *const *const TF_Operation,
    c_int,
    *mut TF_Buffer,
    *mut TF_Status,
);
pub(crate) type AllocateTensor =
    unsafe extern "C" fn(c_int, *const i64, c_int, usize) -> *mut TF_Tensor;
pub(crate) type DeleteTensor = unsafe extern "C" fn(*mut TF_Tensor);
pub(crate) type TensorType = unsafe extern "C" fn(*const TF_Tensor) -> c_int;
pub(crate) type NumDims = unsafe extern "C" fn(*const TF_Tensor) -> c_int;
pub(crate) type Dim = unsafe extern "C" fn(*const TF_Tensor, c_int) -> i64;
pub(crate) type TensorByteSize = unsafe extern "C" fn(*const TF_Tensor) -> usize;
pub(crate) type TensorData = unsafe extern "C" fn(*const TF_Tensor) -> *mut c_void;
pub(crate) type StringInit = unsafe extern "C" fn(*mut TF_TString);
pub(crate) type StringCopy = unsafe extern "C" fn(*mut TF_TString, *const c_char, usize);
pub(crate) type StringGetDataPointer = unsafe extern "C" fn(*const TF_TString) -> *const c_char;
pub(crate) type StringGetSize = unsafe extern "C" fn(*const TF_TString) -> usize;
