//! Hot-reload soak: Predict load from several clients while versions are swapped on disk,
//! optionally mixed with REST clients and hostile requests.
//!
//! Starts the `tensorserve` binary on a temporary base path (127.0.0.1 only), runs
//! `--clients` concurrent Predict loops on the latest version, and every
//! `--interval-ms` adds version N+1 (written aside, then renamed in) and removes the
//! oldest, `--swaps` times (or for `--duration-secs`). Reports requests sent and failed, the
//! versions answers came from, and the server's RSS before and after; exits 1 if any request
//! failed, RSS grew by more than 10 %, the server died, or the swaps were not seen. The baseline
//! RSS is taken after `--warmup-swaps` (5) uncounted swaps: the first loads grow allocator arenas
//! once (a plateau, not a leak; the per-10-swaps log shows it flat afterwards); baseline and
//! final RSS are each the median of 5 readings over a second. The server's RSS is also sampled
//! every 10 s (a line each, and the max); its stderr is saved to a file whose path is printed.
//!
//! `--mixed` adds `--rest-clients` (2) REST loops (`POST /v1/models/soak:predict`, over a
//! hand-written HTTP/1.1 keep-alive client) and turns `--bad-percent` (10) of every client's
//! requests into malformed or hostile ones, rotating through a fixed set on both protocols
//! (wrong dtype, unknown alias, missing model, a 2 GB shape from one float, 20,000 empty map
//! entries, garbage protobuf bytes, garbage and truncated JSON, ...). Each must get its expected
//! code; a gRPC client sends its bad requests on its neighbour's connection, so they share an
//! HTTP/2 connection with valid requests in flight. Exits 1 also if any bad request got an
//! unexpected answer (success, wrong code, timeout).
//!
//! ```text
//! cargo run --release --example soak -- [--bin target/release/tensorserve] [--swaps 100 | --duration-secs N]
//!     [--clients 8] [--interval-ms 1000] [--warmup-swaps 5] [--control] [--server-flag --x=y]...
//!     [--mixed [--rest-clients 2] [--bad-percent 10]]
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, BufMut, Bytes};
use prost::Message as _;
use tensorserve::proto::tensorflow as tf;
use tensorserve::proto::tensorflow::serving as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

type Client = pb::prediction_service_client::PredictionServiceClient<Channel>;

/// The model name the soak serves.
const MODEL: &str = "soak";

/// Longest wait for one answer; a request still unanswered then counts as failed (a hang).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the server's RSS is sampled and printed.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Command-line settings.
struct Args {
    /// The server binary.
    bin: PathBuf,
    /// Number of version swaps (ignored with `duration`).
    swaps: u32,
    /// Run for this long (after the warm-up), swapping every `interval`, instead of `swaps` swaps.
    duration: Option<Duration>,
    /// Concurrent gRPC Predict loops.
    clients: usize,
    /// Concurrent REST predict loops (with `--mixed`).
    rest_clients: usize,
    /// Percentage of each client's requests that are bad (with `--mixed`).
    bad_percent: u64,
    /// Add REST clients and bad requests.
    mixed: bool,
    /// Time between swaps.
    interval: Duration,
    /// Swaps before the RSS baseline is taken, so it includes a warm allocator and one load/unload cycle.
    warmup_swaps: u32,
    /// Control run: the same load and duration, no swaps.
    control: bool,
    /// Extra server flags (`--server-flag --x=y`, repeatable).
    server_flags: Vec<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        bin: PathBuf::from("target/release/tensorserve"),
        swaps: 100,
        duration: None,
        clients: 8,
        rest_clients: 2,
        bad_percent: 10,
        mixed: false,
        interval: Duration::from_secs(1),
        warmup_swaps: 5,
        control: false,
        server_flags: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--control" => {
                args.control = true;
                continue;
            }
            "--mixed" => {
                args.mixed = true;
                continue;
            }
            _ => {}
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => args.bin = value.into(),
            "--swaps" => args.swaps = value.parse().expect("--swaps N"),
            "--duration-secs" => args.duration = Some(Duration::from_secs(value.parse().expect("--duration-secs N"))),
            "--warmup-swaps" => args.warmup_swaps = value.parse().expect("--warmup-swaps N"),
            "--clients" => args.clients = value.parse().expect("--clients N"),
            "--rest-clients" => args.rest_clients = value.parse().expect("--rest-clients N"),
            "--bad-percent" => args.bad_percent = value.parse().expect("--bad-percent N"),
            "--server-flag" => args.server_flags.push(value),
            "--interval-ms" => args.interval = Duration::from_millis(value.parse().expect("--interval-ms N")),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(args.bad_percent <= 100, "--bad-percent is at most 100");
    if !args.mixed {
        args.rest_clients = 0;
        args.bad_percent = 0;
    }
    args
}

/// A numeric field of /proc/<pid>/status (`VmRSS` in KiB, `Threads`).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
}

/// RSS of `pid` in KiB, the median of 5 readings 200 ms apart (one reading swings with the
/// allocator's frees under load; the baseline and the final figure should not).
async fn rss_settled_kib(pid: u32) -> u64 {
    let mut readings = Vec::with_capacity(5);
    for i in 0..5 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        readings.push(rss_kib(pid));
    }
    readings.sort_unstable();
    readings[2]
}

/// Puts `base/<version>/model.onnx` in place atomically: written under a non-version name, then renamed.
fn add_version(base: &Path, version: u64) {
    let staging = base.join(format!(".staging-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), tensorserve::examples::DIGITS_MLP_ONNX).unwrap();
    std::fs::rename(&staging, base.join(version.to_string())).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The 64 pixels every valid request sends.
fn pixels() -> Vec<f32> {
    (0..64).map(|i| (i % 17) as f32).collect()
}

fn shape(dims: &[i64]) -> Option<tf::TensorShapeProto> {
    Some(tf::TensorShapeProto {
        dim: dims.iter().map(|&size| tf::tensor_shape_proto::Dim { size, name: String::new() }).collect(),
        unknown_rank: false,
    })
}

fn predict_request(model: &str, inputs: Vec<(String, tf::TensorProto)>) -> pb::PredictRequest {
    pb::PredictRequest {
        model_spec: Some(pb::ModelSpec { name: model.into(), ..Default::default() }),
        inputs: inputs.into_iter().collect(),
        ..Default::default()
    }
}

fn valid_tensor() -> tf::TensorProto {
    tf::TensorProto {
        dtype: tf::DataType::DtFloat as i32,
        tensor_shape: shape(&[1, 64]),
        float_val: pixels(),
        ..Default::default()
    }
}

fn request() -> pb::PredictRequest {
    predict_request(MODEL, vec![("x".to_string(), valid_tensor())])
}

/// The valid REST body: one instance of 64 pixels.
fn rest_body() -> String {
    let values: Vec<String> = pixels().iter().map(|p| format!("{p:.1}")).collect();
    format!("{{\"instances\": [[{}]]}}", values.join(", "))
}

fn rest_predict_path(model: &str) -> String {
    format!("/v1/models/{model}:predict")
}

// ---------------------------------------------------------------------------------------------
// Bad requests

/// The malformed or hostile requests, each with the one answer it must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bad {
    /// `x` as DT_INT32: INVALID_ARGUMENT.
    GrpcWrongDtype,
    /// The tensor under an alias the signature lacks: INVALID_ARGUMENT.
    GrpcUnknownAlias,
    /// A model that does not exist: NOT_FOUND.
    GrpcMissingModel,
    /// Shape [500000000] from one float_val (2 GB when filled): RESOURCE_EXHAUSTED by the memory budget.
    GrpcHugeShape,
    /// 20,000 empty `inputs` map entries (`12 00` on the wire): INVALID_ARGUMENT.
    GrpcEmptyMapEntries,
    /// 20,000 distinct aliases, each an empty TensorProto: INVALID_ARGUMENT.
    GrpcManyInputs,
    /// Bytes that are no PredictRequest: INVALID_ARGUMENT (undecodable).
    GrpcGarbageBytes,
    /// `tensor_content` of 7 bytes for a [1,64] float: INVALID_ARGUMENT.
    GrpcWrongContentLength,
    /// Strings for the float input: 400.
    RestWrongDtype,
    /// Columnar inputs under an unknown name: 400.
    RestUnknownAlias,
    /// A model that does not exist: 404.
    RestMissingModel,
    /// Text that is no JSON: 400.
    RestGarbageJson,
    /// The valid body cut in half: 400.
    RestTruncatedJson,
    /// Bytes that are not UTF-8: 400.
    RestBinaryBody,
}

const GRPC_BAD: [Bad; 8] = [
    Bad::GrpcWrongDtype,
    Bad::GrpcUnknownAlias,
    Bad::GrpcMissingModel,
    Bad::GrpcHugeShape,
    Bad::GrpcEmptyMapEntries,
    Bad::GrpcManyInputs,
    Bad::GrpcGarbageBytes,
    Bad::GrpcWrongContentLength,
];

const REST_BAD: [Bad; 6] = [
    Bad::RestWrongDtype,
    Bad::RestUnknownAlias,
    Bad::RestMissingModel,
    Bad::RestGarbageJson,
    Bad::RestTruncatedJson,
    Bad::RestBinaryBody,
];

const ALL_BAD: usize = GRPC_BAD.len() + REST_BAD.len();

impl Bad {
    fn index(self) -> usize {
        self as usize
    }

    fn all() -> impl Iterator<Item = Bad> {
        GRPC_BAD.into_iter().chain(REST_BAD)
    }

    fn name(self) -> &'static str {
        match self {
            Bad::GrpcWrongDtype => "grpc wrong dtype (DT_INT32)",
            Bad::GrpcUnknownAlias => "grpc unknown input alias",
            Bad::GrpcMissingModel => "grpc missing model",
            Bad::GrpcHugeShape => "grpc shape [500000000], one float_val",
            Bad::GrpcEmptyMapEntries => "grpc 20,000 empty inputs map entries",
            Bad::GrpcManyInputs => "grpc 20,000 aliases of empty tensors",
            Bad::GrpcGarbageBytes => "grpc garbage bytes as PredictRequest",
            Bad::GrpcWrongContentLength => "grpc tensor_content of wrong length",
            Bad::RestWrongDtype => "rest wrong dtype (strings)",
            Bad::RestUnknownAlias => "rest unknown input alias",
            Bad::RestMissingModel => "rest missing model",
            Bad::RestGarbageJson => "rest garbage JSON",
            Bad::RestTruncatedJson => "rest truncated JSON",
            Bad::RestBinaryBody => "rest binary (non-UTF-8) body",
        }
    }

    /// The gRPC code it must get, and text the message must hold.
    fn expected_grpc(self) -> (Code, Option<&'static str>) {
        match self {
            Bad::GrpcMissingModel => (Code::NotFound, None),
            Bad::GrpcHugeShape => (Code::ResourceExhausted, Some("memory budget")),
            _ => (Code::InvalidArgument, None),
        }
    }

    /// The HTTP status it must get.
    fn expected_http(self) -> u16 {
        match self {
            Bad::RestMissingModel => 404,
            _ => 400,
        }
    }
}

/// The bad requests' wire forms, built once.
struct Payloads {
    /// Encoded PredictRequests (or garbage) by `Bad::index`, for gRPC kinds.
    grpc: Vec<Vec<Bytes>>,
    /// (path, body) by `Bad::index`, for REST kinds.
    rest: Vec<Vec<(String, Vec<u8>)>>,
}

/// A small deterministic generator for garbage bytes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

impl Payloads {
    fn build() -> Payloads {
        let encode = |r: pb::PredictRequest| Bytes::from(r.encode_to_vec());
        let mut grpc = vec![Vec::new(); ALL_BAD];
        let mut rest = vec![Vec::new(); ALL_BAD];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        grpc[Bad::GrpcWrongDtype.index()].push(encode(predict_request(
            MODEL,
            vec![(
                "x".into(),
                tf::TensorProto {
                    dtype: tf::DataType::DtInt32 as i32,
                    tensor_shape: shape(&[1, 64]),
                    int_val: (0..64).collect(),
                    ..Default::default()
                },
            )],
        )));
        grpc[Bad::GrpcUnknownAlias.index()]
            .push(encode(predict_request(MODEL, vec![("not_an_input".into(), valid_tensor())])));
        grpc[Bad::GrpcMissingModel.index()]
            .push(encode(predict_request("no_such_model", vec![("x".into(), valid_tensor())])));
        grpc[Bad::GrpcHugeShape.index()].push(encode(predict_request(
            MODEL,
            vec![(
                "x".into(),
                tf::TensorProto {
                    dtype: tf::DataType::DtFloat as i32,
                    tensor_shape: shape(&[500_000_000]),
                    float_val: vec![1.0],
                    ..Default::default()
                },
            )],
        )));
        // A model spec, then field 2 (inputs), length 0, 20,000 times: each entry is key "" and an
        // empty TensorProto; prost keeps one of them.
        let mut empty_entries = predict_request(MODEL, Vec::new()).encode_to_vec();
        for _ in 0..20_000 {
            empty_entries.extend_from_slice(&[0x12, 0x00]);
        }
        grpc[Bad::GrpcEmptyMapEntries.index()].push(Bytes::from(empty_entries));
        grpc[Bad::GrpcManyInputs.index()].push(encode(predict_request(
            MODEL,
            (0..20_000).map(|i| (format!("in{i:05}"), tf::TensorProto::default())).collect(),
        )));
        let garbage = &mut grpc[Bad::GrpcGarbageBytes.index()];
        // Field 1 (model_spec) with a length far past the end.
        let mut g = vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f];
        g.extend(rng.bytes(64));
        garbage.push(Bytes::from(g));
        // A tag varint that never ends.
        garbage.push(Bytes::from(vec![0xff; 16]));
        // Field 1 as a group start (wire type 3), then noise.
        let mut g = vec![0x0b];
        g.extend(rng.bytes(200));
        garbage.push(Bytes::from(g));
        // A valid request with garbage appended after a length-delimited field cut short.
        let mut g = request().encode_to_vec();
        g.extend_from_slice(&[0x12, 0x40, 0x01, 0x02]);
        garbage.push(Bytes::from(g));
        grpc[Bad::GrpcWrongContentLength.index()].push(encode(predict_request(
            MODEL,
            vec![(
                "x".into(),
                tf::TensorProto {
                    dtype: tf::DataType::DtFloat as i32,
                    tensor_shape: shape(&[1, 64]),
                    tensor_content: Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7]),
                    ..Default::default()
                },
            )],
        )));

        let path = rest_predict_path(MODEL);
        let strings: Vec<String> = (0..64).map(|i| format!("\"s{i}\"")).collect();
        rest[Bad::RestWrongDtype.index()]
            .push((path.clone(), format!("{{\"instances\": [[{}]]}}", strings.join(", ")).into_bytes()));
        let values: Vec<String> = pixels().iter().map(|p| format!("{p:.1}")).collect();
        rest[Bad::RestUnknownAlias.index()].push((
            path.clone(),
            format!("{{\"inputs\": {{\"not_an_input\": [[{}]]}}}}", values.join(", ")).into_bytes(),
        ));
        rest[Bad::RestUnknownAlias.index()].push((
            path.clone(),
            format!("{{\"instances\": [{{\"not_an_input\": [{}]}}]}}", values.join(", ")).into_bytes(),
        ));
        rest[Bad::RestMissingModel.index()].push((rest_predict_path("no_such_model"), rest_body().into_bytes()));
        let garbage_json = &mut rest[Bad::RestGarbageJson.index()];
        garbage_json.push((path.clone(), b"{]]] this is not json".to_vec()));
        garbage_json.push((path.clone(), b"instances=1,2,3".to_vec()));
        garbage_json.push((path.clone(), b"{\"instances\": [[1.0, 2.0]]}}}}".to_vec()));
        let body = rest_body();
        rest[Bad::RestTruncatedJson.index()].push((path.clone(), body.as_bytes()[..body.len() / 2].to_vec()));
        rest[Bad::RestTruncatedJson.index()].push((path.clone(), b"{\"instances\": [[".to_vec()));
        let mut binary = vec![0xff, 0xfe, 0x00];
        binary.extend(rng.bytes(256));
        rest[Bad::RestBinaryBody.index()].push((path, binary));
        Payloads { grpc, rest }
    }
}

/// Sends raw bytes as a gRPC message and returns the raw answer.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client

/// One keep-alive HTTP/1.1 connection, written by hand (the crate has no HTTP client).
struct HttpClient {
    addr: SocketAddr,
    conn: Option<tokio::net::TcpStream>,
    /// Received bytes not yet consumed.
    buf: Vec<u8>,
    /// Times a reused connection was found closed before any answer and the request re-sent.
    reconnects: u64,
    /// The head of the current answer has arrived (a reset now is no idle close).
    in_body: bool,
}

/// How one exchange failed.
enum HttpError {
    /// A reused connection closed before any byte of the answer: safe to retry once.
    ClosedIdle,
    Other(String),
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl HttpClient {
    fn new(addr: SocketAddr) -> Self {
        HttpClient { addr, conn: None, buf: Vec::new(), reconnects: 0, in_body: false }
    }

    /// POSTs `body` to `path`: the status and body of the answer.
    async fn post(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            if self.conn.is_none() {
                let stream = tokio::net::TcpStream::connect(self.addr)
                    .await
                    .map_err(|e| format!("connect to {}: {e}", self.addr))?;
                let _ = stream.set_nodelay(true);
                self.conn = Some(stream);
                self.buf.clear();
            }
            match self.exchange(path, body).await {
                Ok(answer) => return Ok(answer),
                Err(HttpError::ClosedIdle) if reused && attempt == 0 => {
                    self.conn = None;
                    self.reconnects += 1;
                }
                Err(HttpError::ClosedIdle) => {
                    self.conn = None;
                    return Err("connection closed before any answer".into());
                }
                Err(HttpError::Other(e)) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Reads more bytes into `buf`; false at end of stream.
    async fn fill(&mut self) -> Result<bool, HttpError> {
        let conn = self.conn.as_mut().expect("connected");
        let mut chunk = [0u8; 16 * 1024];
        match conn.read(&mut chunk).await {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n > 0)
            }
            // A reset before any byte of the answer is a closed idle connection too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && self.buf.is_empty() && !self.in_body => {
                Err(HttpError::ClosedIdle)
            }
            Err(e) => Err(HttpError::Other(format!("read: {e}"))),
        }
    }

    async fn exchange(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.in_body = false;
        let conn = self.conn.as_mut().expect("connected");
        if let Err(e) = conn.write_all(&request).await {
            return Err(match e.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => HttpError::ClosedIdle,
                _ => HttpError::Other(format!("write: {e}")),
            });
        }
        // The head.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) if self.buf.is_empty() => return Err(HttpError::ClosedIdle),
                Ok(false) => return Err(HttpError::Other("connection closed inside the response head".into())),
                Err(e) => return Err(e),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        self.in_body = true;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| HttpError::Other(format!("bad status line {status_line:?}")))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    if !self.fill().await? {
                        return Err(HttpError::Other("connection closed inside a chunked body".into()));
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| HttpError::Other(format!("bad chunk size {size_text:?}")))?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    if !self.fill().await? {
                        return Err(HttpError::Other("connection closed inside a chunk".into()));
                    }
                }
                body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
                if size == 0 {
                    break body;
                }
            }
        } else if let Some(n) = length {
            while self.buf.len() < n {
                if !self.fill().await? {
                    return Err(HttpError::Other("connection closed inside the body".into()));
                }
            }
            self.buf.drain(..n).collect()
        } else {
            while self.fill().await? {}
            close = true;
            std::mem::take(&mut self.buf)
        };
        if close {
            self.conn = None;
        }
        Ok((status, body))
    }
}

// ---------------------------------------------------------------------------------------------
// Tallies

/// Valid requests of one protocol.
#[derive(Default)]
struct ValidTally {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Bad requests of one kind.
#[derive(Default)]
struct BadTally {
    sent: AtomicU64,
    expected: AtomicU64,
    unexpected: AtomicU64,
    /// The first answer it got, for the summary.
    example: Mutex<Option<String>>,
}

/// Counters the client loops share.
struct Tally {
    /// When the load started, for the times in error lines.
    started: Instant,
    /// gRPC (0) and REST (1) valid requests.
    valid: [ValidTally; 2],
    /// Bad requests by `Bad::index`.
    bad: Vec<BadTally>,
    /// The first few failed valid requests and unexpected answers.
    errors: Mutex<Vec<String>>,
    /// Versions that answered.
    versions: Mutex<BTreeSet<i64>>,
    /// Reconnects of the REST clients (a reused keep-alive connection closed by the server).
    rest_reconnects: AtomicU64,
}

const GRPC: usize = 0;
const REST: usize = 1;

/// The time now, UTC, as the server's log prints it (to find the matching lines).
fn utc_now() -> String {
    let d = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

impl Tally {
    fn new() -> Tally {
        Tally {
            started: Instant::now(),
            valid: Default::default(),
            bad: (0..ALL_BAD).map(|_| BadTally::default()).collect(),
            errors: Mutex::new(Vec::new()),
            versions: Mutex::new(BTreeSet::new()),
            rest_reconnects: AtomicU64::new(0),
        }
    }

    fn note(&self, what: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(format!("[{} = +{:.1} s] {what}", utc_now(), self.started.elapsed().as_secs_f64()));
        }
    }

    fn valid_sent(&self) -> u64 {
        self.valid.iter().map(|v| v.ok.load(Ordering::Relaxed) + v.failed.load(Ordering::Relaxed)).sum()
    }

    fn valid_failed(&self) -> u64 {
        self.valid.iter().map(|v| v.failed.load(Ordering::Relaxed)).sum()
    }

    fn bad_sum(&self, f: impl Fn(&BadTally) -> &AtomicU64) -> u64 {
        self.bad.iter().map(|b| f(b).load(Ordering::Relaxed)).sum()
    }

    fn requests(&self) -> u64 {
        self.valid_sent() + self.bad_sum(|b| &b.sent)
    }

    /// Counts one bad request's answer (`answer`, as printed): `Err(why)` when it was not the expected one.
    fn judge(&self, kind: Bad, answer: String, verdict: Result<(), String>) {
        let t = &self.bad[kind.index()];
        t.sent.fetch_add(1, Ordering::Relaxed);
        t.example.lock().unwrap().get_or_insert(answer);
        match verdict {
            Ok(()) => {
                t.expected.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                t.unexpected.fetch_add(1, Ordering::Relaxed);
                self.note(format!("bad request {:?} ({}): {why}", kind, kind.name()));
            }
        }
    }
}

/// Whether the `n`-th request (from 1) of a client is a bad one, for `percent` % of them.
fn is_bad(n: u64, percent: u64) -> bool {
    percent > 0 && (n * percent / 100) > ((n - 1) * percent / 100)
}

/// What a client loop hands back: latencies of its valid requests, in microseconds.
type Latencies = Vec<u32>;

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

// ---------------------------------------------------------------------------------------------
// Client loops

/// Sends `payload` to Predict as raw bytes: the answer, and the verdict against `kind`'s expected one.
async fn send_grpc_bad(
    raw: &mut tonic::client::Grpc<Channel>,
    kind: Bad,
    payload: Bytes,
) -> (String, Result<(), String>) {
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/tensorflow.serving.PredictionService/Predict");
    let call = async {
        raw.ready().await.map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
        raw.unary(tonic::Request::new(payload), path, RawCodec).await
    };
    let (code, text) = kind.expected_grpc();
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Err(_) => ("(none)".into(), Err(format!("no answer within {REQUEST_TIMEOUT:?}"))),
        Ok(Ok(r)) => (
            format!("OK, {} bytes", r.get_ref().len()),
            Err(format!("succeeded ({} bytes of response); expected {code:?}", r.get_ref().len())),
        ),
        Ok(Err(s)) => {
            let answer = format!("{:?}: {}", s.code(), s.message());
            let verdict = if s.code() != code {
                Err(format!("got {answer}; expected {code:?}"))
            } else if let Some(t) = text.filter(|t| !s.message().contains(t)) {
                Err(format!("got {answer}, whose message lacks {t:?}"))
            } else {
                Ok(())
            };
            (answer, verdict)
        }
    }
}

/// Loop of one gRPC client: valid Predicts on `own`, bad ones (with `--mixed`) on `neighbour`,
/// a connection another client's valid requests are using at the same time.
async fn grpc_loop(
    id: usize,
    own: Channel,
    neighbour: Channel,
    bad_percent: u64,
    payloads: Arc<Payloads>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Latencies {
    let mut client = Client::new(own);
    let mut raw = tonic::client::Grpc::new(neighbour);
    let mut seen = BTreeSet::new();
    let mut latencies = Vec::new();
    let (mut n, mut bad_turn) = (0u64, id);
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if is_bad(n, bad_percent) {
            let kind = GRPC_BAD[bad_turn % GRPC_BAD.len()];
            let variants = &payloads.grpc[kind.index()];
            let payload = variants[(bad_turn / GRPC_BAD.len()) % variants.len()].clone();
            bad_turn += 1;
            let (answer, verdict) = send_grpc_bad(&mut raw, kind, payload).await;
            tally.judge(kind, answer, verdict);
            continue;
        }
        let start = Instant::now();
        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, client.predict(request())).await {
            Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
            Ok(Err(e)) => Err(format!("{:?}: {}", e.code(), e.message())),
            Ok(Ok(r)) => {
                let r = r.into_inner();
                if let Some(pb::model_spec::VersionChoice::Version(v)) =
                    r.model_spec.as_ref().and_then(|s| s.version_choice.clone())
                {
                    seen.insert(v);
                }
                match r.outputs.get("scores") {
                    Some(t) if t.float_val.len() == 10 || t.tensor_content.len() == 40 => Ok(()),
                    _ => Err(format!("OK but no 10 scores in the outputs {:?}", r.outputs.keys().collect::<Vec<_>>())),
                }
            }
        };
        match outcome {
            Ok(()) => {
                latencies.push(micros(start.elapsed()));
                tally.valid[GRPC].ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tally.valid[GRPC].failed.fetch_add(1, Ordering::Relaxed);
                tally.note(format!("valid gRPC Predict (client {id}) failed: {e}"));
            }
        }
    }
    tally.versions.lock().unwrap().extend(seen);
    latencies
}

/// Loop of one REST client on one keep-alive connection, bad requests interleaved on it.
async fn rest_loop(
    id: usize,
    addr: SocketAddr,
    bad_percent: u64,
    payloads: Arc<Payloads>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Latencies {
    let mut http = HttpClient::new(addr);
    let (path, body) = (rest_predict_path(MODEL), rest_body().into_bytes());
    let mut latencies = Vec::new();
    let (mut n, mut bad_turn) = (0u64, id);
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if is_bad(n, bad_percent) {
            let kind = REST_BAD[bad_turn % REST_BAD.len()];
            let variants = &payloads.rest[kind.index()];
            let (bad_path, bad_body) = &variants[(bad_turn / REST_BAD.len()) % variants.len()];
            bad_turn += 1;
            let expected = kind.expected_http();
            let (answer, verdict) = match tokio::time::timeout(REQUEST_TIMEOUT, http.post(bad_path, bad_body)).await {
                Err(_) => {
                    http.conn = None;
                    ("(none)".into(), Err(format!("no answer within {REQUEST_TIMEOUT:?}")))
                }
                Ok(Err(e)) => (e.clone(), Err(format!("transport error: {e}"))),
                Ok(Ok((status, body))) => {
                    let answer = format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
                    let verdict = if status != expected {
                        Err(format!("got {answer}; expected {expected}"))
                    } else if !answer.contains("\"error\"") {
                        Err(format!("{answer}: no error body"))
                    } else {
                        Ok(())
                    };
                    (answer, verdict)
                }
            };
            tally.judge(kind, answer, verdict);
            continue;
        }
        let start = Instant::now();
        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, http.post(&path, &body)).await {
            Err(_) => {
                http.conn = None;
                Err(format!("no answer within {REQUEST_TIMEOUT:?}"))
            }
            Ok(Err(e)) => Err(format!("transport error: {e}")),
            Ok(Ok((200, answer))) if answer.starts_with(b"{\"predictions\"") => Ok(()),
            Ok(Ok((status, answer))) => Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&answer).trim())),
        };
        match outcome {
            Ok(()) => {
                latencies.push(micros(start.elapsed()));
                tally.valid[REST].ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tally.valid[REST].failed.fetch_add(1, Ordering::Relaxed);
                tally.note(format!("valid REST predict (client {id}) failed: {e}"));
            }
        }
    }
    tally.rest_reconnects.fetch_add(http.reconnects, Ordering::Relaxed);
    latencies
}

// ---------------------------------------------------------------------------------------------

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `q` quantile of sorted latencies, in milliseconds.
fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let base = std::env::temp_dir().join(format!("tensorserve-soak-{}", std::process::id()));
    let log_path = std::env::temp_dir().join(format!("tensorserve-soak-{}.server.log", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let mut newest = 1u64;
    add_version(&base, newest);

    let port = free_port();
    let rest_port = if args.mixed { free_port() } else { 0 };
    let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
    eprintln!("server log: {}", log_path.display());
    let mut server = Server(
        Command::new(&args.bin)
            .args([
                format!("--port={port}"),
                "--grpc_bind_address=127.0.0.1".into(),
                format!("--model_name={MODEL}"),
                format!("--model_base_path={}", base.display()),
                "--file_system_poll_wait_seconds=1".into(),
            ])
            .args(args.mixed.then(|| format!("--rest_api_port={rest_port}")))
            .args(&args.server_flags)
            .env("RUST_LOG", std::env::var("SOAK_SERVER_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.bin.display())),
    );
    let pid = server.0.id();
    let endpoint = format!("http://127.0.0.1:{port}");
    let rest_addr: SocketAddr = format!("127.0.0.1:{rest_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let channel = loop {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("server exited at start ({status}); see {}", log_path.display());
        }
        if let Ok(ch) = Channel::from_shared(endpoint.clone()).unwrap().connect().await {
            let grpc_up = Client::new(ch.clone()).predict(request()).await.is_ok();
            let rest_up = !args.mixed
                || matches!(
                    HttpClient::new(rest_addr).post(&rest_predict_path(MODEL), rest_body().as_bytes()).await,
                    Ok((200, _))
                );
            if grpc_up && rest_up {
                break ch;
            }
        }
        assert!(Instant::now() < deadline, "server did not come up; see {}", log_path.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(channel);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::new());
    let payloads = Arc::new(Payloads::build());
    let mut channels = Vec::new();
    for _ in 0..args.clients {
        // One connection per client, as separate services would have.
        channels.push(Channel::from_shared(endpoint.clone()).unwrap().connect().await.unwrap());
    }
    let mut grpc_loops = Vec::new();
    for (id, ch) in channels.iter().enumerate() {
        let neighbour = channels[(id + 1) % channels.len()].clone();
        grpc_loops.push(tokio::spawn(grpc_loop(
            id,
            ch.clone(),
            neighbour,
            args.bad_percent,
            payloads.clone(),
            stop.clone(),
            tally.clone(),
        )));
    }
    let mut rest_loops = Vec::new();
    for id in 0..args.rest_clients {
        rest_loops.push(tokio::spawn(rest_loop(
            id,
            rest_addr,
            args.bad_percent,
            payloads.clone(),
            stop.clone(),
            tally.clone(),
        )));
    }
    // RSS every 10 s from the start of the load; the max (of these and the per-10-swaps readings) is kept from the baseline on.
    let rss_max = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, tally, rss_max, measuring) = (stop.clone(), tally.clone(), rss_max.clone(), measuring.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut next = start + SAMPLE_EVERY;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until(next.into()).await;
                next += SAMPLE_EVERY;
                let rss = rss_kib(pid);
                if measuring.load(Ordering::Relaxed) {
                    rss_max.fetch_max(rss, Ordering::Relaxed);
                }
                eprintln!(
                    "sample: {:6.0} s, {:9} requests ({} valid failed, {} bad unexpected), rss {:.1} MiB, {} threads",
                    start.elapsed().as_secs_f64(),
                    tally.requests(),
                    tally.valid_failed(),
                    tally.bad_sum(|b| &b.unexpected),
                    mib(rss),
                    proc_status(pid, "Threads")
                );
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_start = rss_kib(pid);
    // One swap: add version N+1 (staged, renamed in) and remove the oldest.
    let swap = |newest: &mut u64| {
        *newest += 1;
        add_version(&base, *newest);
        std::fs::remove_dir_all(base.join((*newest - 1).to_string())).unwrap();
    };
    let mut died = None;
    // Warm-up swaps settle allocator arenas and buffers; the baseline is taken after them.
    for _ in 0..args.warmup_swaps {
        tokio::time::sleep(args.interval).await;
        if !args.control {
            swap(&mut newest);
        }
    }
    tokio::time::sleep(args.interval).await;
    let rss_before = rss_settled_kib(pid).await;
    rss_max.fetch_max(rss_before, Ordering::Relaxed);
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut swaps_done = 0u32;
    loop {
        let more = match args.duration {
            Some(d) => started.elapsed() < d,
            None => swaps_done < args.swaps,
        };
        if !more {
            break;
        }
        tokio::time::sleep(args.interval).await;
        if let Ok(Some(status)) = server.0.try_wait() {
            died = Some(status);
            break;
        }
        if !args.control {
            swap(&mut newest);
        }
        swaps_done += 1;
        if swaps_done.is_multiple_of(10) {
            let rss = rss_kib(pid);
            rss_max.fetch_max(rss, Ordering::Relaxed);
            eprintln!(
                "{} swaps, {} ok, {} failed, rss {} KiB, {} threads",
                swaps_done,
                tally.valid_sent() - tally.valid_failed(),
                tally.valid_failed(),
                rss,
                proc_status(pid, "Threads")
            );
        }
    }
    // Let the last swap land, then stop the load.
    if died.is_none() {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let elapsed = started.elapsed();
    let load_time = tally.started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut grpc_latencies = Vec::new();
    for l in grpc_loops {
        grpc_latencies.extend(l.await.unwrap());
    }
    let mut rest_latencies = Vec::new();
    for l in rest_loops {
        rest_latencies.extend(l.await.unwrap());
    }
    sampler.abort();
    if died.is_none() {
        if let Ok(Some(status)) = server.0.try_wait() {
            died = Some(status);
        }
    }
    let rss_after = rss_settled_kib(pid).await;
    rss_max.fetch_max(rss_after, Ordering::Relaxed);
    let rss_max = rss_max.load(Ordering::Relaxed);
    drop(server);
    let _ = std::fs::remove_dir_all(&base);

    let (grpc_ok, grpc_failed) =
        (tally.valid[GRPC].ok.load(Ordering::Relaxed), tally.valid[GRPC].failed.load(Ordering::Relaxed));
    let (rest_ok, rest_failed) =
        (tally.valid[REST].ok.load(Ordering::Relaxed), tally.valid[REST].failed.load(Ordering::Relaxed));
    let failed = grpc_failed + rest_failed;
    let (bad_sent, bad_expected, bad_unexpected) =
        (tally.bad_sum(|b| &b.sent), tally.bad_sum(|b| &b.expected), tally.bad_sum(|b| &b.unexpected));
    let versions = tally.versions.lock().unwrap().clone();
    let growth = (rss_after as f64 / rss_before.max(1) as f64 - 1.0) * 100.0;
    grpc_latencies.sort_unstable();
    rest_latencies.sort_unstable();
    let all = tally.requests();
    match args.duration {
        Some(d) => println!(
            "mode:            --duration-secs {} ({} swaps every {:?})",
            d.as_secs(),
            swaps_done,
            args.interval
        ),
        None => println!("mode:            --swaps {}", args.swaps),
    }
    println!(
        "duration:        {:.1} s measured (after {} warm-up swaps); load ran {:.1} s in all",
        elapsed.as_secs_f64(),
        args.warmup_swaps,
        load_time.as_secs_f64()
    );
    println!("swaps:           {}{}", swaps_done, if args.control { " (control: none done)" } else { "" });
    println!("clients:         {} gRPC, {} REST", args.clients, args.rest_clients);
    println!("requests sent:   {} ({} valid, {} bad)", all, grpc_ok + grpc_failed + rest_ok + rest_failed, bad_sent);
    println!("requests failed: {failed}");
    println!(
        "valid gRPC:      {} sent, {grpc_failed} failed, latency p50 {:.3} ms, p99 {:.3} ms",
        grpc_ok + grpc_failed,
        quantile_ms(&grpc_latencies, 0.50),
        quantile_ms(&grpc_latencies, 0.99)
    );
    if args.mixed {
        println!(
            "valid REST:      {} sent, {rest_failed} failed, latency p50 {:.3} ms, p99 {:.3} ms ({} keep-alive reconnects)",
            rest_ok + rest_failed,
            quantile_ms(&rest_latencies, 0.50),
            quantile_ms(&rest_latencies, 0.99),
            tally.rest_reconnects.load(Ordering::Relaxed)
        );
        println!(
            "bad requests:    {bad_sent} sent ({:.1} % of all), {bad_expected} answered as expected, {bad_unexpected} unexpectedly",
            bad_sent as f64 * 100.0 / all.max(1) as f64
        );
        for kind in Bad::all() {
            let t = &tally.bad[kind.index()];
            let expected = match kind.expected_grpc() {
                _ if REST_BAD.contains(&kind) => format!("HTTP {}", kind.expected_http()),
                (code, Some(text)) => format!("{code:?} with {text:?}"),
                (code, None) => format!("{code:?}"),
            };
            println!(
                "  {:<40} {:>7} sent, {:>7} expected, {:>3} unexpected  (expects {expected})",
                kind.name(),
                t.sent.load(Ordering::Relaxed),
                t.expected.load(Ordering::Relaxed),
                t.unexpected.load(Ordering::Relaxed)
            );
            if let Some(answer) = t.example.lock().unwrap().as_ref() {
                let cut: String = answer.chars().take(150).collect();
                println!("      e.g. {cut}{}", if cut.len() < answer.len() { "..." } else { "" });
            }
        }
    }
    println!(
        "throughput:      {:.0} req/s over the {:.1} s of load",
        all as f64 / load_time.as_secs_f64(),
        load_time.as_secs_f64()
    );
    println!(
        "versions served: {} (from {} to {})",
        versions.len(),
        versions.first().unwrap_or(&0),
        versions.last().unwrap_or(&0)
    );
    println!(
        "server RSS:      {rss_before} KiB before the {} swaps, {rss_after} KiB after ({growth:+.1} %); {rss_start} KiB under load before {} warm-up swaps",
        swaps_done, args.warmup_swaps
    );
    println!("RSS (MiB):       baseline {:.1}, max {:.1}, final {:.1}", mib(rss_before), mib(rss_max), mib(rss_after));
    match died {
        Some(status) => println!("server:          DIED ({status})"),
        None => println!("server:          alive to the end"),
    }
    println!("server log:      {}", log_path.display());
    for e in tally.errors.lock().unwrap().iter() {
        println!("error: {e}");
    }
    let mut verdict = Vec::new();
    if failed > 0 {
        verdict.push("requests failed");
    }
    if bad_unexpected > 0 {
        verdict.push("bad requests got unexpected answers");
    }
    if died.is_some() {
        verdict.push("the server died");
    }
    if growth > 10.0 {
        verdict.push("RSS grew by more than 10 %");
    }
    // Most swaps should have served at least briefly (a 1 s poll can skip one now and then).
    if !args.control && (versions.len() as u32) < swaps_done / 2 {
        verdict.push("too few versions answered: swaps were not picked up");
    }
    if verdict.is_empty() {
        println!("PASS");
    } else {
        println!("FAIL: {}", verdict.join(", "));
        std::process::exit(1);
    }
}
