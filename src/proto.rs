//! Code generated from our own copies of TensorFlow Serving's wire schemas (`proto/`).

#![allow(clippy::all, missing_docs)]

/// Package `tensorflow`: tensors, examples, signatures.
pub mod tensorflow {
    tonic::include_proto!("tensorflow");

    /// Package `tensorflow.error`: the canonical status codes.
    pub mod error {
        tonic::include_proto!("tensorflow.error");
    }

    /// Package `tensorflow.serving`: the serving APIs and config.
    pub mod serving {
        tonic::include_proto!("tensorflow.serving");
    }
}

/// Serialized `FileDescriptorSet` of every schema above, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tensorserve_descriptor");
