//! Model implementations behind the [`crate::Model`] trait.

pub mod onnx;
