//! The REST router (`api::rest::router`) through `tower::ServiceExt::oneshot`, structure-aware:
//!
//! * byte 0 picks a route template (`TEMPLATES`; the last one, `RAW`, takes the body's first
//!   line as `METHOD PATH` and the rest as the body);
//! * byte 1 fills it: bits 0-2 the model (`MODEL_NAMES`), bits 3-4 the version, bits 5-6 the
//!   label, bit 7 the router (default `RestOptions`, or CORS + 64 KiB body limit + a coarse
//!   explainer, over the strict core);
//! * the rest is the body: TF Serving's row and columnar formats, KServe V1, classify/regress
//!   examples.
//!
//! Every JSON answer must parse as JSON (with TF Serving's bare NaN/Infinity allowed), and once
//! answered a request must hold none of the memory pool.
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
const VERSIONS: [&str; 4] = ["1", "2", "3", "123"];
const LABELS: [&str; 4] = ["stable", "canary", "gone", "st%61ble"];

fn request(template: u8, fill: u8, body: &[u8]) -> Option<Request<Body>> {
    let (method, path) = TEMPLATES[usize::from(template) % TEMPLATES.len()];
    let (method, path, body) = if method == "RAW" {
        let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
        let line = std::str::from_utf8(&body[..end]).ok()?;
        let (method, path) = line.split_once(' ')?;
        (Method::from_bytes(method.as_bytes()).ok()?, path.to_string(), &body[(end + 1).min(body.len())..])
    } else {
        let path = path
            .replace("{m}", MODEL_NAMES[usize::from(fill & 7)])
            .replace("{v}", VERSIONS[usize::from(fill >> 3 & 3)])
            .replace("{l}", LABELS[usize::from(fill >> 5 & 3)]);
        (Method::from_bytes(method.as_bytes()).ok()?, path, body)
    };
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .ok()
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
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
        debug(|| format!("{line} -> {status} {}", String::from_utf8_lossy(&body)));
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
