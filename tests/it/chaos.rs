//! Three minutes of chaos (`firegrid_tests::chaos`, the code behind `firegrid-bench chaos`):
//! a village of 360 detectors on the `firegrid` binary while the broker restarts, InfluxDB
//! goes away, the gateway is killed with SIGKILL, its disk fills and its wall clock steps,
//! each at least once, with fires raised throughout. Afterwards every alarm is in InfluxDB
//! exactly once and was acknowledged to its detector, every fire has a case whose first page
//! came within its bound, and no page went out twice.
//!
//! The seed is fixed, so the schedule is the same on every run. The page bound is a minute of
//! uninterrupted service (three ack deadlines), generous for a loaded machine: it tells "paged
//! once the gateway could hear the fire" from "paged never" or "paged only after the settling".

use std::time::Duration;

use firegrid_tests::chaos::{ChaosConfig, FaultKind, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_minutes_of_faults_lose_no_alarm_miss_no_page_and_page_nothing_twice() {
    let config = ChaosConfig { page_grace: Duration::from_secs(60), ..ChaosConfig::minutes(3, 20261203) };
    let report = run(&config).await;
    println!("{report}");
    let kinds: std::collections::BTreeSet<FaultKind> =
        report.seen.faults.iter().map(|f| f.fault.kind).collect();
    assert_eq!(kinds.len(), 5, "every kind of fault was injected: {report}");
    assert!(report.seen.fires.len() >= 4, "{report}");
    assert!(report.seen.pages.len() >= report.seen.fires.len(), "{report}");
    assert!(report.violations.is_empty(), "{report}");
}
