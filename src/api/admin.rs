//! The admin surfaces (Prometheus metrics, the status page, V2 model control over REST): on the
//! REST port by default, or only on their own listener (`--monitoring_address`), so exposing the
//! inference port need not expose them.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::rest::{error_response, RestOptions};
use crate::error::{Code, ServingError};
use crate::repository::ModelManager;
use crate::serving::ServingCore;

/// Which admin surfaces a listener serves.
#[derive(Clone, Debug)]
pub struct AdminRoutes {
    /// The Prometheus exposition's path (`--monitoring_config_file`); `None`: not here.
    pub metrics_path: Option<String>,
    /// Serve `/monitoring/status` (`--enable_status_page`).
    pub status_page: bool,
    /// Serve V2's repository endpoints (load, unload, index).
    pub model_control: bool,
}

impl AdminRoutes {
    /// None of them: what the REST port keeps when `--monitoring_address` takes them.
    pub fn none() -> Self {
        AdminRoutes { metrics_path: None, status_page: false, model_control: false }
    }
}

/// When the process started serving, for the status page's uptime.
pub fn started() -> Instant {
    static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// Answers `method path` if it is an admin surface `routes` serves here; `None` otherwise.
pub fn respond(
    core: &ServingCore,
    routes: &AdminRoutes,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Response> {
    let path = uri.path();
    if routes.metrics_path.as_deref() == Some(path) {
        return Some(metrics(core, method));
    }
    if routes.status_page && path == super::status::PATH {
        if method != Method::GET {
            return Some(error_response(ServingError::invalid_argument(format!("Malformed request: {method} {path}"))));
        }
        let report = super::status::report(core, started());
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let response = if super::status::wants_json(uri.query(), accept) {
            ([(header::CONTENT_TYPE, "application/json")], super::status::json(&report)).into_response()
        } else {
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], super::status::html(&report)).into_response()
        };
        return Some(response);
    }
    None
}

fn metrics(core: &ServingCore, method: &Method) -> Response {
    let Some(metrics) = crate::core::metrics::get().filter(|_| method == Method::GET) else {
        return error_response(ServingError::invalid_argument(format!("Malformed request: {method} metrics")));
    };
    let text = metrics.render(core.registry());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// The refusal of model control on a port that does not serve it.
pub fn model_control_elsewhere() -> ServingError {
    ServingError::new(
        Code::PermissionDenied,
        "model control is not served on this port: it is on the admin listener (--monitoring_address)",
    )
}

#[derive(Clone)]
struct Admin {
    core: Arc<ServingCore>,
    routes: Arc<AdminRoutes>,
    options: Arc<RestOptions>,
    manager: Option<Arc<ModelManager>>,
}

/// The admin listener's router: the surfaces `routes` names and nothing else.
pub fn router(
    core: Arc<ServingCore>,
    routes: AdminRoutes,
    options: RestOptions,
    manager: Option<Arc<ModelManager>>,
) -> axum::Router {
    let state = Admin { core, routes: Arc::new(routes), options: Arc::new(options), manager };
    axum::Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(State(admin): State<Admin>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    if let Some(response) = respond(&admin.core, &admin.routes, &method, &uri, &headers) {
        return response;
    }
    let path = uri.path();
    if admin.routes.model_control && path.to_ascii_lowercase().starts_with("/v2/repository") {
        // Repository calls carry small JSON bodies; a megabyte is far more than any needs.
        let body = match axum::body::to_bytes(body, 1 << 20).await {
            Ok(body) => body,
            Err(e) => return error_response(ServingError::invalid_argument(format!("cannot read the body: {e}"))),
        };
        let budget = Arc::new(admin.core.memory().budget());
        let v2 = crate::api::v2::rest::V2Rest {
            core: &admin.core,
            options: &admin.options,
            manager: admin.manager.as_ref(),
        };
        return v2.route(&method, path, &headers, body, &budget).await;
    }
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/json")], "{ \"error\": \"not an admin endpoint\" }")
        .into_response()
}
