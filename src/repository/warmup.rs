//! Model warmup: replays `assets.extra/tf_serving_warmup_requests` (a TFRecord file of
//! `PredictionLog`s: predict, classify, regress and multi-inference records) before a version
//! turns AVAILABLE, as TF Serving does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost::Message;

use crate::error::ServingError;
use crate::model::Servable;
use crate::proto::tensorflow::serving as pb;
use crate::serving::ServingOptions;
use crate::tensor::proto::decode;

/// Where TF Serving looks for warmup data inside a version directory.
pub const WARMUP_FILE: &str = "assets.extra/tf_serving_warmup_requests";

/// TF Serving refuses warmup files with more records than this.
pub const MAX_WARMUP_RECORDS: usize = 1000;

/// What a warmup did.
#[derive(Debug, Default, PartialEq)]
pub struct WarmupReport {
    /// Records replayed.
    pub records: usize,
    /// Wall time of the replay.
    pub elapsed: Duration,
}

/// Reads TFRecord framing: `u64 len, u32 masked_crc(len), data, u32 masked_crc(data)`.
pub struct TfRecordReader<'a> {
    /// The unread rest of the file.
    rest: &'a [u8],
}

/// TFRecord's CRC masking (a rotation plus a constant), so CRCs of CRCs stay useful.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

impl<'a> TfRecordReader<'a> {
    /// A reader over a whole file's bytes.
    pub fn new(bytes: &'a [u8]) -> Self {
        TfRecordReader { rest: bytes }
    }

    /// The next record, `None` at a clean end, an error on truncation or a bad checksum.
    pub fn next_record(&mut self) -> Option<Result<&'a [u8], String>> {
        if self.rest.is_empty() {
            return None;
        }
        Some(self.read())
    }

    fn read(&mut self) -> Result<&'a [u8], String> {
        let header = self.rest.get(..12).ok_or("truncated record header")?;
        let (len_bytes, len_crc) = header.split_at(8);
        if masked_crc(len_bytes) != u32::from_le_bytes(len_crc.try_into().unwrap()) {
            return Err("corrupted record length (checksum mismatch)".into());
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap());
        // The length is checked against the bytes present before it sizes anything.
        let body_end = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(12))
            .filter(|&e| e.checked_add(4).is_some_and(|with_crc| with_crc <= self.rest.len()));
        let end = body_end.ok_or_else(|| format!("record of {len} bytes runs past the end of the file"))?;
        let data = &self.rest[12..end];
        let crc = u32::from_le_bytes(self.rest[end..end + 4].try_into().unwrap());
        if masked_crc(data) != crc {
            return Err("corrupted record data (checksum mismatch)".into());
        }
        self.rest = &self.rest[end + 4..];
        Ok(data)
    }
}

/// One record in TFRecord framing.
pub fn tfrecord_frame(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + 16);
    let len = (record.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(record);
    out.extend_from_slice(&masked_crc(record).to_le_bytes());
    out
}

/// Frames `records` as a TFRecord file (for tests and tools that write warmup data).
pub fn write_tfrecord(records: &[Vec<u8>]) -> Vec<u8> {
    records.iter().flat_map(|r| tfrecord_frame(r)).collect()
}

/// The warmup file of a version directory, if it has one.
pub fn warmup_file(version_dir: &Path) -> Option<PathBuf> {
    let path = version_dir.join(WARMUP_FILE);
    path.is_file().then_some(path)
}

/// Replays every record of `file` on `servable`; any failure fails the load, as in TF Serving.
pub fn replay(servable: &Servable, file: &Path, options: &ServingOptions) -> Result<WarmupReport, ServingError> {
    let fail = |detail: String| ServingError::invalid_argument(format!("warmup {}: {detail}", file.display()));
    let bytes = std::fs::read(file).map_err(|e| fail(e.to_string()))?;
    let start = Instant::now();
    let mut reader = TfRecordReader::new(&bytes);
    let mut records = 0;
    while let Some(record) = reader.next_record() {
        let record = record.map_err(|e| fail(format!("record {records}: {e}")))?;
        records += 1;
        if records > MAX_WARMUP_RECORDS {
            return Err(fail(format!("Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS})")));
        }
        let log = pb::PredictionLog::decode(record).map_err(|e| fail(format!("record {}: {e}", records - 1)))?;
        run_one(servable, log, options).map_err(|e| fail(format!("record {}: {}", records - 1, e.message)))?;
    }
    Ok(WarmupReport { records, elapsed: start.elapsed() })
}

fn run_one(servable: &Servable, log: pb::PredictionLog, options: &ServingOptions) -> Result<(), ServingError> {
    use pb::prediction_log::LogType;
    match log.log_type {
        Some(LogType::PredictLog(p)) => {
            let request = p.request.unwrap_or_default();
            let signature = request.model_spec.map(|s| s.signature_name).unwrap_or_default();
            let call = crate::serving::prepare_predict(
                servable,
                &signature,
                request.inputs,
                &request.output_filter,
                |alias, t| {
                    decode(t, &options.decode_limits)
                        .map_err(|e| ServingError::new(e.code, format!("tensor parsing error: {alias} ({})", e.detail)))
                },
            )?;
            crate::serving::check_predict_method(options, call.signature)?;
            let job = crate::core::Job {
                signature: call.signature_name.to_string(),
                inputs: call.inputs,
                outputs: call.outputs,
                deadline: None,
                origin: crate::core::Origin { api: "warmup", front_end: "internal" },
            };
            servable.runtime.run_here(job).map(drop)
        }
        Some(_) => crate::api::tfs::inference::run_log_blocking(servable, &log, options),
        None => Err(ServingError::invalid_argument("PredictionLog has no log_type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tfrecord_round_trip_and_corruption() {
        let file = write_tfrecord(&[b"hello".to_vec(), Vec::new(), vec![7; 300]]);
        let mut r = TfRecordReader::new(&file);
        assert_eq!(r.next_record().unwrap().unwrap(), b"hello");
        assert_eq!(r.next_record().unwrap().unwrap(), b"");
        assert_eq!(r.next_record().unwrap().unwrap().len(), 300);
        assert!(r.next_record().is_none());

        let mut bad = file.clone();
        bad[14] ^= 1;
        assert!(TfRecordReader::new(&bad).next_record().unwrap().unwrap_err().contains("checksum"));
        // A huge declared length with a valid length checksum is refused before anything is sized by it.
        // Lengths whose end (header + data + CRC) overflows usize, not only u64::MAX itself.
        for huge in [u64::MAX, u64::MAX - 12, u64::MAX - 13, u64::MAX - 15] {
            let len = huge.to_le_bytes();
            let mut bomb = len.to_vec();
            bomb.extend_from_slice(&masked_crc(&len).to_le_bytes());
            assert!(TfRecordReader::new(&bomb).next_record().unwrap().unwrap_err().contains("past the end"), "{huge}");
        }
        assert!(TfRecordReader::new(&file[..20]).next_record().unwrap().is_err());
    }

    #[test]
    fn masked_crc_matches_tensorflow() {
        // TensorFlow's masked CRC-32C of an empty record's length field (8 zero bytes).
        let zero = [0u8; 8];
        let crc = crc32c::crc32c(&zero);
        assert_eq!(masked_crc(&zero), crc.rotate_right(15).wrapping_add(0xa282ead8));
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }
}
