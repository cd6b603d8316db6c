//! The worker delivering through real HTTP to a receiver on loopback that checks signatures:
//! first delivery, retries, a receiver that is down, restarts, robot refusals, give-ups.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::receiver::{Receiver, channels};
use super::{msg, quick, targets};
use crate::Channel;
use crate::outbox::{DeliveryConfig, DeliveryReport, Outbox, Outcome, Status, run};

/// A running worker and the end of its report channel.
struct Worker {
    reports: mpsc::Receiver<DeliveryReport>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    fn start(outbox: &Outbox, channels: HashMap<String, Channel>, settings: DeliveryConfig) -> Worker {
        let (tx, reports) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(outbox.clone(), channels, settings, tx, shutdown.clone()));
        Worker { reports, shutdown, task }
    }

    /// The next report; fails the test after 10 s.
    async fn report(&mut self) -> DeliveryReport {
        match tokio::time::timeout(Duration::from_secs(10), self.reports.recv()).await {
            Ok(Some(report)) => report,
            Ok(None) => panic!("the worker stopped"),
            Err(_) => panic!("no report within 10 s"),
        }
    }

    /// Reports until one for `target` satisfies `last`, returning those for `target`.
    async fn reports_until(&mut self, target: &str, last: impl Fn(&Outcome) -> bool) -> Vec<Outcome> {
        let mut seen = Vec::new();
        loop {
            let report = self.report().await;
            if report.target == target {
                let done = last(&report.outcome);
                seen.push(report.outcome);
                if done {
                    return seen;
                }
            }
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("worker stops").unwrap();
    }
}

/// A loopback address nobody listens on (reserved, then released).
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn delivered(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Delivered { .. })
}

#[tokio::test]
async fn delivers_once_through_every_channel_kind_with_valid_signatures() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("notify.sqlite")).unwrap();
    let mut worker = Worker::start(&outbox, channels(receiver.addr), quick());
    let all = targets(&["console", "wecom", "dingtalk", "feishu", "sms"]);

    let enqueued_at = Instant::now();
    assert_eq!(outbox.enqueue(&msg(1), &all).await.unwrap(), 5);
    let first = receiver.wait_for(1).await[0].at;
    let latency = first - enqueued_at;
    eprintln!("enqueue to first request: {latency:?}");
    // Typically 1 to 5 ms here (one fsync, one query, one loopback request); the bound only
    // catches a worker that waits for a timer instead of being woken.
    assert!(latency < Duration::from_millis(500), "{latency:?}");

    let mut reports = Vec::new();
    for _ in 0..5 {
        reports.push(worker.report().await);
    }
    let outcomes: BTreeMap<_, _> = reports.iter().map(|r| (r.target.clone(), r.outcome.clone())).collect();
    assert_eq!(outcomes.len(), 5, "{reports:?}");
    assert!(outcomes.values().all(|o| *o == Outcome::Delivered { attempt: 1 }), "{reports:?}");
    assert!(reports.iter().all(|r| r.notification_id == 1 && r.case_id == 1001));

    let requests = receiver.wait_for(5).await;
    let routes: BTreeMap<_, _> = requests.iter().map(|r| (r.route.as_str(), r.authentic)).collect();
    assert_eq!(
        routes,
        BTreeMap::from([
            ("dingtalk", true),
            ("feishu", true),
            ("hook", true),
            ("sms", true),
            ("wecom", true)
        ]),
        "one authentic request per platform: {requests:?}"
    );
    let by_route = |route: &str| requests.iter().find(|r| r.route == route).unwrap().body.clone();
    assert_eq!(by_route("hook")["title"], "3号楼2单元 烟感火警");
    assert_eq!(by_route("sms")["id"], "1");
    assert_eq!(by_route("sms")["to"], "13800000000");
    assert!(by_route("wecom")["markdown"]["content"].as_str().unwrap().contains("案件 Case: 1001"));
    assert!(by_route("dingtalk")["text"]["content"].as_str().unwrap().contains("火警 Fire"));
    assert!(by_route("feishu")["content"]["text"].as_str().unwrap().contains("grid:G1"));

    assert_eq!(outbox.pending_count().await.unwrap(), 0);
    assert_eq!(outbox.dead_count().await.unwrap(), 0);
    let history = outbox.history(1001).await.unwrap();
    assert_eq!(history.len(), 5);
    assert!(
        history.iter().all(|h| h.status == Status::Delivered && h.attempts == 1 && h.delivered_ms.is_some())
    );
    assert_eq!(
        outbox.enqueue(&msg(1), &all).await.unwrap(),
        0,
        "a replayed notification is not queued again"
    );

    worker.stop().await;
    assert_eq!(receiver.requests().len(), 5, "nothing was sent twice");
    receiver.stop().await;
}

#[tokio::test]
async fn server_error_then_success_is_retried_and_the_first_failure_reported_at_once() {
    let receiver = Receiver::start().await;
    receiver.script("hook", &[(500, "database is locked")]);
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("notify.sqlite")).unwrap();
    let mut worker = Worker::start(&outbox, channels(receiver.addr), quick());

    let enqueued_at = Instant::now();
    outbox.enqueue(&msg(2), &targets(&["console"])).await.unwrap();
    let first = worker.report().await;
    let reported_after = enqueued_at.elapsed();
    let Outcome::Failed { error, reason, retryable, attempt } = &first.outcome else {
        panic!("expected a failure first: {first:?}");
    };
    assert_eq!((*reason, *retryable, *attempt), ("server_error", true, 1));
    assert!(error.contains("HTTP 500") && error.contains("database is locked"), "{error}");
    assert!(reported_after < Duration::from_millis(500), "reported before any retry: {reported_after:?}");
    assert_eq!(worker.report().await.outcome, Outcome::Delivered { attempt: 2 });

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.authentic && r.notification_id() == Some(2)), "{requests:?}");
    let wait = requests[1].at - requests[0].at;
    assert!(wait >= Duration::from_millis(45), "retried after the backoff, not at once: {wait:?}");
    let history = outbox.history(1002).await.unwrap();
    assert_eq!((history[0].status, history[0].attempts), (Status::Delivered, 2));
    assert!(history[0].last_error.as_deref().unwrap().contains("500"), "{history:?}");
    worker.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_notification_once_it_is_up() {
    let addr = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("notify.sqlite")).unwrap();
    let mut worker = Worker::start(&outbox, channels(addr), quick());

    outbox.enqueue(&msg(3), &targets(&["sms"])).await.unwrap();
    let Outcome::Failed { reason, retryable: true, attempt: 1, .. } = worker.report().await.outcome else {
        panic!("expected a retryable failure");
    };
    assert_eq!(reason, "network");
    assert_eq!(outbox.pending_count().await.unwrap(), 1);
    assert!(outbox.history(1003).await.unwrap()[0].next_attempt_ms.is_some());

    let receiver = Receiver::start_at(addr).await;
    let outcomes = worker.reports_until("sms", delivered).await;
    let Some(Outcome::Delivered { attempt }) = outcomes.last() else { unreachable!() };
    assert!(*attempt >= 2, "{outcomes:?}");
    assert_eq!(receiver.counts(), BTreeMap::from([("sms".to_owned(), 1)]));
    assert_eq!(outbox.pending_count().await.unwrap(), 0);
    worker.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn pending_deliveries_survive_a_restart_and_replays_are_not_resent() {
    let receiver = Receiver::start().await;
    let down = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sqlite");

    // Before the restart: `console` works, `pager` points at an endpoint that is down.
    {
        let outbox = Outbox::open(&path).unwrap();
        let mut channels_now = channels(receiver.addr);
        channels_now.insert("pager".to_owned(), channels(down).remove("console").unwrap());
        let mut worker = Worker::start(&outbox, channels_now, quick());
        outbox.enqueue(&msg(4), &targets(&["console"])).await.unwrap();
        outbox.enqueue(&msg(5), &targets(&["pager"])).await.unwrap();
        worker.reports_until("console", delivered).await;
        let failed = worker.reports_until("pager", |_| true).await;
        assert!(matches!(failed[0], Outcome::Failed { retryable: true, .. }), "{failed:?}");
        worker.stop().await;
        // Dropping the last handle closes the database, as a process exit would.
    }

    // After the restart: the pending delivery is still there, and `pager` is reachable now.
    let outbox = Outbox::open(&path).unwrap();
    assert_eq!(outbox.pending_count().await.unwrap(), 1);
    let before = &outbox.history(1005).await.unwrap()[0];
    assert_eq!((before.status, before.target.as_str()), (Status::Pending, "pager"));
    assert!(before.attempts >= 1);
    // The engine replays its log: both notifications are enqueued again, neither is new.
    assert_eq!(outbox.enqueue(&msg(4), &targets(&["console"])).await.unwrap(), 0);
    assert_eq!(outbox.enqueue(&msg(5), &targets(&["pager"])).await.unwrap(), 0);

    let mut channels_now = channels(receiver.addr);
    channels_now.insert("pager".to_owned(), channels(receiver.addr).remove("console").unwrap());
    let mut worker = Worker::start(&outbox, channels_now, quick());
    let outcomes = worker.reports_until("pager", delivered).await;
    assert_eq!(outcomes.len(), 1, "delivered on the first attempt after the restart: {outcomes:?}");
    // A fresh notification after the replay proves the worker has looked at the table since.
    outbox.enqueue(&msg(6), &targets(&["console"])).await.unwrap();
    worker.reports_until("console", delivered).await;
    worker.stop().await;

    let ids: Vec<_> = receiver.requests().iter().filter_map(|r| r.notification_id()).collect();
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), 3, "4, 5 and 6 once each: {ids:?}");
    assert_eq!(distinct, HashSet::from([&4, &5, &6]));
    assert!(receiver.requests().iter().all(|r| r.authentic));
    receiver.stop().await;
}

#[tokio::test]
async fn robot_errcode_replies_are_failures_retried_only_for_rate_limits() {
    let receiver = Receiver::start().await;
    receiver.script("wecom", &[(200, r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#)]);
    receiver.script("dingtalk", &[(200, r#"{"errcode":310000,"errmsg":"sign not match"}"#)]);
    receiver.script("feishu", &[(200, r#"{"code":11232,"msg":"frequency limited"}"#)]);
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("notify.sqlite")).unwrap();
    let mut worker = Worker::start(&outbox, channels(receiver.addr), quick());
    outbox.enqueue(&msg(7), &targets(&["wecom", "dingtalk", "feishu"])).await.unwrap();

    let mut by_target: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    while by_target
        .values()
        .filter(|o| o.last().is_some_and(|o| !matches!(o, Outcome::Failed { .. })))
        .count()
        < 3
    {
        let report = worker.report().await;
        by_target.entry(report.target).or_default().push(report.outcome);
    }
    fn failed(o: &Outcome, reason: &str, retryable: bool, code: &str) -> bool {
        matches!(o, Outcome::Failed { reason: r, retryable: t, error, attempt: 1 }
            if *r == reason && *t == retryable && error.contains(code))
    }
    let wecom = &by_target["wecom"];
    assert!(failed(&wecom[0], "rate_limited", true, "45009"), "{wecom:?}");
    assert_eq!(wecom[1], Outcome::Delivered { attempt: 2 });
    let feishu = &by_target["feishu"];
    assert!(failed(&feishu[0], "rate_limited", true, "11232"), "{feishu:?}");
    assert_eq!(feishu[1], Outcome::Delivered { attempt: 2 });
    let dingtalk = &by_target["dingtalk"];
    assert!(failed(&dingtalk[0], "refused", false, "310000"), "{dingtalk:?}");
    assert_eq!(dingtalk[1], Outcome::GaveUp { attempts: 1 });

    assert_eq!(outbox.dead_count().await.unwrap(), 1);
    let history = outbox.history(1007).await.unwrap();
    let dead = history.iter().find(|h| h.target == "dingtalk").unwrap();
    assert_eq!(dead.status, Status::Dead);
    assert!(dead.gave_up_ms.is_some() && dead.last_error.as_deref().unwrap().contains("sign not match"));
    worker.stop().await;
    assert_eq!(
        receiver.counts(),
        BTreeMap::from([("dingtalk".to_owned(), 1), ("feishu".to_owned(), 2), ("wecom".to_owned(), 2)]),
        "a refusal is not retried"
    );
    receiver.stop().await;
}

#[tokio::test]
async fn an_unknown_target_is_given_up_at_once() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("notify.sqlite")).unwrap();
    let mut worker = Worker::start(&outbox, channels(receiver.addr), quick());
    outbox.enqueue(&msg(8), &targets(&["removed_channel"])).await.unwrap();
    let Outcome::Failed { reason, retryable, attempt, error } = worker.report().await.outcome else {
        panic!("expected a failure");
    };
    assert_eq!((reason, retryable, attempt), ("unknown_target", false, 1));
    assert!(error.contains("removed_channel"), "{error}");
    assert_eq!(worker.report().await.outcome, Outcome::GaveUp { attempts: 1 });
    assert_eq!((outbox.pending_count().await.unwrap(), outbox.dead_count().await.unwrap()), (0, 1));
    worker.stop().await;
    assert!(receiver.requests().is_empty());
    receiver.stop().await;
}

#[tokio::test]
async fn a_delivery_still_failing_at_its_maximum_age_is_given_up() {
    let receiver = Receiver::start().await;
    receiver.script("hook", &[(503, "maintenance"); 50]);
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("notify.sqlite")).unwrap();
    let settings = DeliveryConfig { max_age: Duration::from_millis(400), ..quick() };
    let mut worker = Worker::start(&outbox, channels(receiver.addr), settings);

    let enqueued_at = Instant::now();
    outbox.enqueue(&msg(9), &targets(&["console"])).await.unwrap();
    let outcomes = worker.reports_until("console", |o| matches!(o, Outcome::GaveUp { .. })).await;
    let gave_up_after = enqueued_at.elapsed();
    let attempts = outcomes.len() as u32 - 1;
    assert!(attempts >= 3, "retried until the maximum age: {outcomes:?}");
    assert!(
        outcomes[..outcomes.len() - 1]
            .iter()
            .all(|o| matches!(o, Outcome::Failed { retryable: true, reason: "server_error", .. })),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.last(), Some(&Outcome::GaveUp { attempts }));
    // 390, not 400: the outbox's clock has millisecond resolution.
    assert!(gave_up_after >= Duration::from_millis(390), "not before the maximum age: {gave_up_after:?}");
    assert!(gave_up_after < Duration::from_secs(3), "soon after it: {gave_up_after:?}");
    assert_eq!(receiver.requests().len() as u32, attempts);
    assert_eq!(outbox.dead_count().await.unwrap(), 1);
    worker.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn a_slow_channel_does_not_hold_back_the_others() {
    let receiver = Receiver::start().await;
    receiver.delay("slow", Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("notify.sqlite")).unwrap();
    let mut worker = Worker::start(&outbox, channels(receiver.addr), quick());

    let enqueued_at = Instant::now();
    outbox.enqueue(&msg(10), &targets(&["slow"])).await.unwrap();
    outbox.enqueue(&msg(11), &targets(&["console"])).await.unwrap();
    let first = worker.report().await;
    assert_eq!((first.target.as_str(), first.outcome), ("console", Outcome::Delivered { attempt: 1 }));
    assert!(enqueued_at.elapsed() < Duration::from_millis(1000), "{:?}", enqueued_at.elapsed());
    let second = worker.report().await;
    assert_eq!((second.target.as_str(), second.outcome), ("slow", Outcome::Delivered { attempt: 1 }));
    assert!(enqueued_at.elapsed() >= Duration::from_millis(1500));
    worker.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn shutdown_waits_for_sends_in_flight() {
    let receiver = Receiver::start().await;
    receiver.delay("slow", Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("notify.sqlite")).unwrap();
    let mut worker = Worker::start(&outbox, channels(receiver.addr), quick());
    outbox.enqueue(&msg(12), &targets(&["slow"])).await.unwrap();
    receiver.wait_for(1).await;
    worker.shutdown.cancel();
    // The send in flight finishes and is recorded before the worker returns.
    assert_eq!(worker.report().await.outcome, Outcome::Delivered { attempt: 1 });
    worker.stop().await;
    assert_eq!(outbox.pending_count().await.unwrap(), 0);
    receiver.stop().await;
}

/// A page about its own case with this severity.
fn page(notification_id: u64, severity: &str) -> crate::Message {
    crate::Message { severity: severity.to_owned(), reason: "opened".to_owned(), ..msg(notification_id) }
}

#[tokio::test]
async fn a_fire_overtakes_faults_held_by_the_rate_limit_through_the_reserve() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("notify.sqlite")).unwrap();
    let mut worker = Worker::start(&outbox, channels(receiver.addr), quick());
    let limited = targets(&["limited"]);
    for id in 1..=6 {
        outbox.enqueue(&page(id, "fault"), &limited).await.unwrap();
    }
    // 3 an hour with 1 kept: two faults go, the other four are held.
    for _ in 0..2 {
        assert!(matches!(worker.report().await.outcome, Outcome::Delivered { attempt: 1 }));
    }
    outbox.enqueue(&page(100, "fire"), &limited).await.unwrap();
    let report = worker.report().await;
    assert_eq!((report.notification_id, report.outcome), (100, Outcome::Delivered { attempt: 1 }));
    let arrived: Vec<_> = receiver.requests().iter().filter_map(|r| r.notification_id()).collect();
    assert_eq!(arrived.len(), 3, "{arrived:?}");
    assert_eq!(arrived[2], 100, "the fire is the third request: {arrived:?}");
    assert!(arrived[..2].iter().all(|id| *id <= 6));
    // Held is not attempted: no attempt, no error, still pending; counted once each.
    assert_eq!(outbox.pending_count().await.unwrap(), 4);
    for id in 1..=6u64 {
        let h = outbox.history(1000 + id).await.unwrap().remove(0);
        if h.status == Status::Pending {
            assert_eq!((h.attempts, h.last_error), (0, None), "#{id}");
        }
    }
    assert_eq!(outbox.stats().held.get("limited"), Some(&4));
    worker.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn a_restart_counts_the_deliveries_already_made_in_the_window() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("notify.sqlite")).unwrap();
    let limited = targets(&["limited"]);
    let mut worker = Worker::start(&outbox, channels(receiver.addr), quick());
    for id in 1..=2 {
        outbox.enqueue(&page(id, "fault"), &limited).await.unwrap();
    }
    for _ in 0..2 {
        assert!(matches!(worker.report().await.outcome, Outcome::Delivered { .. }));
    }
    worker.stop().await;

    // The routine share of this hour is used: after the restart a fault waits, a fire goes.
    let mut worker = Worker::start(&outbox, channels(receiver.addr), quick());
    outbox.enqueue(&page(3, "fault"), &limited).await.unwrap();
    outbox.enqueue(&page(100, "fire"), &limited).await.unwrap();
    let report = worker.report().await;
    assert_eq!((report.notification_id, report.outcome), (100, Outcome::Delivered { attempt: 1 }));
    let fault = outbox.history(1003).await.unwrap().remove(0);
    assert_eq!((fault.status, fault.attempts), (Status::Pending, 0));
    assert_eq!(receiver.requests().len(), 3);
    worker.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn a_reminder_waiting_for_the_limit_is_superseded_by_the_next_and_reported_so() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("notify.sqlite")).unwrap();
    let limited = targets(&["limited"]);
    let mut worker = Worker::start(&outbox, channels(receiver.addr), quick());
    for id in 1..=2 {
        outbox.enqueue(&page(id, "fault"), &limited).await.unwrap();
    }
    for _ in 0..2 {
        assert!(matches!(worker.report().await.outcome, Outcome::Delivered { .. }));
    }
    // Two reminders of one case to one desk while the channel's routine share is used.
    let reminder = |id| crate::Message { case_id: 7, reason: "reminder".to_owned(), ..page(id, "fault") };
    outbox.enqueue(&reminder(10), &limited).await.unwrap();
    outbox.enqueue(&reminder(11), &limited).await.unwrap();
    let report = worker.report().await;
    assert_eq!(
        (report.notification_id, report.case_id, report.target.as_str(), report.outcome),
        (10, 7, "limited", Outcome::Superseded { by: 11 })
    );
    let history: Vec<_> =
        outbox.history(7).await.unwrap().into_iter().map(|h| (h.notification_id, h.status)).collect();
    assert_eq!(history, [(10, Status::Superseded), (11, Status::Pending)]);
    assert_eq!(outbox.stats().superseded, 1);
    assert_eq!(receiver.requests().len(), 2, "neither reminder was sent yet");
    worker.stop().await;
    receiver.stop().await;
}

/// A gateway whose lease ran out sends nothing: a closed gate holds every delivery pending
/// without an attempt, and once open (in tests only: a lost lease stays lost) it goes once.
#[tokio::test]
async fn a_closed_gate_sends_nothing_and_records_no_attempt() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = open.clone();
    let outbox = Outbox::open(&dir.path().join("notify.sqlite"))
        .unwrap()
        .gated(std::sync::Arc::new(move || gate.load(std::sync::atomic::Ordering::SeqCst)));
    let mut worker = Worker::start(&outbox, channels(receiver.addr), quick());

    outbox.enqueue(&msg(5), &targets(&["console"])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.requests().is_empty(), "sent through a closed gate");
    assert_eq!(outbox.pending_count().await.unwrap(), 1);
    assert!(outbox.history(1005).await.unwrap().iter().all(|h| h.attempts == 0), "no attempt recorded");

    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let outcomes = worker.reports_until("console", delivered).await;
    assert_eq!(outcomes, [Outcome::Delivered { attempt: 1 }]);
    assert_eq!(receiver.requests().len(), 1, "sent once");
    worker.stop().await;
    receiver.stop().await;
}
