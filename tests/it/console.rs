//! The duty-officer console in headless Chromium (Debian's, through ChromeDriver), against
//! `firegrid demo` running a small village: an officer signs in with a token, sees the fire
//! case appear live, acknowledges it and carries it to closure, and the screenshot of the
//! closed case is taken; the link of a real webhook page opens the console on the case after
//! sign-in; an unknown detector's alarm shows in the street commander's list marked as an
//! unverified unplaced device, with the form to place it; an officer of another grid sees
//! nothing of the fire, in the browser or through the API; and the demo stops cleanly on
//! SIGTERM. A second test keeps a console idle until a real fire: the fire takes it over
//! (banner, siren, title), a close refused while the detectors are in alarm keeps the form,
//! the wall mode shows the fire, and the screenshots in `alerting/officers/src/console/screenshots/` are
//! taken. A third follows a real firmware rollout through the `firegrid` binary and
//! Mosquitto in the firmware view (`the_firmware_view_follows_a_real_rollout`).

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use firegrid_tests::browser::{ChromeDriver, Demo, DemoArgs};
use firegrid_tests::officers::OfficerApi;
use firegrid_tests::ota_mqtt::{Fleet, Login, Member};
use firegrid_tests::{Firegrid, WebhookReceiver};

/// What a failed wait prints: the output of the server under test.
trait Printed {
    fn printed(&self) -> String;
}

impl Printed for Demo {
    fn printed(&self) -> String {
        self.output()
    }
}

impl Printed for Firegrid {
    fn printed(&self) -> String {
        self.log_tail(60)
    }
}

/// Polls `check` every 250 ms until it returns `Some`, or fails with `what` and the server's
/// output after `limit`.
async fn until<T, F>(server: &impl Printed, limit: Duration, what: &str, mut check: impl FnMut() -> F) -> T
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
            "timed out after {limit:?} waiting for {what}; the server printed:\n{}",
            server.printed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The first fire case the API lists to `token`, once there is one (the demo's fire starts
/// a few simulated minutes in).
async fn first_fire_case(demo: &Demo, api: &OfficerApi, token: &str) -> serde_json::Value {
    until(demo, Duration::from_secs(150), "a fire case in the API", || async {
        let (_, listed) =
            api.call(reqwest::Method::GET, "/api/v1/cases?severity=fire", Some(token), None).await;
        listed["cases"].as_array()?.first().cloned()
    })
    .await
}

/// Clicks `css` once it can: the live feed re-renders the case list and the banner, which may
/// replace the element between finding and clicking it (a stale element reference).
async fn click(demo: &impl Printed, client: &Client, css: &str) {
    until(demo, Duration::from_secs(10), &format!("a click on {css}"), || async {
        client.find(Locator::Css(css)).await.ok()?.click().await.ok()
    })
    .await
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
        water_sensors: None,
        heartbeat: None,
        basemap: None,
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
    click(&demo, &browser, &format!("#cases li[data-case='{case_id}']")).await;
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
    // The list is redrawn as cases change: the item's text is read until it is there (a read
    // between a redraw's removal and insertion finds no item and reads "").
    let where_ = format!("#cases li[data-case='{unplaced}'] .where");
    until(&demo, Duration::from_secs(10), "the unplaced case marked unverified in the list", || async {
        let shown = text(&desk, &where_).await;
        (shown.contains("sd-stranger") && (shown.contains("unverified") || shown.contains("未核实")))
            .then_some(())
    })
    .await;
    click(&demo, &desk, &format!("#cases li[data-case='{unplaced}']")).await;
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
        water_sensors: None,
        heartbeat: None,
        basemap: None,
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

/// Where the screenshots of the console with a fire go: `FIREGRID_SCREENSHOTS` (the
/// committed ones live in `alerting/officers/src/console/screenshots/`), else the temp dir.
fn screenshot_dir() -> std::path::PathBuf {
    std::env::var_os("FIREGRID_SCREENSHOTS").map(Into::into).unwrap_or_else(std::env::temp_dir)
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "the screenshot is a PNG");
    assert!(png.len() > 10_000, "the screenshot {name} is only {} bytes", png.len());
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

async fn script(client: &Client, js: &str) -> serde_json::Value {
    client.execute(js, vec![]).await.expect("the script runs")
}

/// A real fire alarm in a village, a duty officer's console sitting idle in Chinese: the fire
/// takes the console over (banner with building, address and grid, a siren that repeats, a
/// flashing title, a fire row bigger than any other); acknowledging it stops the siren. The
/// close form, refused while the detectors are still in alarm, keeps every word typed and says
/// which devices are missing and why they cannot be reset yet. The wall mode shows the fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_takes_over_an_idle_console_and_a_refused_close_keeps_the_form() {
    // At ×12 the fire starts 30 s after the village boots and burns on for the whole test, so
    // its detectors stay in alarm (latched and active).
    let hook = WebhookReceiver::start().await;
    let demo = Demo::start(DemoArgs {
        detectors: 120,
        buildings: 24,
        camera_channels: 8,
        speed: 12.0,
        fire_at: "6m",
        fire_out_after: "2h",
        webhook: Some(hook.url()),
        influx: None,
        water_sensors: None,
        heartbeat: None,
        basemap: None,
    })
    .expect("firegrid demo starts");
    let driver = ChromeDriver::start().expect("ChromeDriver starts");
    let base = demo.base_url();
    // The street's commander: the fire's grid and the others, so the list holds the morning's
    // other cases (a detector pulled off its base, a cooking pre-alarm) beside the fire.
    let officer = demo.officer("street-commander").unwrap();
    let browser = driver.session("duty").await.expect("a Chromium session");
    browser.goto(&format!("{base}/console")).await.unwrap();
    script(&browser, "localStorage.setItem('firegrid.lang', 'zh')").await;
    sign_in(&browser, &base, &officer.token).await;
    until(&demo, Duration::from_secs(20), "the officer's name in the header", || async {
        text(&browser, "#who").await.contains("street-commander").then_some(())
    })
    .await;
    assert!(!exists(&browser, "#cases li[data-severity=fire]").await, "a fire was open at sign-in");
    let banner_shown = || async {
        let banner = browser.find(Locator::Css("#fire-banner")).await.ok()?;
        banner.is_displayed().await.ok()?.then_some(())
    };
    assert!(banner_shown().await.is_none(), "the fire banner shows before any fire");

    // The gateway opens the fire case; the idle console shows it within a generous bound.
    let api = OfficerApi::new(demo.http_port());
    let case = first_fire_case(&demo, &api, &officer.token).await;
    let case_id = case["id"].as_u64().unwrap().to_string();
    let building = case["location"]["building"].as_str().unwrap().to_owned();
    let grid = case["location"]["grid"].as_str().unwrap().to_owned();
    until(&demo, Duration::from_secs(10), "the fire banner in the idle console", banner_shown).await;
    let row = format!("#fire-list .fire[data-case='{case_id}']");
    let shown = until(&demo, Duration::from_secs(10), "the fire's line in the banner", || async {
        let shown = text(&browser, &row).await;
        shown.contains(&building).then_some(shown)
    })
    .await;
    let (_, buildings) =
        api.call(reqwest::Method::GET, "/api/v1/buildings", Some(&officer.token), None).await;
    let address = buildings["buildings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == building.as_str())
        .and_then(|b| b["address"].as_str())
        .unwrap()
        .to_owned();
    assert!(shown.contains(&address), "the banner names the address {address:?}: {shown}");
    assert!(shown.contains(&grid), "the banner names the grid {grid:?}: {shown}");
    assert!(shown.contains("报警已"), "the banner counts the time since the alarm: {shown}");
    // Times on the officers' clock, said so in the header.
    assert!(text(&browser, "#zone").await.contains("Asia/Shanghai"));
    // The page about the fire carries the building's address and its deadline in that zone.
    let id = case["id"].as_u64();
    let page = hook
        .wait("a page about the fire with its deadline", Duration::from_secs(30), |v| {
            v["case_id"].as_u64() == id && v["text"].as_str().is_some_and(|t| t.contains("前响应"))
        })
        .await;
    let page_text = page["text"].as_str().unwrap();
    assert!(page_text.contains(&format!("地址 address: {address}")), "{page}");
    assert!(page_text.contains("前响应 (Asia/Shanghai)"), "{page}");
    assert!(!page_text.contains("answer by 20"), "no UTC deadline: {page}");
    // The siren repeats: two tones started, and the banner says it is sounding.
    until(&demo, Duration::from_secs(10), "the siren sounding twice", || async {
        let sirens: u32 = attr(&browser, "#fire-banner", "data-sirens").await?.parse().ok()?;
        (sirens >= 2).then_some(())
    })
    .await;
    assert_eq!(attr(&browser, "#fire-banner", "data-sounding").await.as_deref(), Some("true"));
    until(&demo, Duration::from_secs(10), "the tab title naming the fire", || async {
        browser.title().await.ok()?.contains("火警").then_some(())
    })
    .await;
    // Words that never collide, and a fire row bigger than any other row.
    let fire_row = format!("#cases li[data-case='{case_id}']");
    until(&demo, Duration::from_secs(10), "the fire row in the list", || async {
        exists(&browser, &fire_row).await.then_some(())
    })
    .await;
    let row_text = text(&browser, &fire_row).await;
    assert!(row_text.starts_with("火警"), "{row_text}");
    assert!(row_text.contains("阶段 预警"), "the stage is labelled as a stage: {row_text}");
    let sizes = script(
        &browser,
        "return [...document.querySelectorAll('#cases li')].map((li) => \
         [li.dataset.severity, li.getBoundingClientRect().height, parseFloat(getComputedStyle(li).fontSize)]);",
    )
    .await;
    let sizes = sizes.as_array().unwrap();
    let body_font = script(&browser, "return parseFloat(getComputedStyle(document.body).fontSize);").await;
    for entry in sizes {
        let (severity, height, font) =
            (entry[0].as_str().unwrap(), entry[1].as_f64().unwrap(), entry[2].as_f64().unwrap());
        if severity == "fire" {
            assert!(font > body_font.as_f64().unwrap(), "a fire row's text is bigger: {sizes:?}");
        } else {
            let fire_height = sizes.iter().find(|e| e[0] == "fire").unwrap()[1].as_f64().unwrap();
            assert!(fire_height > height, "a fire row is taller than a {severity} row: {sizes:?}");
        }
    }
    assert!(
        sizes.iter().any(|e| e[0] != "fire"),
        "the list holds other cases to compare the fire row with: {sizes:?}"
    );
    screenshot(&browser, "console-fire-banner").await;

    // Acknowledged from the banner: the siren stops, the banner stays while the fire is open.
    click(&demo, &browser, &format!("{row} button.ack")).await;
    until(&demo, Duration::from_secs(10), "the siren silenced by the acknowledgement", || async {
        let stage = attr(&browser, &row, "data-stage").await?;
        (stage == "response" && attr(&browser, "#fire-banner", "data-sounding").await?.as_str() == "false")
            .then_some(())
    })
    .await;
    assert!(banner_shown().await.is_some(), "the banner stays while the fire is open");

    // The detail: red title, devices by kind and state in Chinese; record a real fire.
    click(&demo, &browser, &fire_row).await;
    until(&demo, Duration::from_secs(10), "the case detail", || async {
        (attr(&browser, "#detail", "data-case").await.as_deref() == Some(case_id.as_str())).then_some(())
    })
    .await;
    let devices = text(&browser, "#detail-devices").await;
    assert!(devices.contains("烟感") && devices.contains("报警中"), "{devices}");
    assert!(!devices.contains("ACTIVE") && !devices.contains("latched"), "{devices}");
    submit_form(&browser, "act-dispose", &[("outcome", "real_fire")]).await;
    until(&demo, Duration::from_secs(10), "the disposition in the timeline", || async {
        exists(&browser, "#detail-timeline li[data-transition=disposed]").await.then_some(())
    })
    .await;
    // Before trying, the close form lists what is missing: the latched detectors, by name,
    // each with why it cannot be reset yet.
    let missing = until(&demo, Duration::from_secs(10), "the list of what closing still needs", || async {
        let missing = text(&browser, "#close-missing").await;
        missing.contains("仍在报警").then_some(missing)
    })
    .await;
    let latched: Vec<String> = case["alarms"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|d| missing.contains(d.as_str()))
        .cloned()
        .collect();
    assert!(!latched.is_empty(), "the list names the case's devices: {missing}");

    // Closing anyway: refused (409), and the form keeps everything typed.
    let report = "二楼厨房起火，志愿消防队已到场扑救";
    let order = "更换 3 号楼二楼烟感";
    browser.find(Locator::Css("#act-close [name=report]")).await.unwrap().send_keys(report).await.unwrap();
    browser.find(Locator::Css("#act-close [name=work_order]")).await.unwrap().send_keys(order).await.unwrap();
    browser.find(Locator::Css("#act-close [name=resident_informed]")).await.unwrap().click().await.unwrap();
    browser.find(Locator::Css("#act-close button")).await.unwrap().click().await.unwrap();
    let refusal = until(&demo, Duration::from_secs(10), "the refusal shown", || async {
        let shown = text(&browser, "#action-error").await;
        (!shown.is_empty()).then_some(shown)
    })
    .await;
    assert!(
        refusal.contains("复位") && refusal.contains(&latched[0]),
        "a Chinese refusal naming devices: {refusal}"
    );
    assert!(!refusal.contains("latched alarms"), "no English server sentence: {refusal}");
    let kept = script(
        &browser,
        "const f = document.querySelector('#act-close'); \
         return [f.report.value, f.work_order.value, f.resident_informed.checked];",
    )
    .await;
    assert_eq!(kept, serde_json::json!([report, order, true]), "the close form keeps what was typed");
    // The refusal the console translated: a stable code and the devices, status 409 as ever.
    let close = serde_json::json!({
        "command": "close",
        "feedback": {"report": report, "work_orders": [], "resident_informed": true},
    });
    let (status, refused) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/cases/{case_id}/actions"),
            Some(&officer.token),
            Some(close),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "latched_devices", "{refused}");
    assert!(
        refused["error"]["devices"].as_array().is_some_and(|d| d.iter().any(|d| d == latched[0].as_str())),
        "{refused}"
    );
    assert_eq!(attr(&browser, "#detail", "data-stage").await.as_deref(), Some("handling"));
    // The whole detail in one picture: a tall window, scrolled to the top.
    browser.set_window_size(1280, 1700).await.unwrap();
    script(&browser, "window.scrollTo(0, 0);").await;
    screenshot(&browser, "console-fire-detail").await;
    browser.set_window_size(1280, 900).await.unwrap();

    // The wall, on a big screen: map, open fires, counts by stage, overdue cases.
    browser.set_window_size(1920, 1080).await.unwrap();
    browser.goto(&format!("{base}/console/wall")).await.unwrap();
    until(&demo, Duration::from_secs(20), "the wall with the fire", || async {
        exists(&browser, &format!("#wall-fires .fire[data-case='{case_id}']")).await.then_some(())
    })
    .await;
    assert!(exists(&browser, "#wall-map circle.fire").await, "the map shows the fire");
    // The map a commander reads: every grid's boundary with its name, a label for every
    // building (the quiet ones on hover or zoom), the fire's always shown, and the village's
    // shape kept (the drawn extent has the aspect of the buildings' extent on the ground).
    let map = script(
        &browser,
        "const m = document.querySelector('#wall-map'); \
         const dots = [...m.querySelectorAll('circle')]; \
         const xs = dots.map((d) => +d.getAttribute('cx')), ys = dots.map((d) => +d.getAttribute('cy')); \
         const lats = state.buildings.map((b) => b.lat), lons = state.buildings.map((b) => b.lon); \
         const k = Math.cos((Math.min(...lats) + Math.max(...lats)) / 2 * Math.PI / 180); \
         const fire = m.querySelector('.building-label.sev-fire'); \
         return { outlines: m.querySelectorAll('polygon.grid-outline').length, \
           grids: [...m.querySelectorAll('.grid-label')].map((t) => t.textContent), \
           buildings: [...new Set(state.buildings.map((b) => b.grid))].length, \
           labels: m.querySelectorAll('.building-label').length, dots: dots.length, \
           fire_label_shown: !!fire && getComputedStyle(fire).display !== 'none', \
           drawn: (Math.max(...xs) - Math.min(...xs)) / (Math.max(...ys) - Math.min(...ys)), \
           ground: (Math.max(...lons) - Math.min(...lons)) * k / (Math.max(...lats) - Math.min(...lats)) };",
    )
    .await;
    let grids = map["grids"].as_array().unwrap();
    assert!(map["buildings"].as_u64().unwrap() >= 2, "{map}");
    assert_eq!(map["outlines"], map["buildings"], "one outline per grid: {map}");
    assert_eq!(grids.len() as u64, map["buildings"].as_u64().unwrap(), "one name per grid: {map}");
    assert!(
        grids.iter().any(|g| g.as_str() == Some(grid.as_str())),
        "the fire's grid {grid} is named: {map}"
    );
    assert_eq!(map["labels"], map["dots"], "every building has a label: {map}");
    assert_eq!(map["fire_label_shown"], true, "{map}");
    let (drawn, ground) = (map["drawn"].as_f64().unwrap(), map["ground"].as_f64().unwrap());
    assert!((drawn / ground - 1.0).abs() < 0.02, "the map keeps the village's shape: {map}");
    let handling: u32 = text(&browser, "#wall-stages [data-stage=handling] .n").await.trim().parse().unwrap();
    assert!(handling >= 1, "the handling count includes the fire");
    screenshot(&browser, "console-wall").await;
    browser.close().await.unwrap();
}

/// The commander's map over an offline basemap: the demo given a raster PMTiles archive
/// (`tests/fixtures/village-basemap.pmtiles`, made by `make_basemap.py` there) serves it in
/// HTTP ranges, the console loads MapLibre GL from the gateway and draws the village over it
/// in the wall and the map view, the buildings placed by the map's own projection, a fire
/// the largest dot, every label shown once zoomed in; and nothing comes from elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_draws_the_village_over_an_offline_basemap_served_in_ranges() {
    let archive = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/village-basemap.pmtiles");
    let size = std::fs::metadata(&archive).expect("the fixture archive").len();
    let demo = Demo::start(DemoArgs {
        detectors: 120,
        buildings: 24,
        camera_channels: 8,
        speed: 12.0,
        fire_at: "3m",
        fire_out_after: "2h",
        webhook: None,
        influx: None,
        water_sensors: None,
        heartbeat: None,
        basemap: Some(archive.clone()),
    })
    .expect("firegrid demo starts");
    let base = demo.base_url();

    // The archive in ranges, as the PMTiles reader asks for it.
    let http = reqwest::Client::new();
    let part = http
        .get(format!("{base}/console/basemap.pmtiles"))
        .header("Range", "bytes=0-126")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], format!("bytes 0-126/{size}").as_str());
    assert_eq!(&part.bytes().await.unwrap()[..8], b"PMTiles\x03");
    let whole = http.get(format!("{base}/console/basemap.pmtiles")).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.unwrap().len() as u64, size);
    let page = http.get(format!("{base}/console")).send().await.unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("default-src 'self'") && !policy.contains("http"), "{policy}");

    // A fire first, so that the map has one to show.
    let officer = demo.officer("street-commander").unwrap();
    let api = OfficerApi::new(demo.http_port());
    let case = first_fire_case(&demo, &api, &officer.token).await;
    let building = case["location"]["building"].as_str().unwrap().to_owned();

    let driver = ChromeDriver::start().expect("ChromeDriver starts");
    let browser = driver.session("wall").await.expect("a Chromium session");
    browser.set_window_size(1920, 1080).await.unwrap();
    // The language first (a page of the console's own), then the wall signed in by its link.
    browser.goto(&format!("{base}/console")).await.unwrap();
    script(&browser, "localStorage.setItem('firegrid.lang', 'zh')").await;
    browser.goto(&format!("{base}/console/wall#token={}", officer.token)).await.unwrap();
    until(&demo, Duration::from_secs(60), "the wall's basemap loaded", || async {
        let state = attr(&browser, "#wall-map-frame", "data-basemap").await?;
        assert_ne!(state, "failed", "the basemap failed to load");
        (state == "loaded").then_some(())
    })
    .await;
    until(&demo, Duration::from_secs(20), "the fire's dot over the basemap", || async {
        exists(&browser, &format!("#wall-map .building[data-building='{building}'] circle.fire"))
            .await
            .then_some(())
    })
    .await;
    // The header is read first; the tiles of the fitted view follow once the buildings have
    // arrived and the map has fitted them, which may be after the basemap reports "loaded".
    until(&demo, Duration::from_secs(20), "the archive's header and tiles read", || async {
        let reads = script(
            &browser,
            "return performance.getEntriesByType('resource') \
               .filter((e) => e.name.includes('/console/basemap.pmtiles')).length;",
        )
        .await;
        (reads.as_u64()? >= 2).then_some(())
    })
    .await;
    let drawn = script(
        &browser,
        "const svg = document.querySelector('#wall-map'); \
         const frame = svg.getBoundingClientRect(); \
         const map = svg.basemap; \
         const placed = state.buildings.map((b) => { \
           const dot = svg.querySelector(`.building[data-building='${b.id}'] circle`); \
           const p = map.project([b.lon, b.lat]); \
           return [+dot.getAttribute('cx') - p.x, +dot.getAttribute('cy') - p.y, \
             +dot.getAttribute('cx') >= 0 && +dot.getAttribute('cx') <= frame.width \
             && +dot.getAttribute('cy') >= 0 && +dot.getAttribute('cy') <= frame.height]; }); \
         const radii = [...svg.querySelectorAll('circle')].map((c) => +c.getAttribute('r')); \
         const fire = +svg.querySelector('circle.fire').getAttribute('r'); \
         const ranges = performance.getEntriesByType('resource') \
           .filter((e) => e.name.includes('/console/basemap.pmtiles')).map((e) => e.responseStatus); \
         const foreign = performance.getEntriesByType('resource') \
           .filter((e) => !e.name.startsWith(location.origin)).map((e) => e.name); \
         return { placed, fire, largest: Math.max(...radii.filter((r) => r !== fire)), ranges, foreign, \
           canvas: !!document.querySelector('#wall-map-frame .basemap canvas.maplibregl-canvas'), \
           outlines: svg.querySelectorAll('polygon.grid-outline').length };",
    )
    .await;
    assert_eq!(drawn["canvas"], true, "MapLibre draws the basemap: {drawn}");
    let placed = drawn["placed"].as_array().unwrap();
    assert!(!placed.is_empty());
    for p in placed {
        assert!(p[0].as_f64().unwrap().abs() < 0.5 && p[1].as_f64().unwrap().abs() < 0.5, "{p}");
        assert_eq!(p[2], true, "every building is in view after the map fits the village: {drawn}");
    }
    assert!(drawn["fire"].as_f64().unwrap() > drawn["largest"].as_f64().unwrap(), "{drawn}");
    assert!(drawn["outlines"].as_u64().unwrap() >= 2, "the grids are outlined over the basemap: {drawn}");
    // The fire's label and its grid's name do not cover each other.
    let grid = case["location"]["grid"].as_str().unwrap();
    let overlap = script(
        &browser,
        &format!(
            "const svg = document.querySelector('#wall-map'); \
             const a = svg.querySelector('.building-label.sev-fire').getBBox(); \
             const b = svg.querySelector(`.grid-label[data-grid='{grid}']`).getBBox(); \
             return a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;"
        ),
    )
    .await;
    assert_eq!(overlap, false, "the fire's label overlaps the name of grid {grid}");
    let ranges = drawn["ranges"].as_array().unwrap();
    assert!(ranges.len() >= 2, "the header and tiles are read from the archive: {drawn}");
    assert!(ranges.iter().all(|s| s == 206), "every read of the archive is a range: {drawn}");
    assert_eq!(drawn["foreign"], serde_json::json!([]), "nothing is loaded from elsewhere: {drawn}");
    screenshot(&browser, "console-wall-basemap").await;

    // Zoomed in on the fire, every building's label shows.
    let shown = script(
        &browser,
        &format!(
            "const svg = document.querySelector('#wall-map'); \
             const b = state.buildings.find((b) => b.id === '{building}'); \
             svg.basemap.jumpTo({{ center: [b.lon, b.lat], zoom: 19 }}); \
             drawMap(svg); \
             return {{ zoomed: svg.classList.contains('zoomed'), \
               hidden: [...svg.querySelectorAll('.building-label')] \
                 .filter((l) => getComputedStyle(l).display === 'none').length }};"
        ),
    )
    .await;
    assert_eq!(shown, serde_json::json!({ "zoomed": true, "hidden": 0 }), "{shown}");

    // The officers' map view has its own basemap, sized once it is shown.
    browser.set_window_size(1280, 900).await.unwrap();
    browser.goto(&format!("{base}/console#token={}", officer.token)).await.unwrap();
    until(&demo, Duration::from_secs(20), "the map tab", || async {
        browser.find(Locator::Css("nav button[data-view=map]")).await.ok()?.click().await.ok()
    })
    .await;
    until(&demo, Duration::from_secs(60), "the map view's basemap loaded", || async {
        (attr(&browser, "#map-frame", "data-basemap").await? == "loaded").then_some(())
    })
    .await;
    let width = script(&browser, "return document.querySelector('#map-frame .basemap canvas').width;").await;
    assert!(width.as_f64().unwrap() > 300.0, "the map view's basemap has a size: {width}");
    browser.close().await.unwrap();
}

/// The states and counts the firmware view shows (`#fw-counts`), as the API writes them.
async fn view_counts(client: &Client) -> serde_json::Value {
    script(
        client,
        "return Object.fromEntries([...document.querySelectorAll('#fw-counts li[data-state]')] \
           .map((li) => [li.dataset.state, Number(li.dataset.count)]));",
    )
    .await
}

/// The rows of the firmware view's device table: `[device, state, text of the device cell]`.
async fn view_rows(client: &Client) -> Vec<serde_json::Value> {
    let rows = script(
        client,
        "return [...document.querySelectorAll('#fw-devices tbody tr')] \
           .map((tr) => [tr.dataset.device, tr.dataset.state, tr.querySelector('.fw-device').textContent]);",
    )
    .await;
    rows.as_array().cloned().unwrap_or_default()
}

async fn view_state(client: &Client) -> Option<String> {
    attr(client, "#firmware-view", "data-state").await
}

/// The firmware view against a real rollout: the `firegrid` binary, a Mosquitto that makes
/// every detector log in as itself, and four simulated detectors (the real detector core,
/// update receiver and bootloader on simulated flash) taking the image through it, as in
/// `ota.rs`. A grid leader has no firmware tab (and the API refuses them); the street desk
/// sees "no rollout" until one is published; the canary fails its self-test, and the view
/// shows the rollout paused by its failure share over the threshold, with the API's counts,
/// the failed device first; the operator resumes, and the view follows the rest to done with
/// the API's counts again. Then the page is fed the real answer with one device id made
/// hostile and 6,000 more devices: the id shows as text, and the table stays bounded with
/// the failed device first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_firmware_view_follows_a_real_rollout() {
    use crate::ota::{VILLAGE, announced, firmware, village};
    let v = village(4).await;
    let config = v.config.to_str().unwrap();
    let gateway = &v.gateway;
    // sd-0 is the canary, and its horn fails the new image's self-test.
    let members: Vec<Member> = v
        .keys
        .iter()
        .map(|(id, key)| Member { self_test_fails: id == "sd-0", ..Member::new(id, key.clone()) })
        .collect();
    let fleet = Fleet::start(VILLAGE, members, v.broker.port(), Login::PerDevice, 3_500);
    announced(&v, 4).await;
    let api = OfficerApi::new(gateway.http_port());
    let base = format!("http://127.0.0.1:{}", gateway.http_port());
    let driver = ChromeDriver::start().expect("ChromeDriver starts");

    // A grid leader: the API refuses them the rollout, and their console has no tab for it.
    let (status, refused) =
        api.call(reqwest::Method::GET, "/api/v1/firmware/rollout", Some(&v.grid_token), None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("role")), "{refused}");
    let leader = driver.session("grid-leader").await.expect("a Chromium session");
    sign_in(&leader, &base, &v.grid_token).await;
    until(gateway, Duration::from_secs(20), "the grid leader signed in", || async {
        text(&leader, "#who").await.contains("grid-leader").then_some(())
    })
    .await;
    let tab =
        leader.find(Locator::Css("nav button[data-view=firmware]")).await.expect("the tab is in the page");
    assert!(!tab.is_displayed().await.unwrap(), "a grid leader sees no firmware tab");
    leader.close().await.unwrap();

    // The street desk (a duty officer), before anything is published: no rollout.
    let browser = driver.session("desk").await.expect("a Chromium session");
    sign_in(&browser, &base, &v.desk_token).await;
    until(gateway, Duration::from_secs(20), "the desk signed in", || async {
        text(&browser, "#who").await.contains("street-desk").then_some(())
    })
    .await;
    let (status, _) =
        api.call(reqwest::Method::GET, "/api/v1/firmware/rollout", Some(&v.desk_token), None).await;
    assert_eq!(status, 404, "no rollout yet");
    click(gateway, &browser, "nav button[data-view=firmware]").await;
    until(gateway, Duration::from_secs(20), "the no-rollout message", || async {
        (view_state(&browser).await.as_deref() == Some("none")).then_some(())
    })
    .await;
    let none = browser.find(Locator::Css("#fw-none")).await.unwrap();
    assert!(none.is_displayed().await.unwrap(), "the no-rollout message shows");
    assert_eq!(none.text().await.unwrap(), "当前没有固件升级。");
    assert!(!browser.find(Locator::Css("#fw-rollout")).await.unwrap().is_displayed().await.unwrap());

    // A device id that is markup never reaches a rollout: the gateway's ids are
    // `A-Z a-z 0-9 . _ -` (firegrid-protocol `check_id`), so publishing to one is refused.
    let hostile = r#"<img src=x onerror="window.pwned=1">"#;
    let (ok, said) =
        firmware(&["publish", v.image.to_str().unwrap(), "--config", config, "--devices", hostile]);
    assert!(!ok, "{said}");

    let (ok, said) = firmware(&[
        "publish",
        v.image.to_str().unwrap(),
        "--config",
        config,
        "--all",
        "--canary-share",
        "0.25",
        "--wave-size",
        "3",
        "--max-failure-share",
        "0.1",
        "--resend-after",
        "2s",
    ]);
    assert!(ok, "{said}");
    // The canary takes the image, fails its self-test and rolls back; the rollout pauses
    // itself. The view gets there by its own reading, at its own pace.
    until(gateway, Duration::from_secs(180), "the view showing the rollout paused", || async {
        (view_state(&browser).await.as_deref() == Some("paused")).then_some(())
    })
    .await;
    // Paused: nothing moves any more, so the view and the API must agree exactly.
    let rollout = api.get(&v.desk_token, "/api/v1/firmware/rollout").await;
    assert_eq!(rollout["paused_by"], "failures", "{rollout}");
    assert_eq!(rollout["counts"], serde_json::json!({ "failed_rolled_back": 1, "waiting": 3 }), "{rollout}");
    assert_eq!(view_counts(&browser).await, rollout["counts"], "the view's counts are the API's");
    assert_eq!(text(&browser, "#fw-title").await, "固件升级 1.5.0");
    let said = text(&browser, "#fw-state").await;
    assert!(said.starts_with("已暂停") && said.contains("失败比例超过暂停阈值"), "{said}");
    assert_eq!(text(&browser, "#fw-waves").await, "已开始批次 1 / 2");
    assert_eq!(text(&browser, "#fw-failures").await, "失败比例 100 %（暂停阈值 10 %）");
    assert!(attr(&browser, "#fw-failures", "class").await.unwrap_or_default().contains("over"));
    let bar = script(
        &browser,
        "return [...document.querySelectorAll('#fw-bar .seg')].map((s) => [s.dataset.group, Number(s.dataset.count)]);",
    )
    .await;
    assert_eq!(bar, serde_json::json!([["failed", 1], ["waiting", 3]]), "the bar by group");
    let rows = view_rows(&browser).await;
    let listed: Vec<(&str, &str)> =
        rows.iter().map(|r| (r[0].as_str().unwrap(), r[1].as_str().unwrap())).collect();
    assert_eq!(
        listed,
        [("sd-0", "failed_rolled_back"), ("sd-1", "waiting"), ("sd-2", "waiting"), ("sd-3", "waiting")],
        "failed first"
    );
    screenshot(&browser, "console-firmware-paused").await;
    // Failed only.
    browser.find(Locator::Css("#fw-filter")).await.unwrap().select_by_value("failed").await.unwrap();
    until(gateway, Duration::from_secs(10), "the failed devices only", || async {
        let rows = view_rows(&browser).await;
        (rows.len() == 1 && rows[0][0] == "sd-0").then_some(())
    })
    .await;
    browser.find(Locator::Css("#fw-filter")).await.unwrap().select_by_value("all").await.unwrap();

    // The operator resumes: the view follows the other three to done.
    let (ok, said) = firmware(&["resume", "--config", config]);
    assert!(ok && said.contains("resumed"), "{said}");
    // Every reading the view shows on its way: the updated count never falls (each answer is
    // read after the one before it), and the last is all three.
    let seen = std::sync::Mutex::new(Vec::<u64>::new());
    until(gateway, Duration::from_secs(240), "the view showing the rollout done", || async {
        let booted = view_counts(&browser).await["booted"].as_u64().unwrap_or(0);
        seen.lock().unwrap().push(booted);
        (view_state(&browser).await.as_deref() == Some("done")).then_some(())
    })
    .await;
    let seen = seen.into_inner().unwrap();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "the view went backwards: {seen:?}");
    assert_eq!(seen.last(), Some(&3), "{seen:?}");
    let rollout = api.get(&v.desk_token, "/api/v1/firmware/rollout").await;
    assert_eq!(rollout["counts"], serde_json::json!({ "booted": 3, "failed_rolled_back": 1 }), "{rollout}");
    assert_eq!(view_counts(&browser).await, rollout["counts"], "the view's counts are the API's");
    assert!(text(&browser, "#fw-state").await.starts_with("已完成"));
    assert_eq!(text(&browser, "#fw-waves").await, "已开始批次 2 / 2");
    // In English at a click, without waiting for the next reading.
    click(gateway, &browser, "#lang").await;
    assert_eq!(text(&browser, "#fw-state").await, "Done");
    assert_eq!(text(&browser, "#fw-failures").await, "Failure share 25 % (pause threshold 10 %)");
    click(gateway, &browser, "#lang").await;
    let outcomes = fleet.stop();
    assert_eq!(outcomes.iter().filter(|o| o.device != "sd-0" && o.boot == 2).count(), 3, "{outcomes:?}");

    // The real answer, with sd-0's id made markup and 6,000 waiting devices put before the
    // real ones, as the page reads it (the gateway itself refuses such ids, above).
    let rewrite = format!(
        "const hostile = {hostile:?}; \
         const real = window.fetch.bind(window); \
         window.fetch = async (url, options) => {{ \
           const res = await real(url, options); \
           if (!String(url).endsWith('/api/v1/firmware/rollout') || !res.ok) return res; \
           const body = await res.json(); \
           const more = Array.from({{ length: 6000 }}, (_, i) => ({{ device: `x-${{i}}`, state: 'waiting', offset: 0 }})); \
           body.devices = [...more, ...body.devices.map((d) => d.device === 'sd-0' ? {{ ...d, device: hostile }} : d)]; \
           body.counts.waiting = (body.counts.waiting || 0) + 6000; \
           return new Response(JSON.stringify(body), {{ status: 200, headers: {{ 'Content-Type': 'application/json' }} }}); \
         }};"
    );
    script(&browser, &rewrite).await;
    until(gateway, Duration::from_secs(30), "the rewritten rollout in the view", || async {
        (view_counts(&browser).await["waiting"] == 6000).then_some(())
    })
    .await;
    let rows = view_rows(&browser).await;
    assert_eq!(rows[0][1], "failed_rolled_back", "the failed device first, before 6,000 waiting");
    assert_eq!(rows[0][2], hostile, "the hostile id shows as text, exactly");
    assert_eq!(rows.len(), 200, "at most 200 rows at a time");
    assert!(rows[1..].iter().all(|r| r[1] == "waiting"), "then the waiting ones");
    let page = script(
        &browser,
        "return { images: document.querySelectorAll('#firmware-view img').length, \
           pwned: window.pwned === undefined ? null : window.pwned, \
           rest: Number(document.querySelector('#fw-more').dataset.rest), \
           more: !document.querySelector('#fw-more').hidden };",
    )
    .await;
    assert_eq!(page, serde_json::json!({ "images": 0, "pwned": null, "rest": 6004 - 200, "more": true }));
    click(gateway, &browser, "#fw-show-more").await;
    until(gateway, Duration::from_secs(10), "200 more rows", || async {
        (view_rows(&browser).await.len() == 400).then_some(())
    })
    .await;
    browser.close().await.unwrap();
}
