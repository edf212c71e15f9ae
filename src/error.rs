//! The one error type every layer returns, with TensorFlow's canonical codes.

use std::fmt;

/// TensorFlow's canonical error codes (`tensorflow.error.Code`), numbered as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Code {
    /// Not an error.
    Ok = 0,
    /// The caller cancelled the operation.
    Cancelled = 1,
    /// An error of no other kind.
    Unknown = 2,
    /// The request is malformed whatever the server's state.
    InvalidArgument = 3,
    /// The deadline passed before the work finished.
    DeadlineExceeded = 4,
    /// A named model, version or label does not exist.
    NotFound = 5,
    /// What the request creates exists already.
    AlreadyExists = 6,
    /// The caller may not do this.
    PermissionDenied = 7,
    /// A size or resource limit was reached.
    ResourceExhausted = 8,
    /// The server is not in a state to do this (e.g. a signature the model lacks).
    FailedPrecondition = 9,
    /// The operation was aborted, typically by a concurrency conflict.
    Aborted = 10,
    /// A value lies past a valid range.
    OutOfRange = 11,
    /// The server does not offer this operation.
    Unimplemented = 12,
    /// A broken invariant inside the server.
    Internal = 13,
    /// Not available now (e.g. a model still loading); retrying may help.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The caller has no valid credentials.
    Unauthenticated = 16,
}

impl Code {
    /// The gRPC status code; TF Serving maps them one to one.
    pub fn to_grpc(self) -> tonic::Code {
        tonic::Code::from_i32(self as i32)
    }

    /// Our code for a gRPC status code (the same numbers).
    pub fn from_grpc(code: tonic::Code) -> Code {
        use tonic::Code as G;
        match code {
            G::Ok => Code::Ok,
            G::Cancelled => Code::Cancelled,
            G::Unknown => Code::Unknown,
            G::InvalidArgument => Code::InvalidArgument,
            G::DeadlineExceeded => Code::DeadlineExceeded,
            G::NotFound => Code::NotFound,
            G::AlreadyExists => Code::AlreadyExists,
            G::PermissionDenied => Code::PermissionDenied,
            G::ResourceExhausted => Code::ResourceExhausted,
            G::FailedPrecondition => Code::FailedPrecondition,
            G::Aborted => Code::Aborted,
            G::OutOfRange => Code::OutOfRange,
            G::Unimplemented => Code::Unimplemented,
            G::Internal => Code::Internal,
            G::Unavailable => Code::Unavailable,
            G::DataLoss => Code::DataLoss,
            G::Unauthenticated => Code::Unauthenticated,
        }
    }

    /// The upper-case name TensorFlow prints (`INVALID_ARGUMENT`).
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

/// What went wrong, in the terms every protocol's errors are told apart by.
///
/// The [`Code`] is TensorFlow's and goes on TF Serving's gRPC wire as it is; HTTP front ends
/// and protocols with their own error sets (KServe, Triton) map the kind instead, because one
/// code covers cases they answer differently (RESOURCE_EXHAUSTED is 413 for one oversized
/// request and 503 for a full server).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is wrong whatever the server's state: bad shape, dtype, JSON, signature.
    InvalidInput,
    /// No such model, version or label.
    ModelNotFound,
    /// The model exists but cannot answer now (loading, unloading, its batcher stopped).
    ModelNotReady,
    /// This request alone is past a per-request limit; sending it again will not help.
    TooLarge,
    /// A limit shared by every request is reached (queue, run slots, memory); retry later.
    Overloaded,
    /// A resource limit of no more specific kind.
    LimitExceeded,
    /// The request's deadline passed before it was answered.
    DeadlineExceeded,
    /// The client went away or cancelled.
    Cancelled,
    /// The server does not offer what was asked.
    Unsupported,
    /// What the request creates exists already, or it conflicts with another.
    Conflict,
    /// The caller may not do this.
    PermissionDenied,
    /// The caller has no valid credentials.
    Unauthenticated,
    /// The server or the engine failed.
    Internal,
}

impl ErrorKind {
    /// The kind an error of `code` has unless its maker says more.
    pub fn of(code: Code) -> ErrorKind {
        match code {
            Code::Ok | Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => ErrorKind::InvalidInput,
            Code::NotFound => ErrorKind::ModelNotFound,
            Code::Unavailable => ErrorKind::ModelNotReady,
            Code::ResourceExhausted => ErrorKind::LimitExceeded,
            Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
            Code::Cancelled => ErrorKind::Cancelled,
            Code::Unimplemented => ErrorKind::Unsupported,
            Code::AlreadyExists | Code::Aborted => ErrorKind::Conflict,
            Code::PermissionDenied => ErrorKind::PermissionDenied,
            Code::Unauthenticated => ErrorKind::Unauthenticated,
            Code::Unknown | Code::Internal | Code::DataLoss => ErrorKind::Internal,
        }
    }
}

/// A failed request or load: a canonical code, its kind and a message meant for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingError {
    /// The canonical code; TF Serving's gRPC front end sends it as it is.
    pub code: Code,
    /// The message, worded like TF Serving's where it has one.
    pub message: String,
    /// What went wrong; the other front ends map this to their wire.
    pub kind: ErrorKind,
}

/// TF Serving cuts longer error messages, so clients never receive huge trailers.
pub const MAX_ERROR_MESSAGE_LEN: usize = 1024;

impl ServingError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ServingError { code, message: message.into(), kind: ErrorKind::of(code) }
    }
    /// The same error, of `kind` rather than its code's.
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }
    /// INVALID_ARGUMENT: the request itself is wrong.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }
    /// NOT_FOUND: no such model, version or label.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    /// FAILED_PRECONDITION: the server's state refuses it.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, message)
    }
    /// UNIMPLEMENTED: not offered.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(Code::Unimplemented, message)
    }
    /// INTERNAL: the server broke.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
    /// RESOURCE_EXHAUSTED: a limit was reached.
    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(Code::ResourceExhausted, message)
    }

    /// The message as sent on the wire: cut at 1024 bytes with `...TRUNCATED` appended.
    pub fn wire_message(&self) -> String {
        truncate_message(&self.message)
    }
}

/// Cuts a message the way TF Serving's gRPC layer does (at a char boundary).
pub fn truncate_message(message: &str) -> String {
    if message.len() <= MAX_ERROR_MESSAGE_LEN {
        return message.to_string();
    }
    let mut end = MAX_ERROR_MESSAGE_LEN;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...TRUNCATED", &message[..end])
}

impl fmt::Display for ServingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for ServingError {}

impl From<ServingError> for tonic::Status {
    fn from(e: ServingError) -> Self {
        tonic::Status::new(e.code.to_grpc(), e.wire_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_truncated_like_tf_serving() {
        let e = ServingError::invalid_argument("x".repeat(2000));
        let m = e.wire_message();
        assert_eq!(m.len(), 1024 + "...TRUNCATED".len());
        assert!(m.ends_with("x...TRUNCATED"));
        assert_eq!(ServingError::invalid_argument("short").wire_message(), "short");
    }

    #[test]
    fn codes_map_one_to_one_to_grpc() {
        assert_eq!(Code::NotFound.to_grpc(), tonic::Code::NotFound);
        assert_eq!(Code::FailedPrecondition.to_grpc(), tonic::Code::FailedPrecondition);
        assert_eq!(Code::Unauthenticated.to_grpc(), tonic::Code::Unauthenticated);
    }
}
