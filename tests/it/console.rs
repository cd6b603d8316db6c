//! The duty-officer console in headless Chromium (Debian's, through ChromeDriver), against
//! `firegrid demo` running a small village: an officer signs in with a token, sees the fire
//! case appear live, acknowledges it and carries it to closure, and the screenshot of the
//! closed case is taken; the link of a real webhook page opens the console on the case after
//! sign-in; an unknown detector's alarm shows in the street commander's list marked as an
//! unverified unplaced device, with the form to place it; an officer of another grid sees
//! nothing of the fire, in the browser or through the API; and the demo stops cleanly on
//! SIGTERM.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use firegrid_tests::WebhookReceiver;
use firegrid_tests::browser::{ChromeDriver, Demo, DemoArgs};
use firegrid_tests::officers::OfficerApi;

/// Polls `check` every 250 ms until it returns `Some`, or fails with `what` and the demo's
/// output after `limit`.
async fn until<T, F>(demo: &Demo, limit: Duration, what: &str, mut check: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; the demo printed:\n{}",
            demo.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn attr(client: &Client, css: &str, name: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.attr(name).await.ok()?
}

async fn exists(client: &Client, css: &str) -> bool {
    client.find_all(Locator::Css(css)).await.is_ok_and(|found| !found.is_empty())
}

async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn sign_in(client: &Client, base: &str, token: &str) {
    client.goto(&format!("{base}/console")).await.expect("the console page loads");
    client.find(Locator::Css("#token")).await.unwrap().send_keys(token).await.unwrap();
    client.find(Locator::Css("#login-button")).await.unwrap().click().await.unwrap();
}

async fn submit_form(client: &Client, form: &str, fields: &[(&str, &str)]) {
    for (name, value) in fields {
        let field = client.find(Locator::Css(&format!("#{form} [name={name}]"))).await.unwrap();
        if field.tag_name().await.unwrap() == "select" {
            field.select_by_value(value).await.unwrap();
        } else {
            field.clear().await.unwrap();
            field.send_keys(value).await.unwrap();
        }
    }
    client.find(Locator::Css(&format!("#{form} button"))).await.unwrap().click().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_handles_a_fire_in_the_browser_and_another_grid_sees_none_of_it() {
    // At ×12 the fire starts 40 s after the village boots and is put out 15 s later; its
    // detectors clear a simulated minute or two after that.
    let hook = WebhookReceiver::start().await;
    let demo = Demo::start(DemoArgs {
        detectors: 300,
        buildings: 60,
        camera_channels: 40,
        speed: 12.0,
        fire_at: "8m",
        fire_out_after: "3m",
        webhook: Some(hook.url()),
        influx: None,
    })
    .expect("firegrid demo starts");
    let driver = ChromeDriver::start().expect("ChromeDriver starts");
    let base = demo.base_url();
    let officer = demo.officer("fire-grid-leader").unwrap();
    let other = demo.officer("other-grid-leader").unwrap();
    assert_ne!(officer.scope, other.scope);

    let browser = driver.session("officer").await.expect("a Chromium session");
    sign_in(&browser, &base, &officer.token).await;
    until(&demo, Duration::from_secs(20), "the officer's name in the header", || async {
        text(&browser, "#who").await.contains("fire-grid-leader").then_some(())
    })
    .await;
    // The page loads the list once and then only follows the event stream: a fire case that
    // shows up after sign-in arrived live.
    assert!(
        !exists(&browser, "#cases li[data-severity=fire]").await,
        "a fire case was already open at sign-in, so its arrival cannot show the live feed; the demo printed:\n{}",
        demo.output()
    );
    assert_eq!(attr(&browser, "#live", "data-up").await.as_deref(), Some("true"), "the live feed is up");

    // The other grid's officer, in a browser of their own.
    let outsider = driver.session("outsider").await.expect("a second Chromium session");
    sign_in(&outsider, &base, &other.token).await;
    until(&demo, Duration::from_secs(20), "the other officer's name", || async {
        text(&outsider, "#who").await.contains("other-grid-leader").then_some(())
    })
    .await;

    let case_id: String =
        until(&demo, Duration::from_secs(120), "a fire case in the officer's list", || async {
            attr(&browser, "#cases li[data-severity=fire]", "data-case").await
        })
        .await;

    // Case detail: the timeline, the building's devices, the camera, the escalation path.
    browser
        .find(Locator::Css(&format!("#cases li[data-case='{case_id}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&demo, Duration::from_secs(10), "the case detail", || async {
        (attr(&browser, "#detail", "data-case").await.as_deref() == Some(case_id.as_str())).then_some(())
    })
    .await;
    assert_eq!(attr(&browser, "#detail", "data-stage").await.as_deref(), Some("warning"));
    assert!(
        exists(&browser, "#detail-timeline li[data-transition=opened]").await,
        "the timeline starts with opened"
    );
    let devices = browser.find_all(Locator::Css("#detail-devices li")).await.unwrap();
    assert!(
        devices.len() >= 2,
        "a confirmed fire involves at least two devices of the building, saw {}",
        devices.len()
    );
    assert!(!text(&browser, "#detail-camera").await.is_empty(), "the nearest camera line is filled in");
    assert!(!text(&browser, "#detail-path").await.is_empty(), "the escalation path lists the grid at least");
    assert!(!text(&browser, "#detail-countdown").await.is_empty(), "the deadline countdown shows");

    // The link of a real page about the case, followed in a fresh browser: sign-in, then the
    // console opens on the case.
    let page = hook
        .wait("a page about the fire case with a link", Duration::from_secs(30), |v| {
            v["case_id"].as_u64().map(|c| c.to_string()) == Some(case_id.clone()) && v["url"].is_string()
        })
        .await;
    let link = page["url"].as_str().unwrap().to_owned();
    assert_eq!(link, format!("{base}/console/cases/{case_id}"), "{page}");
    let follower = driver.session("follower").await.expect("a third Chromium session");
    follower.goto(&link).await.expect("the link loads");
    follower.find(Locator::Css("#token")).await.unwrap().send_keys(&officer.token).await.unwrap();
    follower.find(Locator::Css("#login-button")).await.unwrap().click().await.unwrap();
    until(&demo, Duration::from_secs(20), "the linked case open after sign-in", || async {
        let shown = attr(&follower, "#detail", "data-case").await.as_deref() == Some(case_id.as_str());
        (shown && follower.find(Locator::Css("#detail")).await.ok()?.is_displayed().await.ok()?).then_some(())
    })
    .await;
    follower.close().await.unwrap();

    // A detector the registry does not know alarms: the street commander's list shows an
    // unverified unplaced-device case, and its detail offers to place the device.
    let stranger = {
        use firegrid_protocol::{
            DetectorState, DeviceId, Encoding, StateChange, Topic, Uplink, UplinkBody, UplinkKind, VillageId,
        };
        let dev = DeviceId::new("sd-stranger").unwrap();
        let body = UplinkBody::State(StateChange { state: DetectorState::Alarm, obscuration_db_m: 0.4 });
        let msg = Uplink::new(dev.clone(), 1, 1, 0, body);
        let topic =
            Topic::uplink(VillageId::new("fuhai-1").unwrap(), dev, UplinkKind::State).to_buf().to_string();
        (topic, msg.encode(Encoding::Json, &mut [0u8; 512]).unwrap().to_vec())
    };
    // The demo's broker admits only accounts; the stranger's alarm comes in through the
    // village's platform account, as an unregistered detector behind a carrier platform would.
    let password = std::fs::read_to_string(demo.dir().join("demo/broker.password")).unwrap();
    let mut opts = rumqttc::MqttOptions::new("stranger", "127.0.0.1", demo.broker_port());
    opts.set_credentials("demo-village", password.trim());
    let (mqtt, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    mqtt.publish(stranger.0, rumqttc::QoS::AtLeastOnce, false, stranger.1).await.unwrap();
    let commander = demo.officer("street-commander").unwrap();
    let desk = driver.session("street").await.expect("a fourth Chromium session");
    sign_in(&desk, &base, &commander.token).await;
    let unplaced: String =
        until(&demo, Duration::from_secs(30), "the unplaced case in the street's list", || async {
            attr(&desk, "#cases li.unplaced", "data-case").await
        })
        .await;
    let shown = text(&desk, &format!("#cases li[data-case='{unplaced}'] .where")).await;
    assert!(
        shown.contains("sd-stranger") && (shown.contains("unverified") || shown.contains("未核实")),
        "{shown}"
    );
    desk.find(Locator::Css(&format!("#cases li[data-case='{unplaced}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&demo, Duration::from_secs(10), "the unplaced case's detail with the place form", || async {
        let form = desk.find(Locator::Css("#act-place")).await.ok()?;
        form.is_displayed().await.ok()?.then_some(())
    })
    .await;
    desk.close().await.unwrap();

    // 响应: acknowledge.
    browser.find(Locator::Css("#act-acknowledge")).await.unwrap().click().await.unwrap();
    until(&demo, Duration::from_secs(10), "the case in the response stage", || async {
        (attr(&browser, "#detail", "data-stage").await.as_deref() == Some("response")).then_some(())
    })
    .await;

    // Neither live nor on a fresh load does the other grid's officer see it.
    outsider.refresh().await.unwrap();
    until(&demo, Duration::from_secs(20), "the other officer's list after a reload", || async {
        text(&outsider, "#who").await.contains("other-grid-leader").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !exists(&outsider, &format!("#cases li[data-case='{case_id}']")).await,
        "an officer of {} sees case {case_id} of another grid",
        other.scope
    );
    assert!(!exists(&outsider, "#cases li[data-severity=fire]").await, "the other grid has no fire");
    let api = OfficerApi::new(demo.http_port());
    let get = reqwest::Method::GET;
    let (status, _) =
        api.call(get.clone(), &format!("/api/v1/cases/{case_id}"), Some(&other.token), None).await;
    assert_eq!(status, 403, "the API refuses another grid's case");
    let (_, listed) = api.call(get, "/api/v1/cases?state=any", Some(&other.token), None).await;
    let ids: Vec<u64> = listed["cases"].as_array().unwrap().iter().filter_map(|c| c["id"].as_u64()).collect();
    assert!(
        !ids.contains(&case_id.parse().unwrap()),
        "case {case_id} is listed for {}: {ids:?}",
        other.scope
    );
    // The building list (the village map) is held to the scope too.
    let (status, detail) =
        api.call(reqwest::Method::GET, &format!("/api/v1/cases/{case_id}"), Some(&officer.token), None).await;
    assert_eq!(status, 200);
    let building = detail["case"]["location"]["building"].as_str().unwrap().to_owned();
    assert_eq!(detail["building"]["id"], building.as_str(), "the detail names the case's building");
    let buildings_of = |body: &serde_json::Value| -> Vec<String> {
        body["buildings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["id"].as_str().map(str::to_owned))
            .collect()
    };
    let (_, mine) = api.call(reqwest::Method::GET, "/api/v1/buildings", Some(&officer.token), None).await;
    let (_, theirs) = api.call(reqwest::Method::GET, "/api/v1/buildings", Some(&other.token), None).await;
    assert!(buildings_of(&mine).contains(&building), "{building} is missing from its own grid's map");
    assert!(!buildings_of(&theirs).is_empty(), "the other grid has buildings of its own");
    assert!(!buildings_of(&theirs).contains(&building), "{building} is on another grid's map");

    // 应案: dispatch, verify on site, record a real fire.
    submit_form(&browser, "act-dispatch", &[("assignee", "volunteer fire team 1")]).await;
    until(&demo, Duration::from_secs(10), "the dispatch in the timeline", || async {
        exists(&browser, "#detail-timeline li[data-transition=dispatched]").await.then_some(())
    })
    .await;
    submit_form(&browser, "act-verify", &[("method", "on_site"), ("finding", "flames on the second floor")])
        .await;
    until(&demo, Duration::from_secs(10), "the verification in the timeline", || async {
        exists(&browser, "#detail-timeline li[data-transition=verified]").await.then_some(())
    })
    .await;
    submit_form(&browser, "act-dispose", &[("outcome", "real_fire")]).await;
    until(&demo, Duration::from_secs(10), "the disposition in the timeline", || async {
        exists(&browser, "#detail-timeline li[data-transition=disposed]").await.then_some(())
    })
    .await;

    // 反馈: once the fire is out and the detectors have cleared, reset the latch and close.
    // Until then the gateway refuses both (and the page shows why).
    until(&demo, Duration::from_secs(180), "the case closed", || async {
        if attr(&browser, "#detail", "data-stage").await.as_deref() == Some("feedback") {
            return Some(());
        }
        if let Ok(reset) = browser.find(Locator::Css("#act-reset_latch")).await
            && reset.is_enabled().await.unwrap_or(false)
        {
            let _ = reset.click().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        submit_form(&browser, "act-close", &[("report", "kitchen fire put out by the volunteer team")]).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        None
    })
    .await;
    assert!(
        exists(&browser, "#detail-timeline li[data-transition=latch_reset]").await,
        "the latch was reset"
    );
    assert!(
        exists(&browser, "#detail-timeline li[data-transition=closed]").await,
        "the timeline ends closed"
    );

    // Chinese and English.
    let title = text(&browser, "h1").await;
    browser.find(Locator::Css("#lang")).await.unwrap().click().await.unwrap();
    let switched = text(&browser, "h1").await;
    assert_ne!(title, switched, "the language switch changes the page's text");
    assert!(
        [title.as_str(), switched.as_str()].iter().any(|t| t.contains("消防值班台"))
            && [title.as_str(), switched.as_str()].iter().any(|t| t.contains("duty console")),
        "one of {title:?} / {switched:?} is Chinese and the other English"
    );

    let png = browser.screenshot().await.expect("a screenshot");
    let path = std::env::temp_dir().join(format!("firegrid-console-case-{case_id}.png"));
    std::fs::write(&path, &png).unwrap();
    let written = std::fs::metadata(&path).expect("the screenshot file exists");
    assert!(written.len() > 1_000, "the screenshot is {} bytes", written.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "the screenshot is a PNG");
    eprintln!("screenshot of the closed case: {}", path.display());

    browser.close().await.unwrap();
    outsider.close().await.unwrap();

    // SIGTERM (as Ctrl-C) stops the demo cleanly: the village, then the gateway.
    let mut demo = demo;
    demo.stop().unwrap();
    let output = demo.output();
    assert!(
        output.contains("stopping: the village first") && output.lines().any(|l| l == "stopped."),
        "the demo did not stop cleanly; it printed:\n{output}"
    );
    let progress = output.lines().filter(|l| l.contains("devices reporting")).count();
    assert!(progress >= 3, "the demo printed {progress} progress lines:\n{output}");
}

/// `firegrid demo --influx` creates the database it writes to, so the street's dashboards have
/// data without anyone preparing InfluxDB first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_creates_its_influxdb_database_and_writes_into_it() {
    let influx = firegrid_tests::InfluxDb1::start().unwrap();
    let before = influx.query("", "SHOW DATABASES").unwrap().to_string();
    assert!(!before.contains("\"firegrid\""), "the database exists before the demo: {before}");
    let demo = Demo::start(DemoArgs {
        detectors: 40,
        buildings: 8,
        camera_channels: 0,
        speed: 60.0,
        fire_at: "30m",
        fire_out_after: "3m",
        webhook: None,
        influx: Some(influx.url()),
    })
    .expect("firegrid demo starts");
    assert!(demo.output().contains("InfluxDB: database \"firegrid\" ready"), "{}", demo.output());
    let after = influx.query("", "SHOW DATABASES").unwrap().to_string();
    assert!(after.contains("\"firegrid\""), "{after}");
    until(&demo, Duration::from_secs(60), "points in the demo's database", || async {
        let shown = influx.query("firegrid", "SHOW MEASUREMENTS").ok()?.to_string();
        shown.contains("device_heartbeat").then_some(())
    })
    .await;
}
