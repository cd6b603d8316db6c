//! Firmware delivery over MQTT: the adapter that drives the sans-IO
//! [`crate::firmware::rollout::Rollout`] inside the running gateway.
//!
//! - [`control`]: the request file `firegrid firmware publish/pause/resume` writes and the
//!   gateway reloads, and the progress file it writes back (`firegrid firmware status`, the
//!   restart). Plain data and file I/O; no MQTT.
//! - [`driver`]: the task. It reloads the request (checking the image's signature under the
//!   configured vendor key once more), ticks the rollout, feeds it every `fw_status` uplink
//!   ([`driver::tap`] takes them off the accepted-message stream) and publishes what it
//!   answers: each command numbered by the durable downlink counter, signed with the device's
//!   key for the boot the gateway last authenticated, and encoded as the device last spoke,
//!   exactly as `down/ack` and `down/sounders` are ([`crate::ingest::Ingest::command_for`]),
//!   on the device's `down/{kind}` topic through the gateway's command session. It wakes at
//!   the rollout's next due time as well as at its tick, so a command held back to keep the
//!   device's statuses within their admission budget ([`crate::firmware::rollout`],
//!   "Pacing") leaves on time.
//!
//! **A restart bricks nothing.** The gateway keeps no transfer state: on start it reloads the
//! request and the progress file, keeps the devices that settled (booted or failed) as they
//! were and a pause paused, and offers the image again to every device that was on its way.
//! The device's answer says where it stands: a transfer resumes at the offset its flash
//! holds, a verified image is committed, a trial image confirmed. A trial image that waits
//! too long for its confirmation rolls itself back in the bootloader (counted failed), and
//! the bootloader only ever swaps in an image whose signature verifies, so the worst a
//! gateway outage costs is time.

pub mod control;
pub mod driver;

#[cfg(test)]
mod tests;
