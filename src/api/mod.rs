//! Front ends: translate a wire protocol to tensors and back, map errors, nothing else.

pub mod decode_cost;
pub mod grpc;
pub mod rest;
pub mod tfs;
pub mod v2;
