//! The officer API's routes over devices, merged with the case routes of
//! `firegrid_officers::api`: `GET /api/v1/buildings` (the registered buildings in the officer's scope),
//! `POST /api/v1/cases/{id}/place` (writing an unplaced device into the registry) and
//! `POST /api/v1/devices/{id}/reset-window` (forgetting a device's replay window). They
//! authenticate and answer like the case routes, whose helpers they use.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use firegrid_alerting::{Command, Location, Refusal};
use firegrid_cases::CaseError;
use firegrid_cases::store::Audit;
use firegrid_officers::api::{
    ApiError, ApiMetrics, ApiState, Places, acted_response, forbidden, location, officer, officer_entry,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::metrics::{Metrics, ReasonLabel};

/// What the device routes need besides the case API's state.
#[derive(Clone)]
pub struct DeviceApiState {
    /// The case API's state: the alarm loop, the officer directory, metrics.
    pub api: ApiState,
    /// Buildings, devices and camera events.
    pub site: Arc<crate::site::Site>,
    /// The registry file, which placing a device writes; `None` without a registry.
    pub registry: Option<std::path::PathBuf>,
    /// Placements write the registry file one at a time.
    pub placing: Arc<tokio::sync::Mutex<()>>,
    /// Ingest, for device administration (resetting a replay window).
    pub ingest: Arc<crate::ingest::Ingest>,
    /// The current firmware rollout's progress.
    pub firmware: Arc<crate::firmware::delivery::driver::Board>,
}

/// The device routes, to be merged into the gateway's router with the case routes.
pub fn router(state: DeviceApiState) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/cases/{id}/place", post(place))
        .route("/api/v1/buildings", get(buildings))
        .route("/api/v1/devices/{id}/reset-window", post(reset_window))
        .route("/api/v1/firmware/rollout", get(firmware_rollout))
        .with_state(state)
}

impl ApiMetrics for Metrics {
    fn refused(&self, reason: &str) {
        self.api_refused.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    }

    fn may_log(&self, key: &'static str) -> Option<u64> {
        Metrics::may_log(self, key)
    }
}

impl Places for crate::site::Site {
    fn building(&self, id: &str) -> Option<Value> {
        self.building(id).map(|(b, devices)| {
            let devices: Vec<Value> = devices
                .iter()
                .map(|d| json!({ "id": d.id.to_string(), "kind": d.kind.as_str(), "model": &*d.model }))
                .collect();
            json!({ "id": &*b.id, "address": &*b.address, "lat": b.lat, "lon": b.lon, "devices": devices })
        })
    }

    fn nearest_camera(&self, building: &str) -> Option<Value> {
        self.nearest_camera(building).map(|camera| json!(camera))
    }
}

/// `POST /api/v1/devices/{id}/reset-window`: forgets a device's authenticated replay window,
/// so that its next signed message starts a new one. For a detector whose boot counter went
/// backwards (reflashed, flash erased) and that cannot answer a challenge. Duty officers and
/// commanders only, for devices of their scope; written to the time series as a
/// `device_admin` event with the officer and the remote address, and logged.
async fn reset_window(
    State(state): State<DeviceApiState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entry = officer_entry(&state.api, &headers)?;
    if !entry.role.may_administer_devices() {
        state.api.metrics.refused("role");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "role",
            "only duty officers and commanders may reset a device's replay window",
        ));
    }
    let device = firegrid_protocol::DeviceId::new(&id).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("bad device id: {e}"))
    })?;
    let officer = entry.officer();
    let registered = state.site.registry().and_then(|r| {
        let b = &r.get(&device)?.building;
        Some(Location {
            district: state.api.district.clone(),
            street: b.street.to_string(),
            community: b.community.to_string(),
            grid: b.grid.to_string(),
            building: b.id.to_string(),
        })
    });
    let Some(location) = registered else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("device {id} is not in the registry"),
        ));
    };
    if !officer.scope.covers(&location) {
        return Err(forbidden(&state.api, &officer, &format!("device {id}")));
    }
    let known = state.ingest.reset_window(&device);
    let now = crate::clock::wall_ms();
    let origin = remote.ip().to_string();
    tracing::warn!(device = %device, officer = %officer.id, %origin, "Officer reset the device's replay window.");
    let stored = state.ingest.store_local(&device, firegrid_protocol::Class::Event, now, |place, ts| {
        crate::series::schema::device_admin_point(
            place,
            device.as_str(),
            "reset_window",
            &officer.id,
            &origin,
            ts,
        )
    });
    if let Err(error) = stored {
        // The reset is done; its record is what failed. Say so rather than pretend.
        tracing::error!(%error, device = %device, "Cannot store the audit record of a window reset.");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store",
            "the window was reset, but its audit record could not be stored",
        ));
    }
    Ok(Json(json!({ "device": id, "reset": true, "was_known": known })))
}

/// `GET /api/v1/firmware/rollout`: the current firmware rollout, every device's state and
/// offset with it (the per-device view `/metrics` leaves out: one series per device would be
/// thousands). Duty officers and commanders only; 404 without a rollout.
async fn firmware_rollout(
    State(state): State<DeviceApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let entry = officer_entry(&state.api, &headers)?;
    if !entry.role.may_administer_devices() {
        state.api.metrics.refused("role");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "role",
            "only duty officers and commanders may follow a firmware rollout",
        ));
    }
    let Some(progress) = state.firmware.progress() else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no firmware rollout is running"));
    };
    Ok(Json(serde_json::to_value(progress).expect("progress serializes")))
}

/// `GET /api/v1/buildings`: every registered building in the officer's scope, with its
/// coordinates and device counts (the console colours them by their open cases).
async fn buildings(State(state): State<DeviceApiState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let (officer, _) = officer(&state.api, &headers)?;
    let Some(registry) = state.site.registry() else {
        return Ok(Json(json!({ "buildings": [] })));
    };
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    let mut out: Vec<Value> = Vec::new();
    for d in registry.devices() {
        let b = &d.building;
        let location = Location {
            district: state.api.district.clone(),
            street: b.street.to_string(),
            community: b.community.to_string(),
            grid: b.grid.to_string(),
            building: b.id.to_string(),
        };
        if !officer.scope.covers(&location) {
            continue;
        }
        let index = *seen.entry(&b.id).or_insert_with(|| {
            out.push(json!({
                "id": &*b.id, "address": &*b.address, "lat": b.lat, "lon": b.lon,
                "grid": &*b.grid, "community": &*b.community, "street": &*b.street,
                "detectors": 0, "cameras": 0, "water_sensors": 0, "other": 0,
            }));
            out.len() - 1
        });
        let counter = match d.kind {
            crate::registry::DeviceKind::SmokeDetector => "detectors",
            crate::registry::DeviceKind::Camera => "cameras",
            crate::registry::DeviceKind::WaterSensor => "water_sensors",
            crate::registry::DeviceKind::Other => "other",
        };
        out[index][counter] = json!(out[index][counter].as_u64().unwrap_or(0) + 1);
    }
    Ok(Json(json!({ "buildings": out })))
}

/// Where an unplaced device is: a building of the registry, or a new one with its place.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceBody {
    /// The building id.
    building: String,
    /// What the device is.
    #[serde(default = "smoke_detector")]
    kind: crate::registry::DeviceKind,
    /// Its vendor model.
    #[serde(default)]
    model: String,
    /// For a building the registry does not know yet: its address, coordinates and place.
    address: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    grid: Option<String>,
    community: Option<String>,
    street: Option<String>,
}

fn smoke_detector() -> crate::registry::DeviceKind {
    crate::registry::DeviceKind::SmokeDetector
}

/// Places the device of an unplaced-device case: writes its row into the registry file
/// (which the gateway reloads) and gives the case its building. Duty officers and
/// commanders only, within their scope; audited like every action.
async fn place(
    State(state): State<DeviceApiState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    use crate::registry::{DeviceRecord, Registry};
    let entry = officer_entry(&state.api, &headers)?;
    let (officer, role) = (entry.officer(), entry.role);
    let refuse = |status, reason: &'static str, message: String| {
        state.api.metrics.refused(reason);
        ApiError::new(status, reason, message)
    };
    if !role.may_administer_devices() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "role",
            format!("a {role} may not write the registry; duty officers and commanders place devices"),
        ));
    }
    let Json(body) = body.map_err(|e| refuse(StatusCode::BAD_REQUEST, "bad_json", e.body_text()))?;
    let body: PlaceBody = serde_json::from_value(body).map_err(|e| {
        refuse(StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("not a valid place: {e}"))
    })?;
    let Some(path) = state.registry.clone() else {
        return Err(refuse(
            StatusCode::CONFLICT,
            "no_registry",
            "no registry file is configured ([registry] csv): there is nowhere to place the device".into(),
        ));
    };
    let doc = state
        .api
        .cases
        .get(id)
        .await?
        .ok_or(CaseError::Refused(Refusal::NotFound(firegrid_alerting::CaseId(id))))?;
    let case: Value = serde_json::from_str(&doc).unwrap_or(Value::Null);
    if !location(&case).is_some_and(|l| officer.scope.covers(&l)) {
        return Err(forbidden(&state.api, &officer, &format!("case {id}")));
    }
    let unplaced: Option<firegrid_alerting::Unplaced> =
        case.get("unplaced").and_then(|u| serde_json::from_value(u.clone()).ok());
    let Some(unplaced) = unplaced.filter(|u| !u.flood) else {
        return Err(refuse(
            StatusCode::CONFLICT,
            "not_unplaced",
            format!("case {id} is not the case of one unplaced device"),
        ));
    };
    let device = firegrid_protocol::DeviceId::new(&unplaced.device)
        .map_err(|e| refuse(StatusCode::CONFLICT, "invalid", format!("device id: {e}")))?;
    let village = firegrid_protocol::VillageId::new(&unplaced.village)
        .map_err(|e| refuse(StatusCode::CONFLICT, "invalid", format!("village id: {e}")))?;

    let _one_at_a_time = state.placing.lock().await;
    let file = path.clone();
    let registry = tokio::task::spawn_blocking(move || Registry::load(&file))
        .await
        .expect("loading does not panic")
        .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, "registry", e.to_string()))?;
    let known = registry.devices().iter().find(|d| *d.building.id == *body.building.trim()).cloned();
    let record = match (&known, registry.get(&device)) {
        (_, Some(existing)) => registry.record(existing),
        (Some(b), None) => DeviceRecord {
            id: device.clone(),
            kind: body.kind,
            model: body.model.clone(),
            heartbeat_ms: None,
            channels: None,
            ..registry.record(b)
        },
        (None, None) => {
            let missing = || {
                refuse(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!(
                        "building {:?} is not in the registry: give its address, lat, lon, grid, community and street",
                        body.building
                    ),
                )
            };
            DeviceRecord {
                id: device.clone(),
                kind: body.kind,
                model: body.model.clone(),
                building: body.building.clone(),
                address: body.address.clone().ok_or_else(missing)?,
                lat: body.lat.ok_or_else(missing)?,
                lon: body.lon.ok_or_else(missing)?,
                grid: body.grid.clone().ok_or_else(missing)?,
                community: body.community.clone().ok_or_else(missing)?,
                street: body.street.clone().ok_or_else(missing)?,
                village,
                district: registry.district().map(str::to_owned),
                heartbeat_ms: None,
                channels: None,
            }
        }
    };
    let target = Location {
        district: state.api.district.clone(),
        street: record.street.trim().to_owned(),
        community: record.community.trim().to_owned(),
        grid: record.grid.trim().to_owned(),
        building: record.building.trim().to_owned(),
    };
    if !officer.scope.covers(&target) {
        return Err(forbidden(&state.api, &officer, &format!("building {}", target.building)));
    }
    if registry.get(&device).is_none() {
        let mut records: Vec<DeviceRecord> = registry.devices().iter().map(|d| registry.record(d)).collect();
        records.push(record);
        let placed = Registry::from_records(records)
            .map_err(|e| refuse(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string()))?;
        let file = path.clone();
        tokio::task::spawn_blocking(move || placed.save(&file))
            .await
            .expect("saving does not panic")
            .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, "registry", e.to_string()))?;
        tracing::info!(officer = %officer.id, origin = %remote.ip(), device = %device, building = %target.building, case = id, "Device placed in the registry.");
    }
    let audit = Audit { actor: officer.id.clone(), origin: remote.ip().to_string() };
    let command = Command::Place { case: firegrid_alerting::CaseId(id), location: target };
    Ok(acted_response(state.api.cases.act(officer.clone(), command, audit).await?))
}
