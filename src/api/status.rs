//! `GET /monitoring/status`: every model version's state, engine, signatures and load error,
//! and its last minute of traffic, as a self-contained HTML page that refreshes itself and as
//! JSON (`?format=json` or `Accept: application/json`) with the same data.

use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use crate::core::window::{WindowSummary, WINDOW_SECONDS};
use crate::serving::ServingCore;

/// The page's path.
pub const PATH: &str = "/monitoring/status";

/// What the page shows, and its JSON twin.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The server as a whole.
    pub server: ServerView,
    /// The seconds `last_minute` figures cover at most.
    pub window_seconds: u64,
    /// Every configured model, by name.
    pub models: Vec<ModelView>,
}

/// The server as a whole.
#[derive(Debug, Serialize)]
pub struct ServerView {
    /// tensorserve's version.
    pub version: &'static str,
    /// Seconds since the server started serving.
    pub uptime_seconds: u64,
    /// `SERVING`, or `DRAINING` after SIGTERM.
    pub state: &'static str,
}

/// One model name.
#[derive(Debug, Serialize)]
pub struct ModelView {
    /// The model's name.
    pub name: String,
    /// Its versions, highest first.
    pub versions: Vec<VersionView>,
}

/// One version.
#[derive(Debug, Serialize)]
pub struct VersionView {
    /// The version number.
    pub version: i64,
    /// TF Serving's state name (`AVAILABLE`, `LOADING`, `END`, ...).
    pub state: &'static str,
    /// The engine running it (`onnxruntime`, `tract`; `native` for Rust models), while loaded.
    pub engine: Option<&'static str>,
    /// Whether its requests are batched.
    pub batching: bool,
    /// Requests holding it now.
    pub in_flight: usize,
    /// Why it failed to load, if it did.
    pub error: Option<String>,
    /// Its signatures, while loaded.
    pub signatures: Vec<SignatureView>,
    /// Its last minute of traffic (zeros while not loaded).
    pub last_minute: WindowSummary,
}

/// One signature.
#[derive(Debug, Serialize)]
pub struct SignatureView {
    /// The signature's key (`serving_default`, ...).
    pub name: String,
    /// Its method name.
    pub method: String,
    /// Inputs as `alias: dtype[shape]`.
    pub inputs: Vec<String>,
    /// Outputs as `alias: dtype[shape]`.
    pub outputs: Vec<String>,
}

fn spec_text(alias: &str, spec: &crate::model::TensorSpec) -> String {
    let shape = match &spec.shape {
        Some(dims) => {
            dims.iter().map(|d| if *d < 0 { "?".to_string() } else { d.to_string() }).collect::<Vec<_>>().join(",")
        }
        None => "*".to_string(),
    };
    format!("{alias}: {}[{shape}]", spec.dtype.name())
}

/// Reads the registry and every version's window now.
pub fn report(core: &ServingCore, started: Instant) -> StatusReport {
    let registry = core.registry();
    let models = registry
        .model_names()
        .into_iter()
        .map(|name| {
            let versions = registry
                .versions(&name)
                .unwrap_or_default()
                .into_iter()
                .map(|(status, runtime)| {
                    let model = runtime.as_ref().map(|r| r.model());
                    let signatures = model
                        .map(|m| {
                            m.signatures()
                                .iter()
                                .map(|(key, sig)| SignatureView {
                                    name: key.clone(),
                                    method: sig.method_name.clone(),
                                    inputs: sig.inputs.iter().map(|(a, s)| spec_text(a, s)).collect(),
                                    outputs: sig.outputs.iter().map(|(a, s)| spec_text(a, s)).collect(),
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    VersionView {
                        version: status.version,
                        state: status.state.name(),
                        engine: model.map(|m| m.engine().unwrap_or("native")),
                        batching: runtime.as_ref().is_some_and(|r| r.batching().is_some()),
                        in_flight: runtime.as_ref().map_or(0, |r| r.in_flight()),
                        error: status.error.map(|e| e.message),
                        signatures,
                        last_minute: runtime
                            .as_ref()
                            .map(|r| r.stats().statistics.recent.summary())
                            .unwrap_or_default(),
                    }
                })
                .collect();
            ModelView { name, versions }
        })
        .collect();
    StatusReport {
        server: ServerView {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: started.elapsed().as_secs(),
            state: if core.is_draining() { "DRAINING" } else { "SERVING" },
        },
        window_seconds: WINDOW_SECONDS,
        models,
    }
}

/// The report as JSON.
pub fn json(report: &StatusReport) -> String {
    serde_json::to_string_pretty(report).expect("the report serializes")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.2} ms"),
        Some(v) => format!("{v:.1} ms"),
        None => "–".into(),
    }
}

fn uptime(s: u64) -> String {
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s / 60 % 60),
    }
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}header span{opacity:.85}
main{padding:14px 20px;display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px}
section{background:#fff;border-radius:6px;box-shadow:0 1px 2px #0002;padding:10px 14px}
h2{font-size:16px;margin:0 0 6px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:right;padding:3px 6px;border-bottom:1px solid #e6e8eb;white-space:nowrap}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2),th:nth-child(3),td:nth-child(3){text-align:left}
th{font-weight:600;color:#59606e;font-size:12px}
.b{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px;font-weight:600}
.AVAILABLE{background:#d3f5dc;color:#11632b}.LOADING,.START{background:#fff1c2;color:#6b5200}
.UNLOADING,.END{background:#e6e8eb;color:#464c57}.failed{background:#ffd9d9;color:#8a1212}
.SERVING{background:#2e9e50;color:#fff}.DRAINING{background:#d97a00;color:#fff}
.err{color:#8a1212;margin:4px 0;white-space:pre-wrap}.bad{color:#b3261e;font-weight:600}
ul{margin:6px 0 0;padding-left:18px;color:#3d4350;font-size:12px}code{font-size:12px}
footer{padding:0 20px 14px;color:#59606e;font-size:12px}
";

/// Refetches the page every 2 s and swaps its content in, so one renderer serves both.
const SCRIPT: &str = "
setInterval(async()=>{try{const r=await fetch(location.pathname,{headers:{accept:'text/html'}});
const d=new DOMParser().parseFromString(await r.text(),'text/html');
for(const id of ['head','models']){document.getElementById(id).innerHTML=d.getElementById(id).innerHTML}}
catch(e){document.getElementById('age').textContent='server unreachable'}},2000);
";

/// The report as a page with no external assets.
pub fn html(report: &StatusReport) -> String {
    let mut h = String::with_capacity(8192);
    let s = &report.server;
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content='width=device-width'>\
         <title>tensorserve status</title><style>{STYLE}</style></head><body>\
         <header id=head><h1>tensorserve {}</h1><span class='b {}'>{}</span><span>up {}</span>\
         <span>{} models, {} versions available</span><span id=age>last {} s, refreshed every 2 s</span></header><main id=models>",
        escape(s.version),
        s.state,
        s.state,
        uptime(s.uptime_seconds),
        report.models.len(),
        report.models.iter().flat_map(|m| &m.versions).filter(|v| v.state == "AVAILABLE").count(),
        report.window_seconds,
    );
    for m in &report.models {
        let _ = write!(
            h,
            "<section data-model='{0}'><h2>{0}</h2><table><tr><th>version</th><th>state</th><th>engine</th>\
             <th>req/s</th><th>errors/s</th><th>p50</th><th>p99</th><th>batch</th><th>in flight</th></tr>",
            escape(&m.name)
        );
        for v in &m.versions {
            let w = &v.last_minute;
            let failed = v.error.is_some();
            let _ = write!(
                h,
                "<tr><td>{}</td><td><span class='b {}'>{}</span></td><td>{}{}</td><td>{:.1}</td><td{}>{:.2}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                v.version,
                if failed { "failed" } else { v.state },
                if failed { "FAILED" } else { v.state },
                v.engine.unwrap_or("–"),
                if v.batching { " · batched" } else { "" },
                w.request_rate,
                if w.errors > 0 { " class=bad" } else { "" },
                w.error_rate,
                ms(w.p50_ms),
                ms(w.p99_ms),
                w.mean_batch_size.map_or("–".to_string(), |b| format!("{b:.1}")),
                v.in_flight,
            );
        }
        h.push_str("</table>");
        for v in &m.versions {
            if let Some(e) = &v.error {
                let _ = write!(h, "<div class=err>version {}: {}</div>", v.version, escape(e));
            }
        }
        // Signatures of the highest loaded version: what clients of the model may call.
        if let Some(v) = m.versions.iter().find(|v| !v.signatures.is_empty()) {
            h.push_str("<ul>");
            for sig in &v.signatures {
                let method = sig.method.rsplit('/').next().unwrap_or(&sig.method);
                let _ = write!(
                    h,
                    "<li><code>{}</code> ({}): {} → {}</li>",
                    escape(&sig.name),
                    escape(method),
                    escape(&sig.inputs.join(", ")),
                    escape(&sig.outputs.join(", ")),
                );
            }
            h.push_str("</ul>");
        }
        h.push_str("</section>");
    }
    if report.models.is_empty() {
        h.push_str("<section>No models are configured.</section>");
    }
    let _ = write!(
        h,
        "</main><footer>Latency is time in the executor (queue and run); batch is rows per model run. \
         JSON: <a href='{PATH}?format=json'>{PATH}?format=json</a></footer><script>{SCRIPT}</script></body></html>"
    );
    h
}

/// True when the request asks for the JSON twin.
pub fn wants_json(query: Option<&str>, accept: Option<&str>) -> bool {
    let by_query = query.is_some_and(|q| q.split('&').any(|kv| kv.eq_ignore_ascii_case("format=json")));
    let by_accept = accept.is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
    by_query || by_accept
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn page_and_json_show_every_version_escaped() {
        let registry = Arc::new(crate::model::ModelRegistry::new());
        crate::examples::register_bundled(&registry).unwrap();
        registry.set_status(
            "<b>broken</b>",
            7,
            crate::model::ServableState::End,
            Some(crate::error::ServingError::internal("no model.onnx in 7/ & more")),
        );
        let core = ServingCore::new(registry, Default::default());
        let report = report(&core, Instant::now());
        let page = html(&report);
        assert!(page.contains("data-model='half_plus_two'"), "{page}");
        assert!(page.contains("&lt;b&gt;broken&lt;/b&gt;") && !page.contains("<b>broken"));
        assert!(page.contains("no model.onnx in 7/ &amp; more"));
        assert!(page.contains("FAILED"));
        let json: serde_json::Value = serde_json::from_str(&json(&report)).unwrap();
        let half = json["models"].as_array().unwrap().iter().find(|m| m["name"] == "half_plus_two").unwrap();
        assert_eq!(half["versions"][0]["state"], "AVAILABLE");
        let sigs = half["versions"][0]["signatures"].as_array().unwrap();
        let default = sigs.iter().find(|s| s["name"] == "serving_default").unwrap();
        assert_eq!(default["inputs"][0], "x: float[?,1]", "{default}");
        assert_eq!(json["server"]["state"], "SERVING");
        assert!(wants_json(Some("format=json"), None));
        assert!(wants_json(None, Some("application/json")));
        assert!(!wants_json(None, Some("text/html,application/json")));
    }
}
