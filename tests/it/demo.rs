//! `firegrid demo` plays exactly its script: the cases its scripted day opens are the ones the
//! script lists in `expected-cases.json` before the day starts, no more and no fewer, and the
//! demo's progress line counts the same open cases as the officer API.
//!
//! The day runs at ×90 with a 10-minute detector heartbeat (simulated), and the test watches
//! its first 2 h 45 min (110 s of wall time): the cooking wave, the tamper, the failing cells,
//! the fire and its spread, the water main and the grid outage. The cooking waves at 11:30 and
//! 18:00 are later; the script's windows say so, and the test refuses a prefix that cuts
//! through one.

use std::time::{Duration, Instant};

use firegrid_gateway::demo::ExpectedCase;
use firegrid_tests::browser::{Demo, DemoArgs};
use firegrid_tests::officers::OfficerApi;

const SPEED: f64 = 90.0;
/// The part of the day the test watches, simulated.
const PREFIX: Duration = Duration::from_secs(165 * 60);

/// The progress lines printed so far: (simulated time, open cases).
fn progress(output: &str) -> Vec<(Duration, usize)> {
    output
        .lines()
        .filter_map(|line| {
            let simulated = line.strip_prefix('[')?.split_once(" real, ")?.1.split_once(" simulated]")?.0;
            let mut parts = simulated.split(':').map(|p| p.parse::<u64>().ok());
            let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
            let open = line.split_once(" · open cases ")?.1.split_once(' ')?.0.parse().ok()?;
            Some((Duration::from_secs(h * 3_600 + m * 60 + s), open))
        })
        .collect()
}

/// What identifies a case: its kind and its building, or for a communication loss the scope
/// that went dark (the most specific name its location has).
fn key(case: &serde_json::Value) -> (String, String) {
    let kind = case["kind"].as_str().unwrap_or_default().to_owned();
    let location = &case["location"];
    let place = ["building", "grid", "community", "street"]
        .iter()
        .filter_map(|field| location[*field].as_str())
        .find(|name| !name.is_empty())
        .unwrap_or_default()
        .to_owned();
    (kind, place)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_opens_exactly_the_cases_its_script_lists() {
    let demo = Demo::start(DemoArgs {
        detectors: 150,
        buildings: 60,
        camera_channels: 16,
        speed: SPEED,
        fire_at: "5m",
        fire_out_after: "20m",
        webhook: None,
        influx: None,
        water_sensors: Some(2),
        heartbeat: Some("10m"),
        basemap: None,
    })
    .expect("firegrid demo starts");
    let file = demo.dir().join("demo/expected-cases.json");
    let script: Vec<ExpectedCase> =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("the demo writes its expected cases"))
            .expect("the expected cases parse");
    for case in &script {
        assert!(
            case.open_by <= PREFIX || case.opens_after >= PREFIX,
            "the prefix {PREFIX:?} cuts through the window of {case:?}: choose another"
        );
    }
    let mut expected: Vec<(String, String)> = script
        .iter()
        .filter(|c| c.open_by <= PREFIX)
        .map(|c| (c.kind.as_str().to_owned(), c.place.clone()))
        .collect();
    expected.sort();
    assert!(
        expected.iter().any(|(kind, _)| kind == "fire")
            && expected.iter().any(|(kind, _)| kind == "offline" || kind == "communication_loss"),
        "the prefix holds the fire and the outage: {expected:?}"
    );

    // Until the demo's simulated clock has passed the prefix.
    let limit = Instant::now() + PREFIX.div_f64(SPEED) + Duration::from_secs(90);
    while progress(&demo.output()).last().is_none_or(|(at, _)| *at < PREFIX) {
        assert!(Instant::now() < limit, "the demo did not reach {PREFIX:?}; it printed:\n{}", demo.output());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let commander = demo.officer("street-commander").unwrap();
    let api = OfficerApi::new(demo.http_port());
    let cases = api.get(&commander.token, "/api/v1/cases?state=any&limit=500").await;
    let mut opened: Vec<(String, String)> =
        cases["cases"].as_array().expect("a case list").iter().map(key).collect();
    opened.sort();
    assert_eq!(
        opened,
        expected,
        "the cases opened (left) are not the script's (right); the script:\n{}\nthe demo printed:\n{}",
        std::fs::read_to_string(&file).unwrap(),
        demo.output()
    );

    // The progress line's open-case count is the API's: between two progress lines that agree
    // (nothing opened or closed in between), the API answers the same count.
    let limit = Instant::now() + Duration::from_secs(30);
    loop {
        let before = progress(&demo.output());
        let open = api.get(&commander.token, "/api/v1/cases?state=open&limit=500").await;
        let open = open["cases"].as_array().expect("a case list").len();
        let mut after = progress(&demo.output());
        while after.len() == before.len() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            after = progress(&demo.output());
        }
        let (printed_before, printed_after) = (before.last().unwrap().1, after[before.len()].1);
        if printed_before == printed_after {
            assert_eq!(open, printed_before, "the progress line and the API disagree:\n{}", demo.output());
            break;
        }
        assert!(Instant::now() < limit, "the open-case count never held still:\n{}", demo.output());
    }
}
