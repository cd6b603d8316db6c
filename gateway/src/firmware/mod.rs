//! Over-the-air firmware for the detectors: the vendor's signing key and signed images
//! ([`signing`]), and the rollout that carries an image to a fleet ([`rollout`]).
//!
//! The trust chain has two links. The **vendor key** (Ed25519, [`signing::keygen`]) signs
//! the image once, offline; its public half is compiled into the detectors' bootloader
//! (firmware/boot), which refuses to swap in an image whose signature does not verify. The
//! **device key** (HMAC-SHA-256, [`crate::keys`]) authenticates every command that carries
//! the image, as it does every other command. A gateway holds only signed images and device
//! keys: it can deliver an image, not make one bootable.
//!
//! [`rollout::Rollout`] is sans-IO: it takes each device's `fw_status` and the time, and
//! answers with the commands to send (offer, the chunk at the reported offset, commit,
//! confirm), a canary share first and then waves, and pauses itself when the share of failed
//! devices passes a threshold. [`delivery`] drives it inside the running gateway: the
//! request and progress files, and the task that signs and publishes its commands over MQTT.

pub mod delivery;
pub mod rollout;
pub mod signing;

#[cfg(test)]
mod tests;
