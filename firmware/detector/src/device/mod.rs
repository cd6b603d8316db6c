//! The detector's state machine: what the device is doing and what it says about it.
//!
//! [`Device`] is sans-IO. The board calls `on_*` with what happened and the current time,
//! [`Device::tick`] when time passed, asks [`Device::sound`] what the sounder plays, and
//! moves messages between [`Device::outbox_mut`] and a transport ([`crate::link::pump`]).
//!
//! ```text
//!            smoke ≥ pre-alarm              confirmed smoke
//!  Standby ─────────────────────► PreAlarm ─────────────────► Alarm ◄──────┐
//!     ▲  ◄───────────────────────     │  ◄──── smoke gone ──────┘  │ button/   │ heavy smoke
//!     │       3 clean samples         │                             ▼ hush cmd  │ or hush over
//!     │                               └────────── hush cmd ──────► Hush ───────┘
//!     ├── short press ──► SelfTest ── result ──► Standby
//!     └── long press ───► Drill ───── timeout or press ──► Standby
//! ```
//! Faults (low battery, contamination, chamber or sensor failure, removed from base, end
//! of life) are orthogonal flags: each is reported when raised and cleared, each makes
//! the sounder chirp, and none stops a fire alarm.

use firegrid_protocol::{
    AckResult, AuthError, BootAnnouncement, CommandAck, DetectorState, DeviceId, DeviceKey, Downlink,
    DownlinkBody, DownlinkGuard, Encoding, Fault, FaultKind, FirmwareStatus, FirmwareVersion, Heartbeat,
    Limits, StateChange, Uplink, UplinkBody, VillageId,
};

use crate::config::{Calibration, Config};
use crate::detect::{ChamberSample, Detector, Judgement};
use crate::fmt::{info, warning};
use crate::outbox::Outbox;
use crate::sound::Sound;
use crate::trust::Refusals;
use crate::update::FirmwareCommand;

/// Outbox slots of a [`Device`]: each holds one decoded uplink (about 220 bytes of RAM; the
/// whole `Device` with 16 slots is about 4 KiB, measured on the Cortex-M3 image).
pub const OUTBOX_SLOTS: usize = 16;

/// Consecutive failed reads of the front end before the sensor fault is raised.
const BUS_ERROR_LIMIT: u8 = 3;
/// The low-battery fault clears only this far above its threshold, so a cell hovering at
/// the threshold does not flap between raised and cleared.
const BATTERY_HYSTERESIS_MV: u16 = 100;

/// Who the device is on the wire, and how it proves it.
///
/// With a [`DeviceKey`] (written into the device at the factory from the gateway's
/// provisioning file) every uplink is signed when it is queued and every downlink must pass
/// [`DownlinkGuard::admit`] (see [`crate::trust`]). Without one the device sends unsigned
/// messages and accepts unsigned commands, as schema version 1 devices do: the migration path
/// of a fleet that is not provisioned yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Village id, as in its topics (signed into every tag, so a message moved to another
    /// village's topics fails).
    pub village: VillageId,
    /// Device id, as in its topics.
    pub dev: DeviceId,
    /// Boot counter, incremented and stored in flash at every start by the board.
    pub boot: u16,
    /// The device's secret key, if it was provisioned. `Debug` never prints it.
    pub key: Option<DeviceKey>,
}

impl Identity {
    /// A device without a key.
    pub fn new(village: VillageId, dev: DeviceId, boot: u16) -> Self {
        Identity { village, dev, boot, key: None }
    }

    /// The same identity with `key`.
    pub fn with_key(self, key: DeviceKey) -> Self {
        Identity { key: Some(key), ..self }
    }
}

/// What the device is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No smoke; sampling every 10 s.
    Standby,
    /// Smoke above the pre-alarm threshold, being confirmed.
    PreAlarm,
    /// Confirmed smoke; the sounder plays temporal-3.
    Alarm,
    /// Alarm silenced until `until_ms`; heavy smoke overrides.
    Hush {
        /// End of the hush.
        until_ms: u64,
    },
    /// Self-test running: horn, chamber and battery under load.
    SelfTest,
    /// Drill (test mode): the sounder plays temporal-3 until `until_ms` or the next press.
    Drill {
        /// End of the drill.
        until_ms: u64,
    },
}

impl Mode {
    /// The state reported on the wire.
    pub const fn reported(self) -> DetectorState {
        match self {
            Mode::Standby => DetectorState::Normal,
            Mode::PreAlarm => DetectorState::PreAlarm,
            Mode::Alarm => DetectorState::Alarm,
            Mode::Hush { .. } => DetectorState::Hush,
            Mode::SelfTest | Mode::Drill { .. } => DetectorState::Test,
        }
    }
}

/// A press of the test button, classified by the board's [`crate::drivers::Inputs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    /// Under 3 s: self-test, hush, or battery-chirp hush, depending on the state.
    Short,
    /// 3 s or more: drill.
    Long,
}

/// The outcome of a self-test run by the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfTestResult {
    /// The sounder drew current when driven.
    pub horn_ok: bool,
    /// The chamber answered a boosted LED pulse with more scattered light.
    pub chamber_ok: bool,
    /// Battery voltage under load (LED burst and horn), mV.
    pub battery_mv: u16,
}

fn fault_index(kind: FaultKind) -> usize {
    match kind {
        FaultKind::LowBattery => 0,
        FaultKind::Contamination => 1,
        FaultKind::Tamper => 2,
        FaultKind::SensorFault => 3,
        FaultKind::EndOfLife => 4,
    }
}

/// The detector device. See the module documentation.
#[derive(Debug, Clone)]
pub struct Device {
    cfg: Config,
    detector: Detector,
    id: Identity,
    seq: u32,
    mode: Mode,
    faults: [bool; 5],
    boot_ms: u64,
    last: Option<Judgement>,
    alarm_since_ms: u64,
    next_sample_ms: u64,
    next_battery_ms: u64,
    next_heartbeat_ms: u64,
    bus_errors: u8,
    chamber_fault: bool,
    battery_mv: Option<u16>,
    battery_hush_until_ms: Option<u64>,
    linkage_since_ms: Option<u64>,
    removed_since_ms: Option<u64>,
    self_test_requested: bool,
    wall_offset_ms: Option<u64>,
    signal_dbm: i16,
    temperature_c: f32,
    outbox: Outbox<OUTBOX_SLOTS>,
    guard: DownlinkGuard,
    refusals: Refusals,
    journal_failures: u32,
    firmware: Option<FirmwareCommand>,
    self_test_ran: bool,
    self_test_passed: bool,
}

impl Device {
    /// A device started at `now_ms`. The chamber, the battery (GB 20517-2025 §5.11.1:
    /// "right after power-up") and a first heartbeat are due at once.
    pub fn new(cfg: Config, cal: Calibration, id: Identity, now_ms: u64) -> Self {
        Device {
            cfg,
            detector: Detector::new(cal),
            id,
            seq: 0,
            mode: Mode::Standby,
            faults: [false; 5],
            boot_ms: now_ms,
            last: None,
            alarm_since_ms: now_ms,
            next_sample_ms: now_ms,
            next_battery_ms: now_ms,
            next_heartbeat_ms: now_ms,
            bus_errors: 0,
            chamber_fault: false,
            battery_mv: None,
            battery_hush_until_ms: None,
            linkage_since_ms: None,
            removed_since_ms: None,
            self_test_requested: false,
            wall_offset_ms: None,
            signal_dbm: -150,
            temperature_c: 20.0,
            outbox: Outbox::new(),
            guard: DownlinkGuard::new(),
            refusals: Refusals::new(),
            journal_failures: 0,
            firmware: None,
            self_test_ran: false,
            self_test_passed: false,
        }
    }

    /// An alarm- or event-class message read back from the flash journal at boot
    /// ([`crate::journal::restore`]): queued again with its original boot counter, `seq` and
    /// tag, due at once. One of an earlier boot goes out before anything of this boot. One of
    /// this very boot (a board whose boot counter did not advance) moves the device's `seq`
    /// past it, so that no new message reuses its identity.
    pub fn restore(&mut self, msg: Uplink, origin: (u16, u32), now_ms: u64) {
        if !msg.class().is_acknowledged() {
            return;
        }
        let earlier = msg.boot != self.id.boot;
        if !earlier && msg.seq >= self.seq {
            self.seq = msg.seq.wrapping_add(1);
        }
        if self.outbox.reload(msg, origin, earlier, now_ms).is_some() {
            warning!("Outbox full: a message was shed.");
        }
    }

    /// Counts a failed flash journal operation (the message stays queued in RAM and is
    /// sent; the journal catches up at the next pump). Logged at the 1st, 2nd, 4th ...
    pub fn note_journal_failure(&mut self) {
        self.journal_failures = self.journal_failures.saturating_add(1);
        if self.journal_failures.is_power_of_two() {
            warning!("Flash journal failed (failure {}); messages kept in RAM.", self.journal_failures);
        }
    }

    /// Failed flash journal operations since boot, for the board to report.
    pub fn journal_failures(&self) -> u32 {
        self.journal_failures
    }

    /// Who the device is.
    pub fn identity(&self) -> &Identity {
        &self.id
    }

    /// Downlinks refused since boot, by reason (always zero without a key).
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether `kind` is raised.
    pub fn fault(&self, kind: FaultKind) -> bool {
        self.faults[fault_index(kind)]
    }

    /// The configuration in force (thresholds and heartbeat change by downlink).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The detection core, for its baseline and drift figures.
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// The last judgement, if a sample was taken.
    pub fn last_judgement(&self) -> Option<&Judgement> {
        self.last.as_ref()
    }

    /// Messages waiting to be sent or acknowledged.
    pub fn outbox(&self) -> &Outbox<OUTBOX_SLOTS> {
        &self.outbox
    }

    /// Messages waiting to be sent or acknowledged, for the transport to send and mark.
    pub fn outbox_mut(&mut self) -> &mut Outbox<OUTBOX_SLOTS> {
        &mut self.outbox
    }

    /// Records the radio's signal strength for the next heartbeat.
    pub fn set_signal_dbm(&mut self, dbm: i16) {
        self.signal_dbm = dbm.clamp(-150, 0);
    }

    /// Records the board temperature for the next heartbeat.
    pub fn set_temperature_c(&mut self, celsius: f32) {
        if (-40.0..=125.0).contains(&celsius) {
            self.temperature_c = celsius;
        }
    }

    /// Whether the chamber should be sampled now.
    pub fn chamber_due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_sample_ms
    }

    /// Whether the battery should be measured under load now.
    pub fn battery_due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_battery_ms
    }

    /// When the device next needs the board's attention (sample, battery, timers,
    /// retransmissions). While [`Device::sound`] is not [`Sound::Off`] the board also wakes
    /// for the pattern's edges.
    pub fn next_wake_ms(&self) -> u64 {
        let mut next = self.next_sample_ms.min(self.next_battery_ms).min(self.next_heartbeat_ms);
        if let Mode::Hush { until_ms } | Mode::Drill { until_ms } = self.mode {
            next = next.min(until_ms);
        }
        if let Some(until) = self.battery_hush_until_ms {
            next = next.min(until);
        }
        self.outbox.next_due_ms().map_or(next, |due| next.min(due))
    }

    /// Device time as Unix ms, once a downlink has told the device the time.
    pub fn wall_clock_ms(&self, now_ms: u64) -> Option<u64> {
        self.wall_offset_ms.map(|offset| offset + now_ms)
    }

    // ---- Inputs -------------------------------------------------------------------------

    /// A chamber sample, or `Err(())` when the front end did not answer.
    pub fn on_chamber(&mut self, now_ms: u64, sample: Result<ChamberSample, ()>) {
        let Ok(sample) = sample else {
            self.bus_errors = self.bus_errors.saturating_add(1);
            if self.bus_errors >= BUS_ERROR_LIMIT {
                self.set_fault(now_ms, FaultKind::SensorFault, true);
            }
            self.next_sample_ms = now_ms + self.cfg.verify_period_ms;
            return;
        };
        self.bus_errors = 0;
        let j = self.detector.judge(&self.cfg, now_ms, sample);
        self.last = Some(j);
        self.chamber_fault = j.chamber_fault;
        self.set_fault(now_ms, FaultKind::SensorFault, j.chamber_fault);
        self.set_fault(now_ms, FaultKind::Contamination, j.contamination);
        self.next_sample_ms =
            now_ms + if j.fast_sampling { self.cfg.verify_period_ms } else { self.cfg.standby_period_ms };

        match self.mode {
            Mode::Standby | Mode::PreAlarm if j.alarm => self.enter(now_ms, Mode::Alarm),
            Mode::Standby if j.pre_alarm => self.enter(now_ms, Mode::PreAlarm),
            Mode::PreAlarm if !j.pre_alarm => self.enter(now_ms, Mode::Standby),
            Mode::Alarm if !j.alarm => self.leave_alarm(now_ms),
            Mode::Hush { .. } if j.heavy && j.alarm => {
                warning!("Heavy smoke overrides the hush.");
                self.enter(now_ms, Mode::Alarm)
            }
            Mode::Hush { .. } if !j.alarm && !j.pre_alarm => self.leave_alarm(now_ms),
            Mode::SelfTest | Mode::Drill { .. } if j.alarm => self.enter(now_ms, Mode::Alarm),
            _ => {}
        }
        if let Some(cause) = j.cause {
            info!("Alarm confirmed by {}.", cause.as_str());
        }
    }

    /// A battery reading under load, in mV.
    pub fn on_battery(&mut self, now_ms: u64, millivolts: u16) {
        self.battery_mv = Some(millivolts);
        self.next_battery_ms = now_ms + self.cfg.battery_check_ms;
        let low = self.fault(FaultKind::LowBattery);
        if millivolts <= self.cfg.low_battery_mv {
            self.set_fault(now_ms, FaultKind::LowBattery, true);
        } else if low && millivolts > self.cfg.low_battery_mv + BATTERY_HYSTERESIS_MV {
            self.set_fault(now_ms, FaultKind::LowBattery, false);
            self.battery_hush_until_ms = None;
        }
    }

    /// A press of the test button.
    pub fn on_button(&mut self, now_ms: u64, press: Press) {
        let heavy = self.last.is_some_and(|j| j.heavy);
        match (self.mode, press) {
            (Mode::Alarm | Mode::PreAlarm, Press::Short) if !heavy => {
                self.enter(now_ms, Mode::Hush { until_ms: now_ms + self.cfg.hush_ms })
            }
            (Mode::Alarm | Mode::PreAlarm, _) => warning!("Hush refused: heavy smoke."),
            (Mode::Standby, Press::Short) if self.battery_chirping(now_ms) => {
                info!("Low-battery chirp silenced.");
                self.battery_hush_until_ms = Some(now_ms + self.cfg.battery_hush_ms);
            }
            (Mode::Standby, Press::Short) => self.start_self_test(now_ms),
            (Mode::Standby, Press::Long) => {
                self.enter(now_ms, Mode::Drill { until_ms: now_ms + self.cfg.drill_ms })
            }
            (Mode::Drill { .. }, _) => self.enter(now_ms, Mode::Standby),
            (Mode::Hush { .. } | Mode::SelfTest, _) => {}
        }
    }

    /// The base tamper switch: `in_base` is false once the detector is off its base.
    pub fn on_tamper(&mut self, now_ms: u64, in_base: bool) {
        if !in_base && !self.fault(FaultKind::Tamper) {
            self.removed_since_ms = Some(now_ms);
        }
        self.set_fault(now_ms, FaultKind::Tamper, !in_base);
    }

    /// Whether a self-test was asked for (button or downlink) and not yet run; reading it
    /// clears it. The board then runs the test with its drivers and calls
    /// [`Device::on_self_test`].
    pub fn take_self_test_request(&mut self) -> bool {
        core::mem::take(&mut self.self_test_requested)
    }

    /// The board's self-test results: reported as fault changes and a heartbeat carrying
    /// the battery voltage and chamber baseline.
    pub fn on_self_test(&mut self, now_ms: u64, result: SelfTestResult) {
        let failed = !result.chamber_ok || !result.horn_ok;
        self.self_test_ran = true;
        self.self_test_passed = !failed && !self.chamber_fault;
        self.set_fault(now_ms, FaultKind::SensorFault, failed || self.chamber_fault);
        self.on_battery(now_ms, result.battery_mv);
        let heartbeat = self.heartbeat(now_ms);
        self.push(now_ms, heartbeat);
        if self.mode == Mode::SelfTest {
            self.enter(now_ms, Mode::Standby);
        }
    }

    /// A downlink payload from the gateway: authenticated (with a key), validated, applied,
    /// answered.
    ///
    /// With a key, [`DownlinkGuard::admit`] comes first: a command that is unsigned, forged,
    /// issued for another boot or replayed is counted in [`Device::refusals`] and changes
    /// nothing, not even the device clock; it is not answered either. Only an authentic
    /// command that fails validation is answered `rejected`.
    pub fn on_downlink(&mut self, now_ms: u64, payload: &[u8]) {
        self.on_downlink_in(now_ms, payload, Encoding::detect(payload));
    }

    /// [`Device::on_downlink`] for a board that knows the encoding its gateway uses: a
    /// compact-only board links no JSON decoder (with its float parser, 32 KiB of flash
    /// on the Cortex-M3 image).
    pub fn on_downlink_in(&mut self, now_ms: u64, payload: &[u8], encoding: Encoding) {
        let limits = Limits::default();
        let Ok(cmd) = Downlink::decode(payload, encoding, &limits) else {
            // Nothing that does not decode has a `seq` to answer.
            warning!("Downlink undecodable.");
            return;
        };
        if let Some(key) = &self.id.key
            && let Err(reason) = self.guard.admit(&cmd, &self.id.village, &self.id.dev, self.id.boot, key)
        {
            if reason == AuthError::WrongBoot && self.on_earlier_boot_command(now_ms, &cmd) {
                return;
            }
            self.refusals.count(reason);
            return;
        }
        if cmd.validate().is_err() {
            if !matches!(cmd.body, DownlinkBody::Ack { .. }) {
                self.answer(now_ms, cmd.seq, AckResult::Rejected);
            }
            warning!("Downlink rejected.");
            return;
        }
        if cmd.ts_ms > 0 {
            self.wall_offset_ms = Some(cmd.ts_ms.saturating_sub(now_ms));
        }
        let heavy = self.last.is_some_and(|j| j.heavy);
        let result = match cmd.body {
            DownlinkBody::Ack { boot, seq } => {
                self.outbox.ack(boot, seq);
                return;
            }
            // Only a signed answer proves the boot; a device without a key has none to give.
            DownlinkBody::Challenge { nonce } => {
                if self.id.key.is_some() {
                    info!("Boot challenged; answering.");
                    self.push(now_ms, UplinkBody::Boot(BootAnnouncement { nonce }));
                }
                return;
            }
            DownlinkBody::Sounders { on } => {
                self.linkage_since_ms = on.then_some(now_ms);
                AckResult::Applied
            }
            DownlinkBody::Hush { duration_s } => match self.mode {
                Mode::Alarm | Mode::PreAlarm | Mode::Hush { .. } if !heavy => {
                    self.enter(now_ms, Mode::Hush { until_ms: now_ms + u64::from(duration_s) * 1_000 });
                    AckResult::Applied
                }
                _ => AckResult::Rejected,
            },
            DownlinkBody::SelfTest {} if self.mode == Mode::Standby => {
                self.start_self_test(now_ms);
                AckResult::Applied
            }
            DownlinkBody::SelfTest {} => AckResult::Rejected,
            DownlinkBody::SetHeartbeat { interval_s } => {
                self.cfg.heartbeat_ms = u64::from(interval_s) * 1_000;
                self.next_heartbeat_ms = now_ms + self.cfg.heartbeat_ms;
                AckResult::Applied
            }
            DownlinkBody::SetThresholds { pre_alarm_db_m, alarm_db_m } => {
                self.cfg.pre_alarm_db_m = pre_alarm_db_m;
                self.cfg.alarm_db_m = alarm_db_m;
                AckResult::Applied
            }
            // Firmware commands go to the board's updater ([`crate::update`]), which answers
            // each with a `fw_status`.
            DownlinkBody::FwOffer(offer) => {
                self.firmware = Some(FirmwareCommand::Offer(offer));
                return;
            }
            DownlinkBody::FwChunk(chunk) => {
                self.firmware = Some(FirmwareCommand::Chunk(chunk));
                return;
            }
            DownlinkBody::FwCommit {} => {
                self.firmware = Some(FirmwareCommand::Commit);
                return;
            }
            DownlinkBody::FwAbort {} => {
                self.firmware = Some(FirmwareCommand::Abort);
                return;
            }
            DownlinkBody::FwConfirm {} => {
                self.firmware = Some(FirmwareCommand::Confirm);
                return;
            }
        };
        self.answer(now_ms, cmd.seq, result);
    }

    /// The authenticated firmware command of the last downlink, if it was one and nobody took
    /// it yet; reading it clears it. [`crate::update::Updater::apply`] handles it;
    /// [`crate::link::pump_updating`] hands each one over as it arrives.
    pub fn take_firmware_command(&mut self) -> Option<FirmwareCommand> {
        self.firmware.take()
    }

    /// Queues a firmware update status (`fw_status`, telemetry class: it goes after every
    /// alarm and event).
    pub fn report_update(&mut self, now_ms: u64, status: FirmwareStatus) {
        self.push(now_ms, UplinkBody::FwStatus(status));
    }

    /// Whether the device is busy with a fire: anything but standby, or an alarm-class
    /// message not yet acknowledged. Firmware commands wait (no flash write, no restart)
    /// until it is not.
    pub fn busy_with_fire(&self) -> bool {
        self.mode != Mode::Standby
            || self.outbox.entries().iter().any(|e| e.msg.class() == firegrid_protocol::Class::Alarm)
    }

    /// Starts a self-test, as a short press in standby does (the updater asks for one when a
    /// new image boots on trial). Ignored unless in standby.
    pub fn request_self_test(&mut self, now_ms: u64) {
        if self.mode == Mode::Standby {
            self.start_self_test(now_ms);
        }
    }

    /// Whether the last self-test of this boot passed (horn, chamber, no chamber fault).
    pub fn self_test_passed(&self) -> bool {
        self.self_test_passed
    }

    /// Whether a self-test ran this boot.
    pub fn self_test_ran(&self) -> bool {
        self.self_test_ran
    }

    /// Lets time pass: hush and drill ends, battery-hush end, heartbeats, end of life.
    pub fn tick(&mut self, now_ms: u64) {
        match self.mode {
            Mode::Hush { until_ms } if now_ms >= until_ms => {
                if self.detector.alarm() {
                    self.enter(now_ms, Mode::Alarm)
                } else {
                    self.leave_alarm(now_ms)
                }
            }
            Mode::Drill { until_ms } if now_ms >= until_ms => self.enter(now_ms, Mode::Standby),
            _ => {}
        }
        if self.battery_hush_until_ms.is_some_and(|until| now_ms >= until) {
            self.battery_hush_until_ms = None;
        }
        if now_ms >= self.next_heartbeat_ms {
            let heartbeat = self.heartbeat(now_ms);
            self.push(now_ms, heartbeat);
            self.next_heartbeat_ms = now_ms + self.cfg.heartbeat_ms;
        }
        if self.cfg.manufactured_unix_ms > 0
            && let Some(wall) = self.wall_clock_ms(now_ms)
        {
            let expired = wall >= self.cfg.manufactured_unix_ms.saturating_add(self.cfg.service_life_ms);
            self.set_fault(now_ms, FaultKind::EndOfLife, expired);
        }
    }

    // ---- Outputs ------------------------------------------------------------------------

    /// What the sounder plays. A fire alarm (or drill, or building linkage) always wins
    /// over fault chirps; a hushed alarm and a hushed battery chirp are silent.
    pub fn sound(&self, now_ms: u64) -> Sound {
        match self.mode {
            Mode::Alarm => return Sound::Temporal3 { since_ms: self.alarm_since_ms },
            Mode::Drill { .. } | Mode::SelfTest => return Sound::Temporal3 { since_ms: self.alarm_since_ms },
            _ => {}
        }
        if let Some(since_ms) = self.linkage_since_ms {
            return Sound::Temporal3 { since_ms };
        }
        let period_ms = self.cfg.chirp_period_ms;
        if let Some(since_ms) = self.removed_since_ms.filter(|&t| now_ms < t + period_ms) {
            return Sound::Chirps { since_ms, count: 3, period_ms };
        }
        let other_fault = self.faults.iter().enumerate().any(|(i, &on)| on && i != 0);
        if other_fault {
            Sound::Chirps { since_ms: self.boot_ms, count: 2, period_ms }
        } else if self.battery_chirping(now_ms) {
            Sound::Chirps { since_ms: self.boot_ms, count: 1, period_ms }
        } else {
            Sound::Off
        }
    }

    /// Whether the red LED is lit: with the alarm sound, and a 100 ms blink per second in
    /// pre-alarm.
    pub fn led(&self, now_ms: u64) -> bool {
        let sound = self.sound(now_ms);
        (sound.is_alarm() && sound.is_on(now_ms)) || (self.mode == Mode::PreAlarm && now_ms % 1_000 < 100)
    }

    // ---- Internals ----------------------------------------------------------------------

    /// A genuine command signed for another boot than this one: useful only when it is about
    /// a message reloaded from that boot. The gateway signs an `ack` for the boot of the
    /// message it acknowledges, so an `ack` for a reloaded message is signed for its earlier
    /// boot; admitting it drops only a message the gateway has, so a replay of it can do no
    /// harm. A `challenge` for an earlier boot whose messages are still queued says the
    /// gateway's window has moved past that boot and takes them for replays: they are
    /// re-issued under this boot (a message it already had is then stored twice, the one
    /// duplicate its window cannot absorb). Returns whether the command was used.
    fn on_earlier_boot_command(&mut self, now_ms: u64, cmd: &Downlink) -> bool {
        let Some(key) = &self.id.key else { return false };
        let Ok(issued_for) = cmd.verify(&self.id.village, &self.id.dev, key) else { return false };
        match cmd.body {
            DownlinkBody::Ack { boot, seq } if boot == issued_for && self.outbox.holds_earlier(boot, seq) => {
                self.outbox.ack(boot, seq)
            }
            DownlinkBody::Challenge { .. } if self.outbox.holds_earlier_boot(issued_for) => {
                let (village, my_boot) = (&self.id.village, self.id.boot);
                let mut seq = self.seq;
                let n = self.outbox.reissue(issued_for, now_ms, |msg| {
                    msg.boot = my_boot;
                    msg.seq = seq;
                    seq = seq.wrapping_add(1);
                    msg.sign(village, key);
                });
                self.seq = seq;
                info!("Window moved past boot {}: {} messages re-issued.", issued_for, n);
                true
            }
            _ => false,
        }
    }

    fn battery_chirping(&self, now_ms: u64) -> bool {
        self.fault(FaultKind::LowBattery) && self.battery_hush_until_ms.is_none_or(|until| now_ms >= until)
    }

    fn start_self_test(&mut self, now_ms: u64) {
        self.self_test_requested = true;
        self.enter(now_ms, Mode::SelfTest);
    }

    fn leave_alarm(&mut self, now_ms: u64) {
        self.mode = Mode::Standby;
        info!("Alarm cleared.");
        self.push_state(now_ms, DetectorState::Cleared);
    }

    fn enter(&mut self, now_ms: u64, mode: Mode) {
        if mode == self.mode {
            return;
        }
        let was_sounding = matches!(self.mode, Mode::Alarm | Mode::Drill { .. } | Mode::SelfTest);
        let sounding = matches!(mode, Mode::Alarm | Mode::Drill { .. } | Mode::SelfTest);
        if sounding && !was_sounding {
            self.alarm_since_ms = now_ms;
        }
        let reported_changed = mode.reported() != self.mode.reported();
        self.mode = mode;
        if reported_changed {
            self.push_state(now_ms, mode.reported());
        }
    }

    fn push_state(&mut self, now_ms: u64, state: DetectorState) {
        let obscuration_db_m = self.last.map_or(0.0, |j| j.obscuration_db_m.min(20.0));
        self.push(now_ms, UplinkBody::State(StateChange { state, obscuration_db_m }));
    }

    fn set_fault(&mut self, now_ms: u64, kind: FaultKind, active: bool) {
        let slot = &mut self.faults[fault_index(kind)];
        if *slot != active {
            *slot = active;
            warning!(
                "Fault {} {}.",
                crate::scenario::fault_name(kind),
                if active { "raised" } else { "cleared" }
            );
            self.push(now_ms, UplinkBody::Fault(Fault { fault: kind, active }));
        }
    }

    fn answer(&mut self, now_ms: u64, cmd_seq: u32, result: AckResult) {
        self.push(now_ms, UplinkBody::CommandAck(CommandAck { cmd_seq, result }));
    }

    fn heartbeat(&self, now_ms: u64) -> UplinkBody {
        let mut firmware = FirmwareVersion::new();
        let _ = firmware.push_str(crate::FIRMWARE_VERSION);
        UplinkBody::Heartbeat(Heartbeat {
            battery_mv: self.battery_mv.map(|mv| mv.clamp(1_000, 12_000)),
            signal_dbm: self.signal_dbm,
            chamber_baseline: Some(self.detector.baseline_ir()),
            drift_pct: Some(self.detector.drift_pct(&self.cfg)),
            temperature_c: self.temperature_c,
            firmware,
            uptime_s: (now_ms.saturating_sub(self.boot_ms) / 1_000).min(u64::from(u32::MAX)) as u32,
        })
    }

    /// Queues `body` as the device queues its own messages (host tests that need a given
    /// alarm or event without driving the detector to it).
    #[cfg(test)]
    pub(crate) fn queue(&mut self, now_ms: u64, body: UplinkBody) {
        self.push(now_ms, body);
    }

    fn push(&mut self, now_ms: u64, body: UplinkBody) {
        let ts_ms = self.wall_clock_ms(now_ms).unwrap_or(0);
        let mut msg = Uplink::new(self.id.dev.clone(), self.id.boot, self.seq, ts_ms, body);
        // Signed once, when queued: every resend of it carries the same tag, and the gateway
        // takes a resend for the duplicate it is.
        if let Some(key) = &self.id.key {
            msg.sign(&self.id.village, key);
        }
        self.seq = self.seq.wrapping_add(1);
        if self.outbox.push(msg, now_ms).is_some() {
            warning!("Outbox full: a message was shed.");
        }
    }
}

#[cfg(test)]
mod tests;
