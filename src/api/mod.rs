//! Front ends: translate a wire protocol to tensors and back, map errors, nothing else.

pub mod admin;
pub mod decode_cost;
pub mod grpc;
pub mod rest;
pub mod status;
pub mod tfs;
pub mod v2;
