//! The REST router (`api::rest::router`) through `tower::ServiceExt::oneshot`, structure-aware:
//!
//! * byte 0 picks a route template: below 128 one of TF Serving's and KServe V1's (`TEMPLATES`;
//!   the last one, `RAW`, takes the body's first line as `METHOD PATH` and the rest as the
//!   body), from 128 one of KServe V2's (`V2_TEMPLATES`; `BIN` is an infer whose body's first two
//!   bytes, little-endian, become `Inference-Header-Content-Length`);
//! * byte 1 fills it: bits 0-2 the model (`MODEL_NAMES`), bits 3-4 the version, bits 5-6 the
//!   label, bit 7 the router (default `RestOptions`, or CORS + 64 KiB body limit + a coarse
//!   explainer, over the strict core);
//! * the rest is the body: TF Serving's row and columnar formats, KServe V1, classify/regress
//!   examples, V2 infer requests (JSON, or a JSON header and binary tensors).
//!
//! Every JSON answer must parse as JSON (with TF Serving's bare NaN/Infinity allowed), a binary
//! V2 answer must start with the JSON header its length header names, and once answered a
//! request must hold none of the memory pool.
#![no_main]

use axum::body::Body;
use axum::http::{header, Method, Request};
use libfuzzer_sys::fuzz_target;
use tensorserve_fuzz::{block_on, debug, fixture, MODEL_NAMES};
use tower::ServiceExt;

const TEMPLATES: [(&str, &str); 18] = [
    ("POST", "/v1/models/{m}:predict"),
    ("POST", "/v1/models/{m}:classify"),
    ("POST", "/v1/models/{m}:regress"),
    ("POST", "/v1/models/{m}:explain"),
    ("POST", "/v1/models/{m}/versions/{v}:predict"),
    ("POST", "/v1/models/{m}/labels/{l}:predict"),
    ("POST", "/v1/models/{m}/versions/{v}:classify"),
    ("POST", "/v1/models/{m}/labels/{l}:regress"),
    ("POST", "/v1/models/{m}/versions/{v}:explain"),
    ("GET", "/v1/models/{m}"),
    ("GET", "/v1/models/{m}/metadata"),
    ("GET", "/v1/models/{m}/versions/{v}"),
    ("GET", "/v1/models/{m}/versions/{v}/metadata"),
    ("GET", "/v1/models/{m}/labels/{l}/metadata"),
    ("GET", "/v1/models"),
    ("GET", "/"),
    ("OPTIONS", "/v1/models/{m}:predict"),
    ("RAW", ""),
];
const V2_TEMPLATES: [(&str, &str); 10] = [
    ("POST", "/v2/models/{m}/infer"),
    ("POST", "/v2/models/{m}/versions/{v}/infer"),
    ("BIN", "/v2/models/{m}/infer"),
    ("BIN", "/v2/models/{m}/versions/{l}/infer"),
    ("GET", "/v2/models/{m}"),
    ("GET", "/v2/models/{m}/versions/{v}/ready"),
    ("GET", "/v2/models/{m}/stats"),
    ("GET", "/v2/health/ready"),
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/{m}/load"),
];
const VERSIONS: [&str; 4] = ["1", "2", "3", "123"];
const LABELS: [&str; 4] = ["stable", "canary", "gone", "st%61ble"];

fn request(template: u8, fill: u8, body: &[u8]) -> Option<Request<Body>> {
    let (method, path) = if template < 128 {
        TEMPLATES[usize::from(template) % TEMPLATES.len()]
    } else {
        V2_TEMPLATES[usize::from(template - 128) % V2_TEMPLATES.len()]
    };
    let mut header_length = None;
    let (method, path, body) = if method == "RAW" {
        let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
        let line = std::str::from_utf8(&body[..end]).ok()?;
        let (method, path) = line.split_once(' ')?;
        (Method::from_bytes(method.as_bytes()).ok()?, path.to_string(), &body[(end + 1).min(body.len())..])
    } else {
        let (method, body) = match (method, body) {
            ("BIN", [lo, hi, rest @ ..]) => {
                header_length = Some(u16::from_le_bytes([*lo, *hi]));
                ("POST", rest)
            }
            ("BIN", _) => return None,
            _ => (method, body),
        };
        let path = path
            .replace("{m}", MODEL_NAMES[usize::from(fill & 7)])
            .replace("{v}", VERSIONS[usize::from(fill >> 3 & 3)])
            .replace("{l}", LABELS[usize::from(fill >> 5 & 3)]);
        (Method::from_bytes(method.as_bytes()).ok()?, path, body)
    };
    let mut builder = Request::builder().method(method).uri(path);
    builder = match header_length {
        Some(n) => builder
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header("inference-header-content-length", n.to_string()),
        None => builder.header(header::CONTENT_TYPE, "application/json"),
    };
    builder.body(Body::from(body.to_vec())).ok()
}

fuzz_target!(|data: &[u8]| {
    let [template, fill, body @ ..] = data else { return };
    let Some(request) = request(*template, *fill, body) else { return };
    let line = format!("{} {}", request.method(), request.uri());
    let which = usize::from(fill >> 7);
    let router = fixture().rest[which].clone();
    block_on(async move {
        let response = router.oneshot(request).await.expect("the router is infallible");
        let json = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == "application/json");
        let binary_header: Option<usize> = response
            .headers()
            .get("inference-header-content-length")
            .map(|v| v.to_str().expect("ASCII").parse().expect("a byte count"));
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
        debug(|| format!("{line} -> {status} {}", String::from_utf8_lossy(&body)));
        if let Some(n) = binary_header {
            let header = body.get(..n).expect("the binary answer holds its JSON header");
            serde_json::from_slice::<serde_json::Value>(header).expect("the binary answer's header is JSON");
        }
        if json {
            let text = std::str::from_utf8(&body).expect("a JSON answer is UTF-8");
            let text = tensorserve::tensor::json::quote_non_finite(text);
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
                panic!("the answer is not JSON ({e}): {text}");
            }
        }
    });
    tensorserve_fuzz::assert_nothing_held(&fixture().cores[which], "REST");
});
