//! HTTP: `POST /v1/transactions` and `POST /v1/records` as the token's user, `GET /v1/ws`,
//! `GET /health` (ready when the pool and the feed are up), `GET /metrics`, and the static
//! demo folder. Browsers are held to `allowed_origins`.

use crate::auth::Claims;
use crate::db;
use crate::errors::{self, Error};
use crate::state::AppState;
use crate::ws;
use axum::body::Bytes;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub fn routes(state: Arc<AppState>) -> axum::Router {
    let origins = state.config.allowed_origins.clone();
    let cors = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .allow_origin(if origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        });
    let mut router = axum::Router::new()
        .route("/v1/transactions", post(transactions))
        .route("/v1/records", post(records))
        .route("/v1/ws", get(websocket))
        .route("/v1/yjs/{*doc}", get(document))
        .route("/health", get(health))
        .route("/metrics", get(metrics));
    if let Some(dir) = &state.config.static_dir {
        router = router.fallback_service(tower_http::services::ServeDir::new(dir));
    }
    router.layer(cors).with_state(state)
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.kind.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({"error": self.body}))).into_response()
    }
}

/// The claims of a request's bearer token, or the anonymous role, or why not.
fn claims_from(state: &AppState, token: Option<&str>) -> Result<Claims, Error> {
    match token {
        Some(token) => state.verifier.verify(token),
        None => state
            .verifier
            .anonymous()
            .ok_or_else(|| Error::new(errors::UNAUTHORIZED, "a token is required")),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Whether a browser on `Origin` may use this bridge: listed, `*`, or the bridge's own
/// origin. Requests without an Origin (non-browser clients) carry no ambient credentials.
fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let origin = origin.trim_end_matches('/');
    if state
        .config
        .allowed_origins
        .iter()
        .any(|o| o == "*" || o == origin)
    {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

fn parse_json(state: &AppState, body: &Bytes) -> Result<Value, Error> {
    if body.len() > state.config.max_frame_bytes {
        return Err(Error::new(
            errors::FRAME_TOO_LARGE,
            format!(
                "body over max_frame_bytes ({})",
                state.config.max_frame_bytes
            ),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| Error::new(errors::BAD_JSON, format!("malformed JSON: {e}")))
}

/// The token's claims and the JSON body of an API request.
fn request(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<(Claims, Value), Error> {
    Ok((
        claims_from(state, bearer(headers))?,
        parse_json(state, body)?,
    ))
}

async fn transactions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let (claims, tx) = request(&state, &headers, &body)?;
    let result = db::apply(&state.pool, &claims, &tx).await;
    Ok(Json(
        result.inspect_err(|e| state.metrics.error(e.body.code))?,
    ))
}

async fn records(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let (claims, pointers) = request(&state, &headers, &body)?;
    let result = db::get(&state.pool, &claims, &pointers).await;
    Ok(Json(
        result.inspect_err(|e| state.metrics.error(e.body.code))?,
    ))
}

/// What both WebSocket endpoints check before the upgrade: the browser's origin, then the
/// token (from `access_token`, as browsers cannot set headers on a WebSocket, or a bearer
/// header). A refused token is not answered here: the connection tells the client, in a
/// close code it can act on. Buffers are small on purpose: an idle connection should
/// cost a few kilobytes; `max_message` bounds a message and a frame.
fn upgrade(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    upgrade: WebSocketUpgrade,
    max_message: usize,
) -> Result<(WebSocketUpgrade, Result<Claims, Error>), Error> {
    if !origin_allowed(state, headers) {
        return Err(Error::new(
            errors::FORBIDDEN_ORIGIN,
            "this origin may not open connections",
        ));
    }
    let token = query
        .get("access_token")
        .map(String::as_str)
        .or_else(|| bearer(headers));
    let upgrade = upgrade
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(max_message)
        .max_frame_size(max_message);
    Ok((upgrade, claims_from(state, token)))
}

async fn websocket(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws_upgrade: WebSocketUpgrade,
) -> Response {
    // Frames up to four times max_frame_bytes are read whole and refused by ws.rs with
    // 1009, the stream intact, so the close reaches the client; larger ones end the read
    // as soon as their header says so (the close may then be lost to a reset).
    let size = state.config.max_frame_bytes.saturating_mul(4);
    match upgrade(&state, &headers, &query, ws_upgrade, size) {
        Ok((upgrade, claims)) => upgrade.on_upgrade(move |socket| ws::serve(socket, state, claims)),
        Err(refused) => refused.into_response(),
    }
}

/// A collaborative document over y-websocket (crate::yjs): the path names it,
/// `table/id/column`.
async fn document(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    ws_upgrade: WebSocketUpgrade,
) -> Response {
    // The path as sent: `Path` would decode it whole, and an id's `%2F` would split it.
    let key = uri
        .path()
        .strip_prefix("/v1/yjs/")
        .and_then(crate::yjs::DocKey::from_path);
    let size = state.config.yjs_max_message_bytes;
    match upgrade(&state, &headers, &query, ws_upgrade, size) {
        Ok((upgrade, claims)) => {
            upgrade.on_upgrade(move |socket| crate::yjs::serve(socket, state, claims, key))
        }
        Err(refused) => refused.into_response(),
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let feed = state.feed_ready.load(Ordering::SeqCst);
    let pool = match state.pool.get().await {
        Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    };
    let body = Json(
        json!({"status": if feed && pool { "ok" } else { "unavailable" }, "feed": feed, "database": pool}),
    );
    if feed && pool {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let (connections, subscriptions) = state.router.counts();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(connections, subscriptions),
    )
        .into_response()
}
