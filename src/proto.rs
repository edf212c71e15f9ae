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

/// Package `inference`: KServe V2 / Open Inference Protocol, with Triton's extensions.
pub mod inference {
    tonic::include_proto!("inference");
}

/// Package `tensorserve`: tensorserve's own files (no upstream schema).
pub mod tensorserve {
    tonic::include_proto!("tensorserve");
}

/// Serialized `FileDescriptorSet` of every schema above, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tensorserve_descriptor");

/// Parses protobuf text format into `T` (whose full name is `full_name`), with errors in TF's
/// words: `Error parsing text-format NAME: origin:line:column: detail`.
pub fn parse_text_format<T: prost::Message + Default>(
    full_name: &str,
    text: &str,
    origin: &str,
) -> Result<T, crate::error::ServingError> {
    use crate::error::ServingError;
    // prost-reflect's parser recurses once per nesting level with no limit of its own.
    if let Some(offset) = too_deep(text, MAX_TEXT_DEPTH) {
        let (line, column) = line_column(text, offset);
        return Err(ServingError::invalid_argument(format!(
            "Error parsing text-format {full_name}: {origin}:{line}:{column}: messages nested more than {MAX_TEXT_DEPTH} deep"
        )));
    }
    static POOL: std::sync::OnceLock<Result<prost_reflect::DescriptorPool, String>> = std::sync::OnceLock::new();
    let pool = POOL
        .get_or_init(|| prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| ServingError::internal(format!("bundled descriptors are unusable: {e}")))?;
    let descriptor = pool
        .get_message_by_name(full_name)
        .ok_or_else(|| ServingError::internal(format!("{full_name} missing from the descriptors")))?;
    let message = prost_reflect::DynamicMessage::parse_text_format(descriptor, text).map_err(|e| {
        let offset = miette::Diagnostic::labels(&e).and_then(|mut l| l.next()).map(|l| l.offset()).unwrap_or(0);
        let (line, column) = line_column(text, offset);
        ServingError::invalid_argument(format!("Error parsing text-format {full_name}: {origin}:{line}:{column}: {e}"))
    })?;
    message.transcode_to::<T>().map_err(|e| ServingError::internal(format!("{origin}: {e}")))
}

/// Nesting allowed in text-format files; TF Serving's deepest (a config with `Any` values) is under 10.
const MAX_TEXT_DEPTH: usize = 64;

/// The offset where `text` nests `{`/`<` deeper than `max`, outside strings and comments.
fn too_deep(text: &str, max: usize) -> Option<usize> {
    let (mut depth, mut quote, mut escaped, mut comment) = (0usize, None::<u8>, false, false);
    for (i, &b) in text.as_bytes().iter().enumerate() {
        if comment {
            comment = b != b'\n';
        } else if let Some(q) = quote {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'\n' => quote = None,
                _ if b == q => quote = None,
                _ => {}
            }
        } else {
            match b {
                b'#' => comment = true,
                b'"' | b'\'' => quote = Some(b),
                b'{' | b'<' | b'[' => {
                    depth += 1;
                    if depth > max {
                        return Some(i);
                    }
                }
                b'}' | b'>' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
