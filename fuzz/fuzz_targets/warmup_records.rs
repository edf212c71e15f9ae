//! A version's `assets.extra/tf_serving_warmup_requests`: TFRecord framing
//! (`repository::warmup::TfRecordReader`, lengths and masked CRC-32Cs), each record as a
//! `PredictionLog`, then the whole file replayed by `warmup::replay` (predict, classify,
//! regress and multi-inference records) on the servable the first record names (`fuzz` when
//! it names none that is served).
//!
//! Byte 0 picks how the rest becomes the file. Bit 0 clear: the rest is the file as is (the
//! framing and checksums are fuzzed; a mutated record rarely keeps a valid CRC). Bit 0 set: the
//! rest is records, each a 2-byte little-endian length then its bytes (the last takes what is
//! left), framed with valid CRCs by `warmup::write_tfrecord`, so mutations reach the
//! `PredictionLog`s; then bits 1-7, when not 0, cut that many bytes off the file's end.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tensorserve::model::{Servable, VersionChoice};
use tensorserve::proto::tensorflow::serving as pb;
use tensorserve::repository::warmup::{replay, write_tfrecord, TfRecordReader, MAX_WARMUP_RECORDS};

/// Where this process writes the file `replay` reads (tmpfs when there is one).
fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        dir.join(format!("tensorserve-fuzz-warmup-{}", std::process::id()))
    })
}

fn model_name(log: &pb::PredictionLog) -> Option<&str> {
    use pb::prediction_log::LogType;
    let spec = match log.log_type.as_ref()? {
        LogType::PredictLog(l) => l.request.as_ref()?.model_spec.as_ref(),
        LogType::ClassifyLog(l) => l.request.as_ref()?.model_spec.as_ref(),
        LogType::RegressLog(l) => l.request.as_ref()?.model_spec.as_ref(),
        LogType::MultiInferenceLog(l) => l.request.as_ref()?.tasks.first()?.model_spec.as_ref(),
        _ => None,
    };
    spec.map(|s| s.name.as_str())
}

/// The target's one call of `warmup::replay` (it takes the front ends' serving options).
fn replay_file(servable: &Servable) {
    let report = replay(servable, file(), &tensorserve_fuzz::serving_options(false));
    tensorserve_fuzz::debug(|| format!("{} v{}: {report:?}", servable.name, servable.version));
}

/// Records mode: 2-byte length-prefixed records, framed with valid checksums.
fn framed(mut rest: &[u8], cut: usize) -> Vec<u8> {
    let mut records = Vec::new();
    while !rest.is_empty() {
        let len = match rest {
            [a, b, tail @ ..] => {
                rest = tail;
                usize::from(u16::from_le_bytes([*a, *b]))
            }
            _ => std::mem::take(&mut rest).len(),
        };
        let (record, tail) = rest.split_at(len.min(rest.len()));
        records.push(record.to_vec());
        rest = tail;
    }
    let mut file = write_tfrecord(&records);
    file.truncate(file.len().saturating_sub(cut));
    file
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else { return };
    let owned;
    let data = if mode & 1 == 0 {
        rest
    } else {
        owned = framed(rest, usize::from(mode >> 1));
        &owned[..]
    };
    let mut reader = TfRecordReader::new(data);
    let mut records = 0usize;
    let mut first_name = None;
    while let Some(record) = reader.next_record() {
        // After an error the reader does not move on: stop at the first one, as replay does.
        let Ok(record) = record else { break };
        records += 1;
        if let Ok(log) = pb::PredictionLog::decode(record) {
            if first_name.is_none() {
                first_name = model_name(&log).map(str::to_string);
            }
        }
        if records > MAX_WARMUP_RECORDS {
            break;
        }
    }
    let registry = &tensorserve_fuzz::fixture().registry;
    let servable = first_name
        .and_then(|name| registry.resolve(&name, &VersionChoice::Latest).ok())
        .or_else(|| registry.resolve("fuzz", &VersionChoice::Latest).ok())
        .expect("the fixture serves fuzz");
    std::fs::write(file(), data).expect("write the warmup file");
    replay_file(&servable);
});
