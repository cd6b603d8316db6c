//! The duty-officer API under `/api/v1`: list and read cases within one's scope, act on them,
//! and follow them live (SSE). Officers authenticate with `Authorization: Bearer <token>`;
//! every refusal is counted by reason and logged, and every action is audited by the alarm
//! loop with the officer and the remote address. `/api/v1/openapi.json` describes it all.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use firegrid_alerting::{Command, Level, Location, Officer, Refusal};
use firegrid_cases::store::{Audit, CaseFilter, CaseState};
use firegrid_cases::{CaseError, Cases};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::DirectoryWatch;

/// What the API handlers need.
#[derive(Clone)]
pub struct ApiState {
    /// The alarm loop.
    pub cases: Cases,
    /// The officer directory.
    pub officers: Option<Arc<DirectoryWatch>>,
    /// Metrics, for refusals.
    pub metrics: Arc<dyn ApiMetrics>,
    /// Buildings, devices and cameras, for case detail.
    pub places: Arc<dyn Places>,
    /// The district (the top of every location).
    pub district: String,
    /// The officers' time zone, in which the console shows times.
    pub time_zone: chrono_tz::Tz,
}

/// Where the API counts the requests it refuses, by reason (`unauthenticated`, `forbidden`,
/// `out_of_scope` ...), and whether it may log one now (the gateway's metrics, rate-limited).
pub trait ApiMetrics: Send + Sync {
    /// Counts one refused request.
    fn refused(&self, reason: &str);
    /// Whether a line about `key` may be logged now, and how many were suppressed since the
    /// last one; `None`: not now.
    fn may_log(&self, key: &'static str) -> Option<u64>;
}

/// What the API shows of a case's place beyond its location: the gateway's registry and
/// camera events, as JSON.
pub trait Places: Send + Sync {
    /// The building with its address, coordinates and devices (`{"id", "address", "lat",
    /// "lon", "devices": [{"id", "kind", "model"}]}`), if the registry knows it.
    fn building(&self, id: &str) -> Option<Value>;
    /// The camera nearest the building with its latest event, if there is one.
    fn nearest_camera(&self, building: &str) -> Option<Value>;
}

/// The routes over cases, to be merged into the gateway's router (which adds the device
/// routes: buildings, placing a device, resetting a replay window).
pub fn router(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/me", get(me))
        .route("/api/v1/cases", get(list))
        .route("/api/v1/cases/{id}", get(case))
        .route("/api/v1/cases/{id}/actions", post(act))
        .route("/api/v1/events", get(events))
        .route("/api/v1/openapi.json", get(openapi))
        .with_state(state)
}

/// An API error: a status, a stable machine code (which the console translates), an English
/// sentence, and the devices it is about where there are some.
///
/// The body is `{"error": {"code": "latched_devices", "message": "...", "devices": [...]}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    devices: Vec<String>,
}

impl ApiError {
    /// An error with `status`, machine `code` and English `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), devices: Vec::new() }
    }

    fn about(mut self, devices: Vec<String>) -> ApiError {
        self.devices = devices;
        self
    }

    /// The machine code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if !self.devices.is_empty() {
            error["devices"] = json!(self.devices);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

/// The status and machine code of each refusal of the alarm loop. The statuses are those the
/// API always answered with (409 for a command the case's state does not allow, 422 for a
/// command that is not valid); the codes tell the console which sentence to show.
fn refusal_code(refusal: &Refusal) -> (StatusCode, &'static str, Vec<String>) {
    let one = |device: &String| vec![device.clone()];
    match refusal {
        Refusal::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", Vec::new()),
        Refusal::OutOfScope(_) => (StatusCode::FORBIDDEN, "out_of_scope", Vec::new()),
        Refusal::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid", Vec::new()),
        Refusal::UnknownDevice(d) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_device", one(d)),
        Refusal::Closed(_) => (StatusCode::CONFLICT, "closed", Vec::new()),
        Refusal::AlreadyAcknowledged(_) => (StatusCode::CONFLICT, "already_acknowledged", Vec::new()),
        Refusal::NotDisposed(_) => (StatusCode::CONFLICT, "not_disposed", Vec::new()),
        Refusal::Latched(_, devices) => {
            let devices = devices.split(", ").filter(|d| !d.is_empty()).map(str::to_owned).collect();
            (StatusCode::CONFLICT, "latched_devices", devices)
        }
        Refusal::StillActive(d) => (StatusCode::CONFLICT, "still_active", one(d)),
        Refusal::NothingToReset(_) => (StatusCode::CONFLICT, "nothing_to_reset", Vec::new()),
        Refusal::NotShelved(d) => (StatusCode::CONFLICT, "not_shelved", one(d)),
    }
}

impl From<CaseError> for ApiError {
    fn from(e: CaseError) -> ApiError {
        let (status, code, devices) = match &e {
            CaseError::Refused(r) => refusal_code(r),
            CaseError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store", Vec::new()),
            CaseError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopped", Vec::new()),
        };
        ApiError::new(status, code, e.to_string()).about(devices)
    }
}

/// Authenticates the request; refusals are counted and logged (rate-limited).
pub fn officer(state: &ApiState, headers: &HeaderMap) -> Result<(Officer, bool), ApiError> {
    officer_entry(state, headers).map(|e| (e.officer(), e.may_act()))
}

/// The authenticated officer's directory entry.
pub fn officer_entry(state: &ApiState, headers: &HeaderMap) -> Result<crate::OfficerEntry, ApiError> {
    let refuse = |reason: &'static str, message: String| {
        state.metrics.refused(reason);
        if let Some(suppressed) = state.metrics.may_log(reason) {
            tracing::warn!(reason, suppressed, "Officer API request refused.");
        }
        ApiError::new(StatusCode::UNAUTHORIZED, reason, message)
    };
    let Some(watch) = &state.officers else {
        return Err(refuse(
            "no_directory",
            "no officer directory is configured ([alerting] officers)".into(),
        ));
    };
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = crate::bearer(header).map_err(|e| refuse("unauthenticated", e.to_string()))?;
    let directory = watch.current();
    let entry = directory.authenticate(token).map_err(|e| refuse("unauthenticated", e.to_string()))?;
    Ok(entry.clone())
}

/// Refuses a request for `what` outside the officer's scope: counted, logged, `403`.
pub fn forbidden(state: &ApiState, officer: &Officer, what: &str) -> ApiError {
    state.metrics.refused("out_of_scope");
    tracing::warn!(officer = %officer.id, scope = %officer.scope, what, "Officer asked for a case outside their scope.");
    ApiError::new(
        StatusCode::FORBIDDEN,
        "out_of_scope",
        format!("{what} is outside your scope {}", officer.scope),
    )
}

/// The location of a case document.
pub fn location(case: &Value) -> Option<Location> {
    serde_json::from_value(case.get("location")?.clone()).ok()
}

async fn me(State(state): State<ApiState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let entry = officer_entry(&state, &headers)?;
    Ok(Json(json!({
        "id": entry.id,
        "scope": entry.scope.to_string(),
        "may_act": entry.may_act(),
        "time_zone": state.time_zone.name(),
        // What the console shows beside the cases: the device routes' views (the firmware
        // rollout) only to the roles those routes answer.
        "role": entry.role.as_str(),
        "may_administer_devices": entry.role.may_administer_devices(),
    })))
}

/// `GET /api/v1/cases` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `open` (default), `closed` or `any`.
    state: Option<String>,
    /// Only this stage.
    stage: Option<String>,
    /// Only this severity.
    severity: Option<String>,
    /// At most this many (default 100, max 1000).
    limit: Option<u32>,
}

async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (officer, _) = officer(&state, &headers)?;
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let open = match q.state.as_deref().unwrap_or("open") {
        "open" => CaseState::Open,
        "closed" => CaseState::Closed,
        "any" => CaseState::Any,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("state {other:?} is not open, closed or any"),
            ));
        }
    };
    let mut filter = CaseFilter {
        state: open,
        stage: q.stage,
        severity: q.severity,
        limit: q.limit,
        ..CaseFilter::default()
    };
    let name = Some(officer.scope.name.clone());
    match officer.scope.level {
        Level::Grid => filter.grid = name,
        Level::Community => filter.community = name,
        Level::Street => filter.street = name,
        Level::District => {}
    }
    let docs = state.cases.list(filter).await?;
    let cases: Vec<Value> = docs
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|c| location(c).is_some_and(|l| officer.scope.covers(&l)))
        .collect();
    Ok(Json(json!({ "cases": cases })))
}

async fn case(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let (officer, _) = officer(&state, &headers)?;
    let doc =
        state.cases.get(id).await?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("case {id} not found"))
        })?;
    let case: Value = serde_json::from_str(&doc).unwrap_or(Value::Null);
    if !location(&case).is_some_and(|l| officer.scope.covers(&l)) {
        return Err(forbidden(&state, &officer, &format!("case {id}")));
    }
    let timeline: Vec<Value> = state
        .cases
        .timeline(id)
        .await?
        .into_iter()
        .map(|t| serde_json::from_str(&t.json).unwrap_or(Value::Null))
        .collect();
    let building = case.pointer("/location/building").and_then(Value::as_str).unwrap_or_default();
    let place = state.places.building(building);
    let camera = state.places.nearest_camera(building);
    Ok(Json(json!({ "case": case, "timeline": timeline, "building": place, "camera": camera })))
}

async fn act(
    State(state): State<ApiState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let (officer, may_act) = officer(&state, &headers)?;
    if !may_act {
        state.metrics.refused("read_only");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only",
            "your role may read cases, not act on them",
        ));
    }
    let Json(mut body) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.body_text()))?;
    let Some(object) = body.as_object_mut() else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_json", "the body must be a JSON object"));
    };
    object.insert("case".into(), json!(id));
    let command: Command = serde_json::from_value(body).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("not a valid command: {e}"))
    })?;
    let audit = Audit { actor: officer.id.clone(), origin: remote.ip().to_string() };
    let acted = state.cases.act(officer.clone(), command, audit).await.map_err(|e| {
        if matches!(e, CaseError::Refused(Refusal::OutOfScope(_))) {
            forbidden(&state, &officer, &format!("case {id}"))
        } else {
            e.into()
        }
    })?;
    Ok(acted_response(acted))
}

/// The answer to a command carried out: `200` with the case once it is stored; `202` with
/// the case and `"durable": false` while the case store cannot write. The command took
/// effect either way (pages, escalation, the console); a 202 tells the officer, truthfully,
/// that a restart before the disk recovers would lose it.
pub fn acted_response(acted: firegrid_cases::Acted) -> Response {
    let case = serde_json::from_str::<Value>(&acted.case).unwrap_or(Value::Null);
    if acted.durable {
        (StatusCode::OK, Json(json!({ "case": case, "durable": true }))).into_response()
    } else {
        let warning = "carried out, but not yet stored: the gateway's disk does not take writes; \
                       it is stored when the disk recovers";
        (StatusCode::ACCEPTED, Json(json!({ "case": case, "durable": false, "warning": warning })))
            .into_response()
    }
}

async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (officer, _) = officer(&state, &headers)?;
    let stream = BroadcastStream::new(state.cases.subscribe()).filter_map(move |t| {
        let t = t.ok()?;
        let value: Value = serde_json::from_str(&t).ok()?;
        let covered = location(&value).is_some_and(|l| officer.scope.covers(&l));
        covered.then(|| Ok(Event::default().event("transition").data(t)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn openapi() -> impl IntoResponse {
    Json(spec())
}

/// The OpenAPI 3.1 description of this API.
pub fn spec() -> Value {
    let bearer = json!([{ "bearer": [] }]);
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let errors = json!({
        "401": { "description": "missing or unknown token", "content": { "application/json": { "schema": error } } },
        "403": { "description": "outside your scope, or a read-only role", "content": { "application/json": { "schema": error } } },
        "404": { "description": "no such case", "content": { "application/json": { "schema": error } } }
    });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "firegrid duty-officer API", "version": env!("CARGO_PKG_VERSION") },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                        "code": { "type": "string", "description": "stable machine code: unauthenticated, no_directory, out_of_scope, read_only, role, not_found, bad_json, bad_query, invalid, unknown_device, closed, already_acknowledged, not_disposed, latched_devices, still_active, nothing_to_reset, not_shelved, not_unplaced, no_registry, registry, store, stopped" },
                        "message": { "type": "string", "description": "an English sentence for logs and scripts" },
                        "devices": { "type": "array", "items": { "type": "string" }, "description": "the devices the refusal is about (latched_devices, still_active ...)" } } } } },
                "Command": { "type": "object", "required": ["command"], "description": "One officer command; `case` is taken from the path.",
                    "oneOf": [
                        { "properties": { "command": { "const": "acknowledge" } } },
                        { "properties": { "command": { "const": "dispatch" }, "assignee": { "type": "string" } }, "required": ["assignee"] },
                        { "properties": { "command": { "const": "verify" }, "method": { "enum": ["camera", "on_site", "phone"] }, "finding": { "type": "string" } }, "required": ["method", "finding"] },
                        { "properties": { "command": { "const": "dispose" }, "disposition": { "type": "object", "description": "{\"outcome\": \"real_fire\" | \"false_alarm\" (with \"cause\") | \"drill\" | \"no_access\" | \"resolved\"}" } }, "required": ["disposition"] },
                        { "properties": { "command": { "const": "close" }, "feedback": { "type": "object", "properties": { "report": { "type": "string" }, "work_orders": { "type": "array" }, "resident_informed": { "type": "boolean" } } } }, "required": ["feedback"] },
                        { "properties": { "command": { "const": "note" }, "text": { "type": "string" } }, "required": ["text"] },
                        { "properties": { "command": { "const": "shelve" }, "device": { "type": "string" }, "duration": { "type": "string", "examples": ["30m"] }, "reason": { "type": "string" } }, "required": ["device", "duration", "reason"] },
                        { "properties": { "command": { "const": "unshelve" }, "device": { "type": "string" } }, "required": ["device"] },
                        { "properties": { "command": { "const": "reset_latch" }, "device": { "type": ["string", "null"] } } }
                    ] }
            }
        },
        "security": bearer,
        "paths": {
            "/api/v1/me": { "get": { "summary": "Who the token belongs to", "responses": { "200": { "description": "id, scope, may_act, time_zone (IANA, the console's clock), role, may_administer_devices (whether the device routes answer: placing a device, resetting a replay window, the firmware rollout)" }, "401": errors["401"] } } },
            "/api/v1/cases": { "get": { "summary": "Cases within your scope, newest first",
                "parameters": [
                    { "name": "state", "in": "query", "schema": { "enum": ["open", "closed", "any"] } },
                    { "name": "stage", "in": "query", "schema": { "enum": ["warning", "response", "handling", "feedback"] } },
                    { "name": "severity", "in": "query", "schema": { "enum": ["fire", "pre_alarm", "water", "communication_loss", "offline", "fault"] } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "maximum": 1000 } }
                ],
                "responses": { "200": { "description": "{\"cases\": [...]}" }, "400": { "description": "bad query" }, "401": errors["401"] } } },
            "/api/v1/cases/{id}": { "get": { "summary": "A case, its full timeline, its building with the building's devices, and the nearest camera with its latest event and snapshot reference",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }],
                "responses": { "200": { "description": "{\"case\": ..., \"timeline\": [...], \"building\": {id, address, lat, lon, devices: [{id, kind, model}]} | null, \"camera\": {device, building, distance_m, latest: {channel, event, active, confidence_pct, snapshot, at_ms} | null} | null}" }, "401": errors["401"], "403": errors["403"], "404": errors["404"] } } },
            "/api/v1/cases/{id}/actions": { "post": { "summary": "Acknowledge, dispatch, verify, dispose, close, note, shelve, unshelve, reset a latch",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Command" } } } },
                "responses": { "200": { "description": "the case after the action, once it is durable" },
                    "400": { "description": "not JSON" }, "401": errors["401"], "403": errors["403"], "404": errors["404"],
                    "409": { "description": "not possible in the case's state (closed, already acknowledged, latched ...)" },
                    "422": { "description": "not a valid command" } } } },
            "/api/v1/cases/{id}/place": { "post": { "summary": "Place the device of an unplaced-device case: writes its row into the registry file and gives the case its building (duty officers and commanders)",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["building"],
                    "properties": { "building": { "type": "string" }, "kind": { "enum": ["smoke_detector", "camera", "water_sensor"] }, "model": { "type": "string" },
                        "address": { "type": "string" }, "lat": { "type": "number" }, "lon": { "type": "number" }, "grid": { "type": "string" }, "community": { "type": "string" }, "street": { "type": "string" } },
                    "description": "A building of the registry by id; for a new building also its address, lat, lon, grid, community and street." } } } },
                "responses": { "200": { "description": "the case after placing, once it is durable" }, "401": errors["401"], "403": errors["403"], "404": errors["404"],
                    "409": { "description": "not the case of one unplaced device, or no registry configured" },
                    "422": { "description": "not a valid place (the registry's rules, an unknown building without its place, or a building that already has an open case of this kind)" } } } },
            "/api/v1/events": { "get": { "summary": "Server-sent events: every transition within your scope, live", "responses": { "200": { "description": "text/event-stream, event `transition`" }, "401": errors["401"] } } },
            "/api/v1/buildings": { "get": { "summary": "Every registered building within your scope, with coordinates and device counts", "responses": { "200": { "description": "{\"buildings\": [{id, address, lat, lon, grid, community, street, detectors, cameras, water_sensors, other}]}" }, "401": errors["401"] } } },
            "/api/v1/devices/{id}/reset-window": { "post": { "summary": "Forget a device's authenticated replay window (a detector reflashed with a lower boot counter); duty officers and commanders, devices of their scope; audited as a device_admin event", "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }], "responses": { "200": { "description": "{\"device\", \"reset\": true, \"was_known\"}" }, "401": errors["401"], "403": errors["403"], "404": errors["404"] } } },
            "/api/v1/firmware/rollout": { "get": { "summary": "The current firmware rollout (firegrid firmware publish): counts by state, paused, waves, and every device's state and offset; duty officers and commanders", "responses": { "200": { "description": "{id, version, paused, done, waves: [started, total], resumes, counts: {state: devices}, devices: [{device, state, offset}], updated_ms, image_bytes (offset of image_bytes is a transfer's progress), max_failure_share (the pause threshold), failure_share (failed of settled now), paused_by: null | \"operator\" | \"failures\"}; states: waiting, offered, transferring, committed, trial, booted, failed_refused, failed_bad_digest, failed_rolled_back, failed_oversized, failed_silent, failed_downgrade" }, "401": errors["401"], "403": errors["403"], "404": errors["404"] } } }
        }
    })
}
