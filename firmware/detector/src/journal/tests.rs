use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use embedded_storage_async::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use firegrid_protocol::{
    AckResult, Class, CommandAck, DetectorState, DeviceId, DeviceKey, Downlink, DownlinkBody, Encoding,
    Limits, StateChange, UplinkBody, VillageId,
};

use super::*;
use crate::link::{self, Uplink as Transport};
use crate::{Config, Identity, scenario};

/// The partition the wear test uses: four 2 KiB pages, as an STM32L476's flash is erased
/// (DS10198 §3.4: "Each bank contains 256 pages of 2 Kbyte").
type Partition = SimulatedNor<4, 2048>;

/// The partition of the power-cut tests: four small pages, so that a short run fills them
/// and the cuts also hit page erases.
type Nor = SimulatedNor<4, 512>;

fn block<T>(f: impl core::future::Future<Output = T>) -> T {
    embassy_futures::block_on(f)
}

// ---- The simulated part -----------------------------------------------------------------

#[test]
fn simulated_nor_keeps_nor_rules() {
    let mut nor: SimulatedNor<2, 64> = SimulatedNor::new();
    let mut word = [0u8; 4];
    block(nor.read(0, &mut word)).unwrap();
    assert_eq!(word, [0xFF; 4], "erased flash reads 0xFF");
    block(nor.write(4, &[0x0F, 0xF0, 0xFF, 0x00])).unwrap();
    assert_eq!(block(nor.write(4, &[0x1F, 0xF0, 0xFF, 0x00])), Err(NorError::NotErased), "a 0 bit stays 0");
    block(nor.write(4, &[0x0E, 0x00, 0xFF, 0x00])).unwrap();
    block(nor.read(4, &mut word)).unwrap();
    assert_eq!(word, [0x0E, 0x00, 0xFF, 0x00], "writing again only clears more bits");
    assert_eq!(block(nor.write(2, &[0; 4])), Err(NorError::NotAligned));
    assert_eq!(block(nor.write(0, &[0; 3])), Err(NorError::NotAligned));
    assert_eq!(block(nor.erase(0, 32)), Err(NorError::NotAligned), "erase takes whole pages");
    assert_eq!(block(nor.write(128, &[0; 4])), Err(NorError::OutOfBounds));
    block(nor.erase(0, 64)).unwrap();
    block(nor.read(4, &mut word)).unwrap();
    assert_eq!(word, [0xFF; 4]);
    assert_eq!(nor.erase_counts(), &[1, 0], "erases are counted per page");
}

#[test]
fn a_power_cut_leaves_half_done_work_and_stops_the_part() {
    let mut nor: SimulatedNor<2, 64> = SimulatedNor::new();
    nor.cut_after(1);
    assert_eq!(block(nor.write(0, &[0; 8])), Err(NorError::PowerCut), "cut at the second word");
    assert!(nor.is_cut());
    let mut bytes = [0u8; 8];
    assert_eq!(block(nor.read(0, &mut bytes)), Err(NorError::PowerCut), "nothing works without power");
    nor.power_on();
    block(nor.read(0, &mut bytes)).unwrap();
    assert_eq!(bytes, [0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF], "first word done, second only its first byte");
    block(nor.write(32, &[0; 32])).unwrap();
    nor.cut_after(0);
    assert_eq!(block(nor.erase(0, 64)), Err(NorError::PowerCut));
    nor.power_on();
    let mut page = [0u8; 64];
    block(nor.read(0, &mut page)).unwrap();
    assert!(page[..32].iter().all(|&b| b == 0xFF) && page[32..].iter().all(|&b| b == 0), "half erased");
    assert_eq!(nor.erase_counts(), &[0, 0], "an erase cut short is not counted as one");
}

// ---- Records ----------------------------------------------------------------------------

fn village() -> VillageId {
    VillageId::new("dongcun").unwrap()
}

fn key() -> DeviceKey {
    DeviceKey::from_bytes([7; 32])
}

fn device(boot: u16) -> Device {
    let id = Identity::new(village(), DeviceId::new("sd-1").unwrap(), boot).with_key(key());
    Device::new(Config::default(), scenario::CALIBRATION, id, 0)
}

fn alarm(n: u32) -> UplinkBody {
    // The obscuration carries the test's message number, exactly representable in an f32.
    UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: n as f32 / 64.0 })
}

fn event(n: u32) -> UplinkBody {
    UplinkBody::CommandAck(CommandAck { cmd_seq: n, result: AckResult::Applied })
}

/// The test's number of a message made by [`alarm`] or [`event`].
fn number(body: &UplinkBody) -> Option<u32> {
    match body {
        UplinkBody::State(s) => Some((s.obscuration_db_m * 64.0) as u32),
        UplinkBody::CommandAck(a) => Some(a.cmd_seq),
        _ => None,
    }
}

fn signed(boot: u16, seq: u32, body: UplinkBody) -> Uplink {
    let mut msg = Uplink::new(DeviceId::new("sd-1").unwrap(), boot, seq, 0, body);
    msg.sign(&village(), &key());
    msg
}

fn loaded(journal: &mut impl Journal) -> Vec<Uplink> {
    let mut all = Vec::new();
    let _ = journal.load(&mut |m, _| all.push(m));
    all
}

#[test]
fn records_survive_reopening_and_are_removed_by_key() {
    let mut journal = FlashJournal::new(Nor::new(), 0..Nor::size());
    let msgs = [signed(3, 0, alarm(1)), signed(3, 1, event(2)), signed(3, 2, alarm(3))];
    for m in &msgs {
        journal.store(m, (m.boot, m.seq)).unwrap();
    }
    journal.remove(3, 1).unwrap();
    journal.remove(9, 9).unwrap();
    let mut journal = FlashJournal::new(journal.into_flash(), 0..Nor::size());
    assert_eq!(loaded(&mut journal), [msgs[0].clone(), msgs[2].clone()], "oldest first, tag and all");
}

// ---- The device over a journal ----------------------------------------------------------

/// A link that is up or down, records what is sent and hands over queued downlinks.
#[derive(Default)]
struct Link {
    up: bool,
    sent: Vec<Vec<u8>>,
    inbox: Vec<Vec<u8>>,
    /// Shared with [`Powered`]: false from the moment the flash lost power, so nothing is
    /// sent by a device that is in fact off.
    power: Rc<Cell<bool>>,
}

impl Transport for Link {
    type Error = ();
    fn ready(&mut self) -> bool {
        self.up && self.power.get()
    }
    fn send(&mut self, _kind: firegrid_protocol::UplinkKind, payload: &[u8]) -> Result<(), ()> {
        self.sent.push(payload.to_vec());
        Ok(())
    }
    fn poll(&mut self, on_downlink: &mut dyn FnMut(&[u8])) -> Result<(), ()> {
        if self.up {
            for d in std::mem::take(&mut self.inbox) {
                on_downlink(&d);
            }
        }
        Ok(())
    }
}

/// A [`SimulatedNor`] that tells the link when its power is cut.
struct Powered {
    nor: Nor,
    power: Rc<Cell<bool>>,
}

impl Powered {
    fn note(&self) {
        if self.nor.is_cut() {
            self.power.set(false);
        }
    }
}

impl ErrorType for Powered {
    type Error = NorError;
}

impl ReadNorFlash for Powered {
    const READ_SIZE: usize = Nor::READ_SIZE;
    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), NorError> {
        self.nor.read(offset, bytes).await
    }
    fn capacity(&self) -> usize {
        self.nor.capacity()
    }
}

impl NorFlash for Powered {
    const WRITE_SIZE: usize = Nor::WRITE_SIZE;
    const ERASE_SIZE: usize = Nor::ERASE_SIZE;
    async fn erase(&mut self, from: u32, to: u32) -> Result<(), NorError> {
        let r = self.nor.erase(from, to).await;
        self.note();
        r
    }
    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), NorError> {
        let r = self.nor.write(offset, bytes).await;
        self.note();
        r
    }
}

impl embedded_storage_async::nor_flash::MultiwriteNorFlash for Powered {}

/// The gateway's duplicate window, as `gateway/src/admission.rs` (`window_verdict`,
/// `remember`) keeps it for a keyed device: one boot, the highest `seq` and the 128 below it.
/// A fresh message is stored and acknowledged, a duplicate acknowledged again, one of an
/// earlier boot answered with a challenge for that boot; acks and challenges are signed for
/// the boot of the message they answer, as `gateway/src/ingest.rs` (`ack_for`) signs them.
#[derive(Default)]
struct Gateway {
    window: Option<(u16, u32, u128)>,
    /// How often each test message number was stored.
    stored: BTreeMap<u32, u32>,
    cmd_seq: u32,
}

impl Gateway {
    fn command(&mut self, boot: u16, body: DownlinkBody) -> Vec<u8> {
        self.cmd_seq += 1;
        let mut cmd = Downlink::new(self.cmd_seq, 0, body);
        cmd.sign(&village(), &DeviceId::new("sd-1").unwrap(), boot, &key());
        let mut buf = [0u8; 128];
        cmd.encode(Encoding::Compact, &mut buf).unwrap().to_vec()
    }

    /// Takes what the device sent and returns the downlinks it answers with.
    fn receive(&mut self, sent: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut answers = Vec::new();
        for payload in sent {
            let msg = Uplink::receive(payload, &Limits::default()).unwrap();
            assert_eq!(msg.verify(&village(), &key()), Ok(()), "every uplink is signed");
            if msg.class() == Class::Telemetry {
                continue;
            }
            let (boot, seq) = (msg.boot, msg.seq);
            let fresh = match &mut self.window {
                None => true,
                Some((b, _, _)) if boot.wrapping_sub(*b) < 0x8000 && boot != *b => true,
                Some((b, _, _)) if boot != *b => {
                    answers.push(self.command(boot, DownlinkBody::Challenge { nonce: 1 }));
                    continue;
                }
                Some((_, top, _)) if seq > *top => true,
                Some((_, top, seen)) => {
                    let age = *top - seq;
                    if age >= 128 {
                        continue;
                    }
                    *seen & (1 << age) == 0
                }
            };
            if fresh {
                self.window = match self.window {
                    Some((b, top, seen)) if b == boot && seq > top => {
                        Some((b, seq, if seq - top >= 128 { 1 } else { (seen << (seq - top)) | 1 }))
                    }
                    Some((b, top, seen)) if b == boot => Some((b, top, seen | 1 << (top - seq))),
                    _ => Some((boot, seq, 1)),
                };
                *self.stored.entry(number(&msg.body).unwrap()).or_default() += 1;
            }
            answers.push(self.command(boot, DownlinkBody::Ack { boot, seq }));
        }
        answers
    }
}

/// A device, its flash, its link and the gateway, with the model's books.
struct Rig {
    flash: Option<Powered>,
    power: Rc<Cell<bool>>,
    device: Device,
    link: Link,
    gateway: Gateway,
    now: u64,
    raised: u32,
    /// Messages that must never be lost: stored in flash or sent at least once.
    committed: BTreeSet<u32>,
    /// Re-issues seen per message (a new identity for the same message).
    reissued: BTreeMap<u32, u32>,
}

impl Rig {
    fn new() -> Self {
        let power = Rc::new(Cell::new(true));
        Rig {
            flash: Some(Powered { nor: Nor::new(), power: power.clone() }),
            link: Link { power: power.clone(), ..Link::default() },
            power,
            device: device(1),
            gateway: Gateway::default(),
            now: 0,
            raised: 0,
            committed: BTreeSet::new(),
            reissued: BTreeMap::new(),
        }
    }

    fn with_journal<T>(
        &mut self,
        f: impl FnOnce(&mut Device, &mut Link, &mut FlashJournal<Powered>) -> T,
    ) -> T {
        let mut journal = FlashJournal::new(self.flash.take().unwrap(), 0..Nor::size());
        let out = f(&mut self.device, &mut self.link, &mut journal);
        self.flash = Some(journal.into_flash());
        out
    }

    fn nor(&mut self) -> &mut Nor {
        &mut self.flash.as_mut().unwrap().nor
    }

    fn raise(&mut self, alarm_class: bool) {
        self.raised += 1;
        let n = self.raised;
        self.device.queue(self.now, if alarm_class { alarm(n) } else { event(n) });
    }

    fn identities(&self) -> BTreeMap<u32, (u16, u32)> {
        let e = self.device.outbox().entries().iter();
        e.filter_map(|e| number(&e.msg.body).map(|n| (n, (e.msg.boot, e.msg.seq)))).collect()
    }

    /// One pass of the board's loop: tick, pump, and (link up) the gateway's answers, which
    /// arrive at the next pump unless `lose_answers`.
    fn pump(&mut self, up: bool, lose_answers: bool) {
        let before = self.identities();
        self.device.tick(self.now);
        self.link.up = up;
        let now = self.now;
        self.with_journal(|d, l, j| link::pump_journaled(d, l, j, now, Encoding::Compact).unwrap());
        for (n, id) in self.identities() {
            if before.get(&n).is_some_and(|old| *old != id) {
                *self.reissued.entry(n).or_default() += 1;
            }
        }
        let stored = self.device.outbox().entries().iter().filter(|e| e.stored);
        self.committed.extend(stored.filter_map(|e| number(&e.msg.body)));
        let sent = std::mem::take(&mut self.link.sent);
        for payload in &sent {
            let msg = Uplink::receive(payload, &Limits::default()).unwrap();
            self.committed.extend(number(&msg.body));
        }
        let answers = self.gateway.receive(&sent);
        if !lose_answers {
            self.link.inbox.extend(answers);
        }
        self.now += crate::outbox::ALARM_RETRY_MS;
    }

    /// A reset: RAM is gone (the device, the link's undelivered answers), the flash stays;
    /// the board boots with the next boot counter and reloads the journal.
    fn reboot(&mut self) {
        self.nor().power_on();
        self.power.set(true);
        let boot = self.device.identity().boot.wrapping_add(1);
        self.device = device(boot);
        self.link.inbox.clear();
        let now = self.now;
        self.with_journal(|d, _, j| restore(d, j, now).unwrap());
    }

    /// No committed message is lost: each is at the gateway or still queued.
    fn check_nothing_lost(&self) {
        let queued: BTreeSet<u32> = self.identities().into_keys().collect();
        for n in &self.committed {
            assert!(self.gateway.stored.contains_key(n) || queued.contains(n), "message {n} lost");
        }
    }

    /// The gateway stored each message once, plus once per re-issue of it at most.
    fn check_duplicates(&self) {
        for (n, times) in &self.gateway.stored {
            let allowed = 1 + self.reissued.get(n).copied().unwrap_or(0);
            assert!(*times <= allowed, "message {n} stored {times} times, re-issued {}", allowed - 1);
        }
    }

    /// Link up and answers delivered until quiet: every committed message reaches the
    /// gateway and leaves the device, and the journal ends up empty.
    fn drain(&mut self) {
        for _ in 0..60 {
            self.pump(true, false);
            self.now += crate::outbox::MAX_RETRY_MS;
            let outbox = self.device.outbox();
            let settled = outbox.entries().iter().all(|e| e.msg.class() == Class::Telemetry);
            if settled && !outbox.has_forgotten() && self.link.inbox.is_empty() {
                break;
            }
        }
        for n in &self.committed {
            assert!(self.gateway.stored.contains_key(n), "message {n} never reached the gateway");
        }
        assert!(self.device.outbox().entries().iter().all(|e| e.msg.class() == Class::Telemetry));
        assert_eq!(self.with_journal(|_, _, j| loaded(j)), [], "every record removed after its ack");
    }
}

#[test]
fn an_unacknowledged_alarm_survives_a_reset_and_is_resent_byte_for_byte() {
    let mut rig = Rig::new();
    rig.raise(true);
    rig.pump(true, true); // sent, stored by the gateway, its ack lost
    let first = rig.with_journal(|_, _, j| loaded(j));
    assert_eq!(first.len(), 1, "stored before it was sent");
    rig.reboot();
    assert_eq!(rig.device.outbox().len(), 1, "reloaded");
    assert_eq!(rig.device.identity().boot, 2);
    rig.device.tick(rig.now); // the new boot's heartbeat
    let mut link = Link { up: true, power: rig.power.clone(), ..Link::default() };
    let now = rig.now;
    rig.with_journal(|d, _, j| link::pump_journaled(d, &mut link, j, now, Encoding::Compact).unwrap());
    let mut bytes = [0u8; 128];
    let original = first[0].encode(Encoding::Compact, &mut bytes).unwrap();
    assert_eq!(link.sent[0], original, "the earlier boot's alarm goes first, with its original bytes");
    let answers = rig.gateway.receive(&link.sent);
    assert_eq!(rig.gateway.stored[&1], 1, "the gateway took the resend for a duplicate");
    rig.link.inbox = answers;
    rig.pump(true, false);
    assert!(rig.device.outbox().entries().iter().all(|e| e.msg.class() == Class::Telemetry), "acknowledged");
    assert_eq!(rig.with_journal(|_, _, j| loaded(j)), [], "and removed from flash");
    assert_eq!(rig.device.refusals().total(), 0, "the ack signed for boot 1 was admitted");
}

#[test]
fn a_forged_ack_for_a_reloaded_alarm_drops_nothing() {
    let mut rig = Rig::new();
    rig.raise(true);
    rig.pump(false, false);
    rig.reboot();
    let (boot, seq) = rig.identities()[&1];
    let mut cmd = Downlink::new(1, 0, DownlinkBody::Ack { boot, seq });
    cmd.sign(&village(), &DeviceId::new("sd-1").unwrap(), boot, &DeviceKey::from_bytes([9; 32]));
    let mut buf = [0u8; 128];
    rig.device.on_downlink_in(0, cmd.encode(Encoding::Compact, &mut buf).unwrap(), Encoding::Compact);
    assert_eq!(rig.device.outbox().len(), 1, "still pending");
    assert_eq!(rig.device.refusals().bad_signature, 1);
}

#[test]
fn a_challenge_for_an_earlier_boot_reissues_its_messages_under_this_one() {
    let mut rig = Rig::new();
    rig.raise(true);
    rig.pump(false, false); // stored, never sent
    rig.reboot();
    rig.reboot(); // boot 3 holds boot 1's alarm
    rig.gateway.window = Some((2, 0, 1)); // the gateway has seen boot 2
    rig.pump(true, false); // resent as (1, 0): an earlier boot, challenged
    assert_eq!(rig.gateway.stored.get(&1), None);
    rig.pump(true, false); // the challenge re-issues it as boot 3's
    rig.pump(true, false);
    assert_eq!(rig.gateway.stored.get(&1), Some(&1), "delivered once, under its new identity");
    assert_eq!(rig.reissued.get(&1), Some(&1));
    rig.drain();
}

#[test]
fn telemetry_is_never_stored() {
    let mut rig = Rig::new();
    rig.pump(false, false); // the first heartbeat, link down
    rig.raise(false);
    rig.pump(false, false);
    let stored = rig.with_journal(|_, _, j| loaded(j));
    assert_eq!(stored.iter().map(|m| m.class()).collect::<Vec<_>>(), [Class::Event]);
    assert!(rig.device.outbox().entries().iter().any(|e| e.msg.class() == Class::Telemetry && !e.stored));
}

#[test]
fn a_failing_flash_is_counted_and_the_alarm_still_goes_out() {
    let mut rig = Rig::new();
    rig.nor().set_broken(true);
    rig.raise(true);
    rig.pump(true, true);
    assert_eq!(rig.gateway.stored.get(&1), Some(&1), "sent from RAM");
    assert!(rig.device.journal_failures() > 0);
    assert!(!rig.device.outbox().entries()[0].stored);
    rig.nor().set_broken(false);
    rig.pump(false, false);
    assert!(rig.device.outbox().entries().iter().any(|e| e.stored), "stored once the flash works again");
    rig.drain();
}

#[test]
fn a_full_journal_recovers_once_its_oldest_record_is_acknowledged() {
    let mut device = device(1);
    let mut journal = FlashJournal::new(Nor::new(), 0..Nor::size());
    // An alarm that stays unacknowledged while event after event is stored and acknowledged.
    device.queue(0, alarm(1));
    assert!(sync(&mut device, &mut journal));
    let mut n = 2;
    while device.journal_failures() == 0 && n < 200 {
        device.queue(0, event(n));
        sync(&mut device, &mut journal);
        let (boot, seq) = (1, device.outbox().entries().last().unwrap().msg.seq);
        assert!(device.outbox_mut().ack(boot, seq));
        n += 1;
    }
    assert!(device.journal_failures() > 0, "the journal filled up behind the alarm");
    assert!(n > 20, "only after {n} messages");
    // The event that did not fit waits in RAM; the alarm's ack frees the oldest page.
    device.queue(0, event(n));
    let seq = device.outbox().entries()[0].msg.seq;
    assert!(device.outbox_mut().ack(1, seq));
    assert!(sync(&mut device, &mut journal), "everything stored and removed again");
    assert!(device.outbox().entries().iter().all(|e| e.stored));
    let kept: Vec<Option<u32>> = loaded(&mut journal).iter().map(|m| number(&m.body)).collect();
    assert_eq!(kept, [Some(n)], "only the newest event is left in flash");
}

/// The scripted run that [`a_power_cut_at_every_step_loses_nothing`] cuts: alarms and events
/// raised, sent, acknowledged, answers lost, the link down, over enough rounds to fill the
/// partition and erase its pages.
fn script(rig: &mut Rig) {
    for _ in 0..12 {
        rig.raise(true);
        rig.pump(true, false);
        rig.raise(false);
        rig.raise(true);
        rig.pump(true, true);
        rig.pump(true, false);
        rig.raise(false);
        rig.pump(false, false);
        rig.pump(true, false);
        rig.pump(true, false);
    }
}

#[test]
fn a_power_cut_at_every_step_loses_nothing() {
    let mut clean = Rig::new();
    let start = clean.nor().steps();
    script(&mut clean);
    let steps = clean.nor().steps() - start;
    assert!(clean.nor().erase_counts().iter().all(|&n| n > 0), "the script erases every page");
    println!("power cut at each of {steps} write and erase steps");
    for k in 0..steps {
        let mut rig = Rig::new();
        rig.nor().cut_after(k);
        script(&mut rig);
        assert!(rig.nor().is_cut(), "cut at step {k}");
        rig.reboot();
        rig.check_nothing_lost();
        rig.check_duplicates();
        rig.drain();
        rig.check_duplicates();
    }
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Raise {
        alarm: bool,
    },
    Pump {
        up: bool,
        lose_answers: bool,
    },
    /// Power goes at the k-th flash step from now (during a later pump, if it gets that far).
    Cut(u64),
    /// A reset without a flash operation under way (watchdog, battery swap between pumps).
    Reboot,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        3 => any::<bool>().prop_map(|alarm| Op::Raise { alarm }),
        5 => (any::<bool>(), proptest::bool::weighted(0.3)).prop_map(|(up, lose_answers)| Op::Pump { up, lose_answers }),
        1 => (0u64..120).prop_map(Op::Cut),
        1 => Just(Op::Reboot),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Model-based: whatever the order of alarms, events, sends, lost and delivered acks,
    /// power cuts at any write or erase step and resets, after every reset each alarm or
    /// event that was stored or sent is at the gateway or pending again, the gateway stores
    /// no message twice except once per re-issue (its window moved past the boot), and once
    /// the link works everything arrives and the journal empties.
    #[test]
    fn no_alarm_is_lost_across_power_cuts(ops in proptest::collection::vec(op(), 1..60)) {
        let mut rig = Rig::new();
        for op in ops {
            match op {
                // The outbox holds 16; the model stays below it so nothing is shed.
                Op::Raise { alarm } if rig.device.outbox().len() < 12 => rig.raise(alarm),
                Op::Raise { .. } => {}
                Op::Pump { up, lose_answers } => rig.pump(up, lose_answers),
                Op::Cut(k) => rig.nor().cut_after(k),
                Op::Reboot => rig.reboot(),
            }
            if rig.nor().is_cut() {
                rig.reboot();
            }
            if matches!(op, Op::Reboot) || !rig.power.get() {
                rig.check_nothing_lost();
            }
            rig.check_duplicates();
        }
        rig.nor().power_on();
        rig.power.set(true);
        rig.check_nothing_lost();
        rig.drain();
        rig.check_duplicates();
    }
}

// ---- Wear -------------------------------------------------------------------------------

/// Ten years of a busy detector's alarm- and event-class messages through one 4-page
/// partition stay far inside the flash's erase endurance.
///
/// Rate, per year, rounded up: 50 alarm incidents (pre-alarm, alarm, hush, cleared: 4
/// messages each), 200 pre-alarms that clear (2 each), 52 self-tests (test, normal, command
/// ack: 3 each), 50 fault changes, 100 other command acks and 10 boot answers: 916, taken as
/// 1,000 a year, so 10,000 in ten years. The test runs three times that, 30,000 messages,
/// each stored, acknowledged and removed. Endurance: 10,000 program/erase cycles per page,
/// the minimum that ST's STM32L476 datasheet (DS10198, "Flash memory endurance and data
/// retention") guarantees.
#[test]
fn ten_years_of_alarms_stay_within_the_erase_budget() {
    const MESSAGES: u32 = 30_000;
    const ENDURANCE: u32 = 10_000;
    let mut journal = FlashJournal::new(Partition::new(), 0..Partition::size());
    // A 15-digit IMEI as the device id, as the protocol README's size table assumes.
    let imei = DeviceId::new("862177040123456").unwrap();
    for n in 0..MESSAGES {
        // Alarms and events alternate; up to three wait for their acks at a time.
        let body = if n % 2 == 0 { alarm(n % 1_000) } else { event(n) };
        let mut msg = Uplink::new(imei.clone(), 1, n, 1_763_860_000_000, body);
        msg.sign(&village(), &key());
        journal.store(&msg, (1, n)).unwrap();
        if n >= 2 {
            journal.remove(1, n - 2).unwrap();
        }
    }
    let flash = journal.into_flash();
    let erases = flash.erase_counts();
    let worst = *erases.iter().max().unwrap();
    let least = *erases.iter().min().unwrap();
    println!("{MESSAGES} messages: page erases {erases:?}, worst {worst} of {ENDURANCE}");
    assert!(worst * 10 <= ENDURANCE, "worst page {worst} erases: not a tenth of the endurance");
    assert!(worst - least <= 1, "the pages wear evenly: {erases:?}");
}
