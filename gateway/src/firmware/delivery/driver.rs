//! The I/O half: the task that drives the current [`Rollout`] inside the gateway.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firegrid_protocol::{DeviceId, DownlinkKind, FirmwareStatus, UplinkBody, VillageId};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::control::{self, ControlError, Progress, Request};
use crate::firmware::rollout::{DeviceState, Plan, Rollout, Send};
use crate::ingest::{Accepted, Ingest};
use crate::metrics::{KindLabel, Metrics, ReasonLabel, StateLabel};

/// How often the rollout is ticked (waves, resends): well under the shortest sensible
/// `resend_after`, and cheap (a pass over the devices). Paced chunks do not wait for it: the
/// driver also wakes at [`Rollout::next_due`], so a held command leaves on time, not up to a
/// tick late (up to a tick per chunk would make a transfer at a 250 ms gap take up to twice
/// as long).
const TICK: Duration = Duration::from_millis(250);
/// How often the request file is looked at, and the progress file written when it changed.
const RELOAD: Duration = Duration::from_secs(1);

/// A device's `fw_status`, as the tap hands it on.
pub type Status = (VillageId, DeviceId, FirmwareStatus);

/// The current rollout's progress, shared with the officer API.
#[derive(Debug, Default)]
pub struct Board {
    progress: Mutex<Option<Progress>>,
}

impl Board {
    /// Where the current rollout stands, as last written; `None` without one.
    pub fn progress(&self) -> Option<Progress> {
        self.progress.lock().unwrap().clone()
    }
}

/// Passes every accepted message on to `onward`, and the `fw_status` ones to `statuses` too.
/// Its own task, so that publishing firmware chunks never delays an alarm on its way to the
/// alarm loop.
pub async fn tap(
    mut rx: mpsc::UnboundedReceiver<Accepted>,
    onward: mpsc::UnboundedSender<Accepted>,
    statuses: mpsc::UnboundedSender<Status>,
) {
    while let Some(a) = rx.recv().await {
        if let UplinkBody::FwStatus(status) = &a.msg.body {
            let _ = statuses.send((a.topic.village.clone(), a.msg.dev.clone(), status.clone()));
        }
        if onward.send(a).is_err() {
            return;
        }
    }
}

/// What the driver needs.
pub struct Driver {
    /// `{data_dir}/firmware`.
    pub dir: PathBuf,
    /// The configured vendor keys, by slot; without them every request is refused.
    pub vendor: Option<crate::firmware::signing::VendorKeys>,
    /// Numbers, signs and encodes each command for its device.
    pub ingest: Arc<Ingest>,
    /// The gateway's command session.
    pub client: AsyncClient,
    /// The devices reached over CoAP (NB-IoT): their commands wait there for the device's
    /// next request instead of being published ([`crate::sources::coap`]).
    pub coap: Arc<crate::sources::coap::routes::Routes>,
    /// `fw_status` uplinks from [`tap`].
    pub statuses: mpsc::UnboundedReceiver<Status>,
    /// Counts and pauses.
    pub metrics: Arc<Metrics>,
    /// Progress for the API.
    pub board: Arc<Board>,
    /// The shortest time between two commands to one device ([`Plan::min_gap`]), from the
    /// admission's firmware budget (`Config::firmware_command_gap`).
    pub min_gap: Duration,
}

struct Active {
    request: Request,
    rollout: Rollout,
    villages: HashMap<String, VillageId>,
    /// The request's `resumes` acted on.
    resumes: u32,
    dirty: bool,
}

/// Runs until `stop`: reloads the request file, ticks the rollout, feeds it the devices'
/// statuses, publishes what it answers and writes the progress file.
pub async fn run(mut d: Driver, stop: CancellationToken) {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let request_path = d.dir.join(control::REQUEST);
    let mut seen = None;
    let mut active: Option<Active> = None;
    let mut ticks = tokio::time::interval(TICK);
    let mut reloads = tokio::time::interval(RELOAD);
    loop {
        // The earliest held command, as a wait from now (the rollout's times are wall ms).
        let due = active
            .as_ref()
            .and_then(|a| a.rollout.next_due())
            .map(|due| Duration::from_millis(due.saturating_sub(crate::clock::wall_ms())));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(due.unwrap_or(TICK)), if due.is_some() => {
                if let Some(a) = active.as_mut() {
                    let sends = a.rollout.paced(crate::clock::wall_ms());
                    if !sends.is_empty() {
                        a.dirty = true;
                    }
                    publish(&d, a, sends).await;
                }
            }
            _ = reloads.tick() => {
                let now = modified(&request_path);
                if now != seen {
                    seen = now;
                    reload(&d, &mut active);
                }
                if let Some(a) = active.as_mut().filter(|a| a.dirty) {
                    a.dirty = false;
                    write_progress(&d, a);
                }
            }
            _ = ticks.tick() => {
                if let Some(a) = active.as_mut() {
                    let sends = a.rollout.tick(crate::clock::wall_ms());
                    if !sends.is_empty() {
                        a.dirty = true;
                    }
                    publish(&d, a, sends).await;
                }
            }
            Some((village, device, status)) = d.statuses.recv() => {
                let Some(a) = active.as_mut() else { continue };
                if a.villages.get(device.as_str()) != Some(&village) {
                    continue;
                }
                let was_paused = a.rollout.is_paused();
                let next = a.rollout.on_status(device.as_str(), &status, crate::clock::wall_ms());
                a.dirty = true;
                if a.rollout.is_paused() && !was_paused {
                    tracing::warn!(rollout = %a.request.id, "Firmware rollout paused itself: too many devices failed.");
                }
                publish(&d, a, next.into_iter().collect()).await;
            }
        }
    }
    if let Some(a) = active.as_ref() {
        write_progress(&d, a);
    }
}

/// Acts on a changed request file: a new rollout, or a pause or resume of the current one.
fn reload(d: &Driver, active: &mut Option<Active>) {
    let refuse = |reason: &'static str, error: &dyn std::fmt::Display| {
        d.metrics.firmware_refused.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
        tracing::error!(reason, %error, "Firmware rollout request refused; the current rollout, if any, goes on.");
    };
    let request = match Request::load(&d.dir) {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(error) => return refuse("invalid", &error),
    };
    if let Some(a) = active.as_mut().filter(|a| a.request.id == request.id) {
        if request.resumes > a.resumes {
            a.resumes = request.resumes;
            if !request.paused {
                tracing::info!(rollout = %request.id, "Firmware rollout resumed by the operator.");
                a.rollout.resume();
            }
        }
        if request.paused && !a.rollout.is_paused() {
            tracing::info!(rollout = %request.id, "Firmware rollout paused by the operator.");
            a.rollout.pause();
        }
        a.request = request;
        a.dirty = true;
        return;
    }
    match start(d, request) {
        Ok(a) => {
            // Shown at zero from the start, so "no resend" reads as a sample, not an absence.
            for kind in [
                DownlinkKind::FwOffer,
                DownlinkKind::FwChunk,
                DownlinkKind::FwCommit,
                DownlinkKind::FwConfirm,
            ] {
                d.metrics.firmware_resends.get_or_create(&KindLabel { kind: kind.as_str().into() }).inc_by(0);
            }
            tracing::info!(
                rollout = %a.request.id,
                version = %a.request.signed.version,
                devices = a.request.devices.len(),
                "Firmware rollout started."
            );
            *active = Some(a);
            if let Some(a) = active.as_mut() {
                write_progress(d, a);
            }
        }
        Err((reason, error)) => refuse(reason, &error),
    }
}

fn start(d: &Driver, request: Request) -> Result<Active, (&'static str, ControlError)> {
    let vendor = d.vendor.as_ref().ok_or(("no_vendor_key", ControlError::NoVendorKey))?;
    // The gateway checks the signature again: the request file may have been written by
    // hand, and an image the bootloaders would refuse is better refused here, once.
    let image = request.image(&d.dir, vendor).map_err(|e| ("signature", e))?;
    let mut villages = HashMap::new();
    for t in &request.devices {
        let village = VillageId::new(&t.village)
            .map_err(|e| ("invalid", ControlError::Refused(format!("village {:?}: {e}", t.village))))?;
        DeviceId::new(&t.device)
            .map_err(|e| ("invalid", ControlError::Refused(format!("device {:?}: {e}", t.device))))?;
        villages.insert(t.device.clone(), village);
    }
    let devices = request.devices.iter().map(|t| t.device.clone()).collect();
    let plan = Plan { min_gap: d.min_gap, ..Plan::from(&request.plan) };
    let mut rollout = Rollout::new(image, &request.signed, devices, plan)
        .map_err(|e| ("invalid", ControlError::Refused(e.to_string())))?;
    let mut resumes = request.resumes;
    // After a restart: what the devices already settled stays settled, a pause stays paused
    // unless the operator resumed since.
    if let Ok(Some(progress)) = Progress::load(&d.dir).map_err(|error| {
        tracing::warn!(%error, "Firmware progress file unreadable; the rollout starts over from its offers.");
    }) && progress.id == request.id
    {
        let paused = (progress.paused && request.resumes <= progress.resumes) || request.paused;
        rollout.restore(progress.settled(), paused);
        resumes = resumes.max(progress.resumes);
        tracing::info!(rollout = %request.id, "Firmware rollout continues where the progress file left it.");
    } else if request.paused {
        rollout.pause();
    }
    Ok(Active { request, rollout, villages, resumes, dirty: true })
}

/// Signs each command for its device (its key, the boot the gateway last authenticated, the
/// durable downlink counter, as every other downlink) and publishes it on `down/{kind}`.
async fn publish(d: &Driver, a: &mut Active, sends: Vec<Send>) {
    let now = crate::clock::wall_ms();
    for Send { device, body, resend } in sends {
        let Some(village) = a.villages.get(&device) else { continue };
        let Ok(id) = DeviceId::new(&device) else { continue };
        let kind = body.kind().as_str();
        let Some((topic, payload)) = d.ingest.command_for(village, &id, body, now) else {
            if let Some(suppressed) = d.metrics.may_log("firmware_command") {
                tracing::warn!(device = %device, suppressed, "No firmware command for a revoked device, or no command number.");
            }
            continue;
        };
        // An NB-IoT device's command waits for its next request; the others are published.
        if let Err(payload) = d.coap.post(&device, payload) {
            // Awaited: a full client queue slows the rollout down instead of dropping chunks
            // (a dropped one would cost a `resend_after` wait).
            if let Err(error) = d.client.publish(topic, QoS::AtLeastOnce, false, payload).await {
                tracing::error!(%error, "Cannot queue a firmware command.");
                return;
            }
        }
        d.metrics.firmware_commands.get_or_create(&KindLabel { kind: kind.into() }).inc();
        if resend {
            d.metrics.firmware_resends.get_or_create(&KindLabel { kind: kind.into() }).inc();
        }
    }
}

fn write_progress(d: &Driver, a: &Active) {
    let progress = Progress::of(
        &a.request.id,
        &a.request.signed.version,
        &a.rollout,
        a.resumes,
        a.request.paused,
        crate::clock::wall_ms(),
    );
    for state in DeviceState::ALL {
        let n = progress.counts.get(state.as_str()).copied().unwrap_or(0);
        d.metrics.firmware_devices.get_or_create(&StateLabel { state: state.as_str().into() }).set(n as i64);
    }
    d.metrics.firmware_paused.set(i64::from(progress.paused));
    // Telemetry class: the next write supersedes it, and the devices' own `fw_status` points
    // carry the per-device detail.
    let point = d
        .ingest
        .scope_point(progress.updated_ms, |ts| crate::series::schema::firmware_rollout_point(&progress, ts));
    if let Err(error) =
        d.ingest.store_points(&[point], firegrid_protocol::Class::Telemetry, progress.updated_ms)
        && let Some(suppressed) = d.metrics.may_log("firmware_rollout_point")
    {
        tracing::warn!(%error, suppressed, "Cannot store the firmware rollout's progress point.");
    }
    if let Err(error) = progress.save(&d.dir)
        && let Some(suppressed) = d.metrics.may_log("firmware_progress")
    {
        tracing::error!(%error, suppressed, "Cannot write the firmware progress file.");
    }
    *d.board.progress.lock().unwrap() = Some(progress);
}
