//! tensorserve: a model server that speaks TensorFlow Serving's gRPC API.
//!
//! The crate follows the path a request takes: [`api`] front ends translate wire
//! messages into [`tensor::Tensor`]s, [`serving::ServingCore`] resolves the model and checks
//! the request, [`core`] runs it (one executor per version: inline, blocking pool or batch),
//! [`model`] holds the `Model` trait and the registry, and [`backend`] holds the model
//! implementations (ONNX through ONNX Runtime or tract).

pub mod api;
pub mod backend;
pub mod config;
pub mod core;
pub mod error;
pub mod examples;
pub mod explain;
pub mod memory;
pub mod model;
pub mod proto;
pub mod repository;
pub mod server;
pub mod serving;
pub mod tensor;

pub use error::{Code, ServingError};
pub use model::{Model, ModelRegistry, Signature, TensorMap, TensorSpec};
pub use serving::{ServingCore, ServingOptions};
pub use tensor::{DataType, Tensor};
