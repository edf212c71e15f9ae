//! Model implementations behind the [`crate::Model`] trait: ONNX models, engine-neutral in
//! [`onnx`], run by [`tract`] or [`onnxruntime`] (each a cargo feature).

pub mod onnx;
#[cfg(feature = "onnxruntime")]
pub mod onnxruntime;
#[cfg(feature = "tract")]
pub mod tract;
