//! The Grafana dashboards in `dashboards/`, held to the data that feeds them.
//!
//! `dashboards/generate.py` declares every panel. These tests check that its committed output
//! is current and well formed (panel ids, data source, variables, layout, descriptions, units,
//! severity colours), that every query names only measurements, tags, fields and values that
//! `gateway/SCHEMA.md` documents, and above all that every query of every panel and variable
//! runs against a real InfluxDB 1.x, filled by the gateway's own writer from a simulated
//! village, and returns rows. A query naming a measurement, tag or field the writer does not
//! produce comes back empty (InfluxQL does not call that an error), and fails here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firegrid_protocol::{
    CameraEvent, CameraEventKind, CameraHealth, ChannelStatus, DetectorState, DeviceId, Encoding, Fault,
    FaultKind, Heartbeat, StateChange, Status, Topic, Uplink, UplinkBody, VillageId, WaterReading,
};
use firegrid_tests::officers::{Officer, OfficerApi, write_directory};
use firegrid_tests::{InfluxDb1, InfluxSeries, Mosquitto, Pymodbus, SimRegisters, SimValue, WebhookReceiver};
use regex::Regex;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{Value, json};

const DATASOURCE_UID: &str = "firegrid-influxdb";
const DB: &str = "firegrid";
const VILLAGE: &str = "fuhai-1";

/// The five dashboards the issue asks for.
const UIDS: [&str; 5] =
    ["firegrid-cases", "firegrid-devices", "firegrid-gateway", "firegrid-overview", "firegrid-water"];

/// One colour per severity on every dashboard.
const SEVERITY_COLOURS: [(&str, &str); 6] = [
    ("fire", "red"),
    ("pre_alarm", "orange"),
    ("water", "blue"),
    ("communication_loss", "purple"),
    ("offline", "#8e8e8e"),
    ("fault", "yellow"),
];

/// What the tests put for `$timeFilter`: the last hour, which holds the whole test.
const TIME_FILTER: &str = "time > now() - 1h";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

// ---- The dashboards as data. -------------------------------------------------------------

struct Dashboard {
    uid: String,
    json: Value,
}

impl Dashboard {
    fn panels(&self) -> &[Value] {
        self.json["panels"].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    fn variables(&self) -> &[Value] {
        self.json["templating"]["list"].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    /// Every panel target's query, named `<dashboard> / <panel> / <refId>`.
    fn panel_queries(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for panel in self.panels() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let name = format!(
                    "{} / {} / {}",
                    self.uid,
                    panel["title"].as_str().unwrap_or("?"),
                    target["refId"].as_str().unwrap_or("?")
                );
                out.push((name, target["query"].as_str().unwrap_or_default().to_owned()));
            }
        }
        out
    }
}

fn dashboards() -> Vec<Dashboard> {
    let dir = repo().join("dashboards/json");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            Dashboard { uid: json["uid"].as_str().unwrap_or_default().to_owned(), json }
        })
        .collect()
}

/// Grafana's built-in variables that may appear in queries and links, with what the tests
/// put for them in queries.
fn builtin(name: &str) -> Option<&'static str> {
    match name {
        "timeFilter" | "__timeFilter" => Some(TIME_FILTER),
        "__interval" | "interval" => Some("10s"),
        "__interval_ms" => Some("10000"),
        // Data-link variables.
        "__value" | "__data" | "__field" | "__series" => Some(""),
        _ => None,
    }
}

/// `$name`, `${name}`, `${name:format}`, `${__value.raw}` and `[[name]]` references.
fn variable_pattern() -> Regex {
    Regex::new(r"\$\{(\w+)(?:[:.][^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]").unwrap()
}

fn variable_refs(text: &str) -> Vec<String> {
    variable_pattern()
        .captures_iter(text)
        .map(|c| c.get(1).or(c.get(2)).or(c.get(3)).unwrap().as_str().to_owned())
        .collect()
}

/// Fills in a query as Grafana would: built-ins as the tests choose them, dashboard variables
/// from `values`. Panics on an undefined variable.
fn substitute(query: &str, values: &BTreeMap<String, String>) -> String {
    variable_pattern()
        .replace_all(query, |c: &regex::Captures| {
            let name = c.get(1).or(c.get(2)).or(c.get(3)).unwrap().as_str();
            match (values.get(name), builtin(name)) {
                (Some(v), _) => v.clone(),
                (None, Some(v)) => v.to_owned(),
                (None, None) => panic!("${name} is not defined for {query}"),
            }
        })
        .into_owned()
}

/// A value escaped for an InfluxQL regex, as Grafana's InfluxDB data source does.
fn regex_escape(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if r"\^$*+?.()|[]{}/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What Grafana sends for a multi-value variable with several values chosen, in a regex.
fn any_of(values: &[String]) -> String {
    format!("({})", values.iter().map(|v| regex_escape(v)).collect::<Vec<_>>().join("|"))
}

// ---- The checks that need no server. -----------------------------------------------------

#[test]
fn generated_dashboards_are_current() {
    let out = Command::new("python3")
        .arg(repo().join("dashboards/generate.py"))
        .arg("--check")
        .output()
        .expect("python3 runs dashboards/generate.py");
    assert!(
        out.status.success(),
        "the committed dashboards are not what dashboards/generate.py generates: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dashboards_are_well_formed() {
    let all = dashboards();
    let uids: Vec<&str> = all.iter().map(|d| d.uid.as_str()).collect();
    assert_eq!(uids, UIDS, "one file per dashboard");
    let mut problems = Vec::new();
    for d in &all {
        problems.extend(well_formed(d));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Everything wrong with one dashboard.
fn well_formed(d: &Dashboard) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |p: String| problems.push(format!("{}: {p}", d.uid));
    let datasource = json!({"type": "influxdb", "uid": DATASOURCE_UID});
    if d.json["schemaVersion"].as_u64().unwrap_or(0) < 39 {
        problem(format!("schemaVersion {} < 39", d.json["schemaVersion"]));
    }

    // Variables: defined before use, each query variable on the provisioned data source.
    let mut defined: BTreeSet<String> = BTreeSet::new();
    for v in d.variables() {
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        if v["type"] == "query" {
            if v["datasource"] != datasource {
                problem(format!("variable {name}: data source {}", v["datasource"]));
            }
            for r in variable_refs(v["query"].as_str().unwrap_or_default()) {
                if !defined.contains(&r) && builtin(&r).is_none() {
                    problem(format!("variable {name} uses ${r}, not defined before it"));
                }
            }
        }
        defined.insert(name);
    }

    let mut ids = BTreeSet::new();
    let mut rects = Vec::new();
    for p in d.panels() {
        let title = p["title"].as_str().unwrap_or("?");
        if !ids.insert(p["id"].as_u64().unwrap_or(0)) {
            problem(format!("panel {title}: id {} used twice", p["id"]));
        }
        if p["datasource"] != datasource {
            problem(format!("panel {title}: data source {}", p["datasource"]));
        }
        if p["description"].as_str().unwrap_or_default().len() < 30 {
            problem(format!("panel {title}: no real description"));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problem(format!("panel {title}: no query"));
        }
        if p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or_default().is_empty() {
            problem(format!("panel {title}: no unit"));
        }
        for t in &targets {
            if t["datasource"] != datasource {
                problem(format!("panel {title} {}: data source {}", t["refId"], t["datasource"]));
            }
            if t["rawQuery"] != true || t["query"].as_str().unwrap_or_default().is_empty() {
                problem(format!("panel {title} {}: not a raw InfluxQL query", t["refId"]));
            }
        }
        // Variables in queries and in data links.
        let mut texts: Vec<String> =
            targets.iter().map(|t| t["query"].as_str().unwrap_or_default().to_owned()).collect();
        texts.push(p["fieldConfig"].to_string());
        for text in &texts {
            for r in variable_refs(text) {
                if !defined.contains(&r) && builtin(&r).is_none() {
                    problem(format!("panel {title} uses ${r}, which is not defined"));
                }
            }
        }
        if let Some(name) = unmatched_override(p) {
            problem(format!("panel {title}: override for {name:?}, a field no query returns by that name"));
        }
        let g = &p["gridPos"];
        let rect = [&g["x"], &g["y"], &g["w"], &g["h"]].map(|v| v.as_u64().unwrap_or(0));
        if rect[2] == 0 || rect[3] == 0 || rect[0] + rect[2] > 24 {
            problem(format!("panel {title}: gridPos {g} outside the 24 columns"));
        }
        rects.push((title.to_owned(), rect));
        problems_of_colours(p, &mut problem);
    }
    for (i, (a, ra)) in rects.iter().enumerate() {
        for (b, rb) in &rects[i + 1..] {
            let apart = ra[0] + ra[2] <= rb[0]
                || rb[0] + rb[2] <= ra[0]
                || ra[1] + ra[3] <= rb[1]
                || rb[1] + rb[3] <= ra[1];
            if !apart {
                problem(format!("panels {a} {ra:?} and {b} {rb:?} overlap"));
            }
        }
    }
    problems
}

/// An override naming a field no target returns under that name. Grafana names a field of a
/// table-format query after its column, and a time series after the target's alias (without
/// one, `measurement.column`); an alias with `$tag_...` names it after data, which cannot be
/// checked here.
fn unmatched_override(panel: &Value) -> Option<String> {
    let identifier = Regex::new(r#""([^"]+)""#).unwrap();
    let mut names: BTreeSet<String> = BTreeSet::from(["Time".to_owned()]);
    for t in panel["targets"].as_array().into_iter().flatten() {
        let alias = t["alias"].as_str().unwrap_or_default();
        if alias.contains("$tag_") {
            return None;
        }
        if t["resultFormat"] == "table" {
            let query = t["query"].as_str().unwrap_or_default();
            names.extend(identifier.captures_iter(query).map(|c| c[1].to_owned()));
        } else if !alias.is_empty() {
            names.insert(alias.to_owned());
        }
    }
    for t in panel["transformations"].as_array().into_iter().flatten() {
        if let Some(alias) = t["options"]["alias"].as_str() {
            names.insert(alias.to_owned());
        }
    }
    let overrides = panel["fieldConfig"]["overrides"].as_array().into_iter().flatten();
    overrides
        .filter(|o| o["matcher"]["id"] == "byName")
        .filter_map(|o| o["matcher"]["options"].as_str())
        .find(|name| !names.contains(*name))
        .map(str::to_owned)
}

/// Severity colours: every override and value mapping that names a severity uses its colour.
fn problems_of_colours(panel: &Value, problem: &mut impl FnMut(String)) {
    let colour = |severity: &str| SEVERITY_COLOURS.iter().find(|(s, _)| *s == severity).map(|(_, c)| *c);
    let title = panel["title"].as_str().unwrap_or("?");
    for o in panel["fieldConfig"]["overrides"].as_array().into_iter().flatten() {
        let Some(want) = o["matcher"]["options"].as_str().and_then(colour) else { continue };
        for prop in o["properties"].as_array().into_iter().flatten() {
            if prop["id"] == "color" && prop["value"]["fixedColor"] != want {
                problem(format!(
                    "panel {title}: {} drawn {}, not {want}",
                    o["matcher"]["options"], prop["value"]
                ));
            }
        }
    }
    // Value mappings anywhere in the field config (defaults and overrides).
    let mut stack = vec![&panel["fieldConfig"]];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if map.get("type").is_some_and(|t| t == "value")
                    && let Some(Value::Object(options)) = map.get("options")
                {
                    for (key, m) in options {
                        if let Some(want) = colour(key)
                            && m["color"] != want
                        {
                            problem(format!(
                                "panel {title}: mapping {key} coloured {}, not {want}",
                                m["color"]
                            ));
                        }
                    }
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
}

#[test]
fn a_broken_dashboard_is_caught() {
    let d = dashboards().into_iter().find(|d| d.uid == "firegrid-overview").unwrap();
    assert!(well_formed(&d).is_empty());
    let mut broken = d.json.clone();
    let panels = broken["panels"].as_array_mut().unwrap();
    let index = |title: &str| panels.iter().position(|p| p["title"] == title).unwrap();
    let (fires, stages, severities, today, confirmed) = (
        index("Confirmed fires now"),
        index("Open cases by stage"),
        index("Open cases by severity"),
        index("Cases opened today"),
        index("Fires confirmed today"),
    );
    panels[stages]["id"] = panels[fires]["id"].clone();
    panels[stages]["gridPos"] = panels[fires]["gridPos"].clone();
    panels[confirmed]["description"] = json!("");
    panels[confirmed]["fieldConfig"]["defaults"]["unit"] = json!("");
    panels[today]["targets"][0]["datasource"]["uid"] = json!("other");
    panels[today]["targets"][0]["query"] = json!("SELECT 1 FROM x WHERE \"grid\" =~ /^$grdi$/");
    panels[severities]["fieldConfig"]["overrides"][0]["properties"][0]["value"]["fixedColor"] =
        json!("green");
    let problems = well_formed(&Dashboard { uid: d.uid.clone(), json: broken }).join("\n");
    for expected in
        ["used twice", "overlap", "no real description", "no unit", "data source", "$grdi", "drawn"]
    {
        assert!(problems.contains(expected), "{expected} not found in:\n{problems}");
    }
}

#[test]
fn provisioning_names_the_data_source_and_folder_the_dashboards_use() {
    let dir = repo().join("dashboards/provisioning");
    let datasource = std::fs::read_to_string(dir.join("datasources/firegrid.yaml")).unwrap();
    for line in [format!("uid: {DATASOURCE_UID}"), "type: influxdb".into(), "version: InfluxQL".into()] {
        assert!(datasource.lines().any(|l| l.trim() == line), "datasources/firegrid.yaml lacks `{line}`");
    }
    let provider = std::fs::read_to_string(dir.join("dashboards/firegrid.yaml")).unwrap();
    assert!(provider.lines().any(|l| l.trim() == "path: ${FIREGRID_DASHBOARDS_DIR}"), "{provider}");
    // Grafana has no defaults for ${VAR}: every variable the files read is in firegrid.env.
    let env = std::fs::read_to_string(dir.join("firegrid.env")).unwrap();
    let defaults: BTreeMap<&str, &str> =
        env.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once('=')).collect();
    let settings: String =
        format!("{datasource}{provider}").lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    for r in variable_refs(&settings) {
        assert!(defaults.contains_key(r.as_str()), "${{{r}}} has no default in firegrid.env");
    }
    assert!(defaults["FIREGRID_DASHBOARDS_DIR"].ends_with("dashboards/json"));
    assert_eq!(defaults["FIREGRID_INFLUX_DB"], DB);
}

// ---- The schema: every name a query uses is documented. ----------------------------------

/// `gateway/SCHEMA.md` as data: measurement → key → values its meaning lists in backticks.
fn documented() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let text = std::fs::read_to_string(repo().join("gateway/SCHEMA.md")).unwrap();
    let ticked = Regex::new("`([^`]+)`").unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut hierarchy = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("### `").and_then(|l| l.strip_suffix('`')) {
            current = Some(name.to_owned());
            out.entry(name.to_owned()).or_default();
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() > 4 && (cells[1] == "tag" || cells[1] == "field") {
            let values = ticked.captures_iter(cells[3]).map(|c| c[1].to_owned()).collect();
            let key = cells[2].trim_matches('`').to_owned();
            match &current {
                Some(m) => out.get_mut(m).unwrap().insert(key, values),
                None => hierarchy.insert(key, values),
            };
        }
    }
    // As gateway/src/series/schema.rs reads it: device measurements carry the hierarchy tags
    // and the per-message fields.
    for (m, keys) in out.iter_mut() {
        if !m.starts_with("gateway_")
            && !["communication_loss", "case_transition", "alarm_flood"].contains(&m.as_str())
        {
            keys.extend(hierarchy.clone());
            for f in ["boot", "seq", "device_ts_ms"] {
                keys.insert(f.into(), Vec::new());
            }
        }
    }
    out
}

/// What in `query` is not documented: measurements, tag and field keys (double-quoted
/// identifiers that are not aliases), and string values compared with `=` or `<>` against a
/// key whose documentation lists its values.
fn undocumented(query: &str, schema: &BTreeMap<String, BTreeMap<String, Vec<String>>>) -> Vec<String> {
    let identifier = Regex::new(r#""([^"]+)""#).unwrap();
    let from = Regex::new(r#"FROM\s+"([^"]+)""#).unwrap();
    let alias = Regex::new(r#"AS\s+"([^"]+)""#).unwrap();
    let compared = Regex::new(r#""([^"]+)"\s*(?:=|<>|!=)\s*'([^']*)'"#).unwrap();
    let mut problems = Vec::new();
    let measurements: Vec<&str> = from.captures_iter(query).map(|c| c.get(1).unwrap().as_str()).collect();
    for m in &measurements {
        if !schema.contains_key(*m) {
            problems.push(format!("measurement {m:?} is not in SCHEMA.md"));
        }
    }
    // Without FROM (SHOW TAG VALUES over every measurement) any documented key will do.
    let scope: Vec<&BTreeMap<String, Vec<String>>> = if measurements.is_empty() {
        schema.values().collect()
    } else {
        measurements.iter().filter_map(|m| schema.get(*m)).collect()
    };
    let aliases: BTreeSet<&str> = alias.captures_iter(query).map(|c| c.get(1).unwrap().as_str()).collect();
    for c in identifier.captures_iter(query) {
        let name = c.get(1).unwrap().as_str();
        if measurements.contains(&name) || aliases.contains(name) {
            continue;
        }
        if !scope.iter().any(|keys| keys.contains_key(name)) {
            problems.push(format!("{name:?} is not a documented tag or field of {measurements:?}"));
        }
    }
    for c in compared.captures_iter(query) {
        let (key, value) = (&c[1], &c[2]);
        let listed: BTreeSet<&String> = scope.iter().filter_map(|keys| keys.get(key)).flatten().collect();
        // Keys documented with one example (`desk`, `drill`) are not enumerations.
        if listed.len() >= 2 && !listed.iter().any(|v| *v == value) {
            problems.push(format!("{key} = '{value}': SCHEMA.md lists {listed:?}"));
        }
    }
    problems
}

#[test]
fn every_query_names_only_what_the_schema_documents() {
    let schema = documented();
    assert!(schema.len() >= 15, "SCHEMA.md parsed to {:?}", schema.keys());
    let mut problems = Vec::new();
    let mut checked = 0;
    for d in dashboards() {
        let variables = d.variables().iter().filter(|v| v["type"] == "query");
        let queries = variables
            .map(|v| {
                (
                    format!("{} / variable {}", d.uid, v["name"]),
                    v["query"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .chain(d.panel_queries());
        for (name, query) in queries {
            checked += 1;
            for p in undocumented(&query, &schema) {
                problems.push(format!("{name}: {p}"));
            }
        }
    }
    assert!(checked > 50, "only {checked} queries");
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The check itself bites.
    let bad = r#"SELECT last("batery_mv") FROM "device_heartbeat" WHERE "transition" = 'acknowleged'"#;
    assert_eq!(undocumented(bad, &schema).len(), 2, "{:?}", undocumented(bad, &schema));
    let bad = r#"SELECT count("case_id") FROM "case_transitions""#;
    assert!(!undocumented(bad, &schema).is_empty());
    let bad = r#"SELECT count("case_id") FROM "case_transition" WHERE "transition" = 'acknowleged'"#;
    assert!(!undocumented(bad, &schema).is_empty());
}

// ---- Every query against a village. --------------------------------------------------------

/// What is wrong with the answer to `query`, or how many rows it returned: it must succeed,
/// return at least one row, have a value in every column somewhere (a column that is null in
/// every row is a field the writer does not produce) and a value for every group-by tag in
/// some series (likewise a tag).
fn check_answer(db: &InfluxDb1, query: &str) -> Result<usize, String> {
    let series: Vec<InfluxSeries> = db.query_series(DB, query).map_err(|e| format!("fails: {e}"))?;
    let rows: usize = series.iter().map(|s| s.values.len()).sum();
    if rows == 0 {
        return Err("returns no rows".into());
    }
    let columns: BTreeSet<&String> =
        series.iter().flat_map(|s| &s.columns).filter(|c| *c != "time").collect();
    for c in columns {
        let valued = series.iter().any(|s| s.column(c).is_some_and(|v| v.iter().any(|v| !v.is_null())));
        if !valued {
            return Err(format!("column {c:?} is null in every row"));
        }
    }
    let tags: BTreeSet<&String> = series.iter().flat_map(|s| s.tags.keys()).collect();
    for t in tags {
        if !series.iter().any(|s| s.tags.get(t).is_some_and(|v| !v.is_empty())) {
            return Err(format!("tag {t:?} is empty in every series"));
        }
    }
    Ok(rows)
}

/// The values a `SHOW TAG VALUES` query returns, deduplicated and sorted.
fn tag_values(db: &InfluxDb1, query: &str) -> Vec<String> {
    let series = db.query_series(DB, query).unwrap_or_else(|e| panic!("{query}: {e}"));
    let values: BTreeSet<String> = series
        .iter()
        .flat_map(|s| s.column("value").unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    values.into_iter().collect()
}

/// The village: streets, communities, grids and five buildings in each grid.
const GRIDS: [(&str, &str, &str); 4] = [
    ("Fuhai", "Dongfeng", "Dongfeng-1"),
    ("Fuhai", "Dongfeng", "Dongfeng-2"),
    ("Fuhai", "Xinhe", "新河一网格"),
    ("Majie", "Shilin", "Shilin-1"),
];

fn building(n: usize) -> String {
    format!("B{n:02}")
}

/// Grid, community and street of building `n` (1-based).
fn place(n: usize) -> (&'static str, &'static str, &'static str) {
    let (street, community, grid) = GRIDS[(n - 1) / 5];
    (grid, community, street)
}

/// 20 buildings with three detectors each; a camera in B01; five cameras in the market hall
/// B11; an MQTT water sensor in B16 and a Modbus riser sensor in B17.
fn registry(dir: &Path) -> PathBuf {
    let mut csv = String::from(
        "device_id,kind,model,building_id,building_address,lat,lon,grid,community,street,village,district,heartbeat,channels\n",
    );
    let mut row = |device: &str, kind: &str, n: usize, channels: &str| {
        let (grid, community, street) = place(n);
        let (lat, lon) = (25.03 + n as f64 * 0.0004, 102.66 + n as f64 * 0.0003);
        csv.push_str(&format!(
            "{device},{kind},m1,{b},No. {n} Fuhai Lane,{lat:.4},{lon:.4},{grid},{community},{street},{VILLAGE},Xishan,,{channels}\n",
            b = building(n)
        ));
    };
    for n in 1..=20 {
        for k in 1..=3 {
            row(&format!("sd-{}-{k}", building(n)), "smoke_detector", n, "");
        }
    }
    row("cam-01", "camera", 1, "4");
    for k in 1..=5 {
        row(&format!("cam-11-{k}"), "camera", 11, "1");
    }
    row("ws-16", "water_sensor", 16, "");
    row("riser-17", "water_sensor", 17, "");
    let path = dir.join("registry.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// The grid leader of Dongfeng-1 and the district desk; returns their tokens.
fn officers(dir: &Path) -> (String, String) {
    let officer = |id, name, role, scope| Officer { id, name, role, scope, on_duty: true };
    let directory = [
        officer("dongfeng1-leader", "Dongfeng-1 grid leader", "grid_leader", "grid:Dongfeng-1"),
        officer("district-desk", "Xishan district desk", "duty_officer", "district:Xishan"),
    ];
    let [leader, desk]: [String; 2] =
        write_directory(&dir.join("officers.toml"), &directory).try_into().unwrap();
    (leader, desk)
}

/// The gateway's configuration: the test's broker, database, Modbus sensor and webhook; a
/// flood at more than 3 new alarms per desk, alarms stale after 4 s, and a fire deadline of
/// 3 s per level, so that every kind of transition happens within seconds.
fn config(dir: &Path, broker: u16, db: u16, modbus: &str, hook: u16) -> firegrid_gateway::config::Config {
    let officers = dir.join("officers.toml");
    let text = format!(
        r#"
data_dir = "{data}"
http_listen = "127.0.0.1:0"
[mqtt]
host = "127.0.0.1"
port = {broker}
client_id = "gw-dash"
max_backoff = "500ms"
[registry]
csv = "{registry}"
[[influx]]
name = "street"
url = "http://127.0.0.1:{db}"
api = "v1"
database = "{DB}"
flush_interval = "100ms"
max_backoff = "1s"
[[modbus.devices]]
id = "riser-17"
transport = "tcp"
address = "{modbus}"
poll_interval = "300ms"
[[modbus.devices.points]]
name = "pressure"
register = "holding"
address = 0
type = "f32"
measures = "pressure_mpa"
low = 0.15
deadband = 0.02
[[modbus.devices.points]]
name = "level"
register = "holding"
address = 2
type = "f32"
measures = "level_m"
low = 1.0
deadband = 0.1
[alerting]
district = "Xishan"
officers = "{officers}"
routes = {{ "*" = ["hook"] }}
[alerting.engine]
flood_threshold = 3
stale_after = "4s"
[alerting.engine.fire]
entry = ["grid", "community", "street"]
ack = [{{ after = "3s" }}, {{ after = "3s" }}, {{ after = "3s" }}, {{ after = "3s" }}]
renotify = "2s"
handle = {{ after = "10m" }}
latched = true
[notify.channels.hook]
kind = "webhook"
url = "http://127.0.0.1:{hook}/hook"
secret = "test-secret"
"#,
        data = dir.join("data").display(),
        registry = dir.join("registry.csv").display(),
        officers = officers.display(),
    );
    toml::from_str(&text).unwrap()
}

/// The devices' side: publishes each device's messages with its own sequence numbers.
struct Devices {
    client: AsyncClient,
    seq: HashMap<String, u32>,
    last: Option<(String, Vec<u8>)>,
}

impl Devices {
    fn connect(broker: u16) -> Devices {
        let mut opts = MqttOptions::new("village", "127.0.0.1", broker);
        opts.set_clean_session(false).set_inflight(200);
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Devices { client, seq: HashMap::new(), last: None }
    }

    async fn send(&mut self, device: &str, body: UplinkBody) {
        let seq = self.seq.entry(device.to_owned()).or_insert(0);
        *seq += 1;
        let dev = DeviceId::new(device).unwrap();
        let msg = Uplink::new(dev.clone(), 1, *seq, now_ms(), body);
        let topic = Topic::uplink(VillageId::new(VILLAGE).unwrap(), dev, msg.kind()).to_buf().to_string();
        let payload = msg.encode(Encoding::Json, &mut [0u8; 1024]).unwrap().to_vec();
        self.raw(&topic, payload.clone()).await;
        self.last = Some((topic, payload));
    }

    async fn raw(&self, topic: &str, payload: Vec<u8>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    }

    async fn heartbeat(&mut self, device: &str, battery_mv: u16, drift_pct: u8, signal_dbm: i16) {
        let body = UplinkBody::Heartbeat(Heartbeat {
            battery_mv: Some(battery_mv),
            signal_dbm,
            chamber_baseline: Some(1500),
            drift_pct: Some(drift_pct),
            temperature_c: 21.5,
            firmware: heapless::String::try_from("1.4.2").unwrap(),
            uptime_s: 3600,
        });
        self.send(device, body).await;
    }

    async fn state(&mut self, device: &str, state: DetectorState) {
        self.send(device, UplinkBody::State(StateChange { state, obscuration_db_m: 0.4 })).await;
    }

    async fn camera(&mut self, device: &str, channel: u16, status: ChannelStatus) {
        self.send(device, UplinkBody::CameraHealth(CameraHealth { channel, status })).await;
    }
}

/// Acts on `case`, which must succeed.
async fn must(api: &OfficerApi, token: &str, case: u64, body: Value) {
    let (status, answer) = api.act(token, case, body.clone()).await;
    assert_eq!(status, 200, "{body} → {answer}");
}

/// The open case of `kind` in `building`, waiting for it to open.
async fn case(api: &OfficerApi, token: &str, kind: &str, building: &str) -> u64 {
    let started = Instant::now();
    loop {
        let listed = api.get(token, "/api/v1/cases").await;
        let found = listed["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == kind && c["location"]["building"] == building);
        if let Some(case) = found {
            return case["id"].as_u64().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no {kind} case in {building}: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `query` returns rows.
async fn wait_for(db: &InfluxDb1, what: &str, query: &str, deadline: Instant) {
    while db.query_series(DB, query).map(|s| s.iter().map(|s| s.values.len()).sum::<usize>()).unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "{what} never reached the database: {query}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One query run: where it comes from, and the rows with every variable "All" and with the
/// real values of the village chosen.
struct Run {
    name: String,
    all: Result<usize, String>,
    chosen: Result<usize, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_of_every_panel_returns_rows_from_a_simulated_village() {
    let started = Instant::now();
    let broker = Mosquitto::start().unwrap();
    let db = InfluxDb1::start().unwrap();
    db.create_database(DB).unwrap();
    // The riser in B17: pressure below its 0.15 MPa low, tank below its 1 m low.
    let modbus = Pymodbus::start(SimRegisters {
        unit: 1,
        holding: vec![
            SimValue { address: 0, data_type: "f32", word_order: "big", value: 0.08 },
            SimValue { address: 2, data_type: "f32", word_order: "big", value: 0.8 },
        ],
        input: Vec::new(),
    })
    .unwrap();
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path());
    let (leader, desk) = officers(dir.path());
    let gateway = firegrid_gateway::runtime::Gateway::start(
        config(dir.path(), broker.port(), db.port(), &modbus.address(), hook.port()),
        None,
    )
    .await
    .unwrap();
    // Until the gateway's subscriptions are granted the broker drops what devices publish.
    while !gateway.shared.health().mqtt_disconnected.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "the gateway never subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let api = OfficerApi::new(gateway.http_addr.port());
    let mut field = Devices::connect(broker.port());

    // Every detector reports: batteries from fresh to flat, drift from clean to dirty, signal
    // from strong to weak.
    for n in 1..=20 {
        for k in 1..=3u16 {
            let i = (n as u16 - 1) * 3 + k;
            let battery = 3450 - i * 7;
            let drift = ((i * 5) % 70) as u8;
            field.heartbeat(&format!("sd-{}-{k}", building(n)), battery, drift, -80 - (i % 40) as i16).await;
        }
    }
    // Low battery in B03, contamination in B04: maintenance cases.
    field.heartbeat("sd-B03-1", 3050, 10, -95).await;
    field.send("sd-B03-1", UplinkBody::Fault(Fault { fault: FaultKind::LowBattery, active: true })).await;
    field.heartbeat("sd-B04-1", 3300, 85, -90).await;
    field.send("sd-B04-1", UplinkBody::Fault(Fault { fault: FaultKind::Contamination, active: true })).await;
    // The same heartbeat again (a duplicate), a payload that is not a message (rejected), and
    // a device the registry does not know.
    let (topic, payload) = field.last.clone().unwrap();
    field.raw(&topic, payload).await;
    field.raw(&format!("fg/v1/{VILLAGE}/sd-B05-1/up/heartbeat"), b"not a message".to_vec()).await;
    field.heartbeat("sd-unregistered", 3300, 5, -90).await;
    // Cameras: B01's second channel has lost its picture; the market hall's cameras are up.
    field.camera("cam-01", 1, ChannelStatus::Online).await;
    field.camera("cam-01", 2, ChannelStatus::VideoLoss).await;
    for k in 1..=5 {
        field.camera(&format!("cam-11-{k}"), 1, ChannelStatus::Online).await;
    }
    // Water: the MQTT sensor in B16 is healthy.
    for (pressure, level) in [(0.32, 3.1), (0.31, 3.0)] {
        field
            .send(
                "ws-16",
                UplinkBody::Water(WaterReading { pressure_mpa: Some(pressure), level_m: Some(level) }),
            )
            .await;
    }

    // A fire in B01: two detectors and the camera. Nobody answers it.
    field.state("sd-B01-1", DetectorState::Alarm).await;
    field.state("sd-B01-2", DetectorState::Alarm).await;
    let fire = UplinkBody::CameraEvent(CameraEvent {
        channel: 1,
        event: CameraEventKind::Fire,
        active: true,
        confidence_pct: 92,
        snapshot: Some(heapless::String::try_from("snap/cam-01/1.jpg").unwrap()),
    });
    field.send("cam-01", fire).await;
    // Cooking in B02, and a detector in B06 that chatters.
    field.state("sd-B02-1", DetectorState::Alarm).await;
    for state in [
        DetectorState::Alarm,
        DetectorState::Cleared,
        DetectorState::Alarm,
        DetectorState::Cleared,
        DetectorState::Alarm,
    ] {
        field.state("sd-B06-1", state).await;
    }
    // The market hall's power fails: each camera's last will says it is gone. The fifth makes
    // it a communication loss of the building.
    for k in 1..=5 {
        field.send(&format!("cam-11-{k}"), UplinkBody::Status(Status { online: false })).await;
    }

    // The grid leader carries the cooking alarm to closure.
    let cooking = case(&api, &leader, "fire", "B02").await;
    must(&api, &leader, cooking, json!({"command": "acknowledge"})).await;
    must(&api, &leader, cooking, json!({"command": "dispatch", "assignee": "grid worker Li"})).await;
    must(
        &api,
        &leader,
        cooking,
        json!({"command": "dispose", "disposition": {"outcome": "false_alarm", "cause": "cooking"}}),
    )
    .await;
    field.state("sd-B02-1", DetectorState::Cleared).await;
    // Latched: the case closes once the detector has cleared and the latch is reset.
    let report = json!({"report": "pan left on the stove, no fire", "resident_informed": true});
    let reset = Instant::now();
    loop {
        api.act(&leader, cooking, json!({"command": "reset_latch"})).await;
        let (status, answer) =
            api.act(&leader, cooking, json!({"command": "close", "feedback": report.clone()})).await;
        if status == 200 {
            break;
        }
        assert!(reset.elapsed() < Duration::from_secs(20), "cooking case not closed: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The district desk acknowledges the low battery and sends someone to the market hall.
    let battery = case(&api, &desk, "fault", "B03").await;
    must(&api, &desk, battery, json!({"command": "acknowledge"})).await;
    let market = case(&api, &desk, "offline", "B11").await;
    must(&api, &desk, market, json!({"command": "dispatch", "assignee": "electrician Wang"})).await;
    // One market camera comes back.
    field.camera("cam-11-1", 1, ChannelStatus::Online).await;

    // Wait for what the panels need: every kind of transition, a flood, the conditions, and two
    // health reports with message counts (rates need two points).
    let deadline = Instant::now() + Duration::from_secs(45);
    for transition in ["confirmed", "escalated", "closed", "chattering", "stale", "latch_reset", "dispatched"]
    {
        let q = format!(
            "SELECT count(\"case_id\") FROM \"case_transition\" WHERE \"transition\" = '{transition}'"
        );
        wait_for(&db, transition, &q, deadline).await;
    }
    for (what, q) in [
        ("a flood", "SELECT \"pages\" FROM \"alarm_flood\" WHERE \"flooding\" = 1"),
        ("a communication loss", "SELECT \"lost\" FROM \"communication_loss\" WHERE \"lost\" = 1"),
        ("a device back online", "SELECT \"online\" FROM \"device_status\" WHERE \"online\" = 1"),
        ("a water condition", "SELECT \"active\" FROM \"water_condition\" WHERE \"active\" = 1"),
        ("a water case", "SELECT \"case_id\" FROM \"case_transition\" WHERE \"severity\" = 'water'"),
        (
            "two reports of rejects",
            "SELECT \"count\" FROM \"gateway_messages\" WHERE \"outcome\" = 'rejected' GROUP BY \"reason\" OFFSET 1",
        ),
    ] {
        wait_for(&db, what, q, deadline).await;
    }
    // The newest transition is an officer's, so "Latest case transitions" shows one.
    let fire_case = case(&api, &desk, "fire", "B01").await;
    must(&api, &desk, fire_case, json!({"command": "note", "text": "brigade on site"})).await;
    wait_for(
        &db,
        "the note",
        "SELECT \"case_id\" FROM \"case_transition\" WHERE \"transition\" = 'noted'",
        deadline,
    )
    .await;
    let filled = started.elapsed();

    // The gazetteer the map looks buildings up in holds every building of the registry.
    let out =
        Command::new("python3").arg(repo().join("dashboards/gazetteer.py")).arg(&registry).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let gazetteer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: BTreeSet<String> =
        gazetteer.as_array().unwrap().iter().filter_map(|e| e["key"].as_str().map(str::to_owned)).collect();
    assert_eq!(keys, (1..=20).map(building).collect::<BTreeSet<_>>());
    assert_eq!(gazetteer[0]["latitude"], json!(25.0304));

    // The answers are right, not only present: what the village holds, panel by panel.
    let all = dashboards();
    let expected: [(&str, &str, &str, f64); 17] = [
        ("firegrid-overview", "Confirmed fires now", "A", 1.0),
        ("firegrid-overview", "Fires confirmed today", "A", 1.0),
        // Warning: the fire, the chattering detector, two faults, the water and the
        // communication loss; response: the acknowledged low battery; handling: the market
        // hall's offline cameras, someone dispatched.
        ("firegrid-overview", "Open cases by stage", "A", 6.0),
        ("firegrid-overview", "Open cases by stage", "B", 1.0),
        ("firegrid-overview", "Open cases by stage", "C", 1.0),
        ("firegrid-overview", "Open cases by severity", "A", 1.0),
        ("firegrid-overview", "Open cases by severity", "B", 1.0),
        ("firegrid-overview", "Open cases by severity", "C", 1.0),
        ("firegrid-overview", "Open cases by severity", "D", 1.0),
        ("firegrid-overview", "Open cases by severity", "E", 1.0),
        ("firegrid-overview", "Open cases by severity", "F", 3.0),
        // Nine cases, of which only the unanswered fire escalated.
        ("firegrid-overview", "Deadline compliance today", "A", 8.0 / 9.0),
        ("firegrid-overview", "Devices online", "B", 4.0),
        ("firegrid-devices", "Devices offline now", "A", 4.0),
        ("firegrid-devices", "Scopes without communication", "A", 1.0),
        ("firegrid-devices", "False alarms per building", "A", 1.0),
        ("firegrid-cases", "Escalations by level reached", "A", 1.0),
    ];
    for (uid, title, reference, want) in expected {
        let got = first_value(&db, &all, uid, title, reference);
        assert!((got - want).abs() < 1e-9, "{uid} / {title} / {reference}: {got}, expected {want}");
    }

    // The checks bite: a misspelt field, a misspelt group-by tag, a misspelt measurement.
    for bad in [
        "SELECT last(\"batery_mv\") FROM \"device_heartbeat\" WHERE time > now() - 1h GROUP BY \"device\"",
        "SELECT last(\"battery_mv\"), \"firmwar\" FROM \"device_heartbeat\" WHERE time > now() - 1h GROUP BY \"device\"",
        "SELECT count(\"case_id\") FROM \"case_transition\" WHERE time > now() - 1h GROUP BY \"severty\"",
        "SELECT count(\"case_id\") FROM \"case_transitions\" WHERE time > now() - 1h",
    ] {
        assert!(check_answer(&db, bad).is_err(), "{bad} passed");
    }

    // Every query, first with every variable "All", then with the village's real values.
    let mut runs: Vec<Run> = Vec::new();
    for d in &all {
        let names: Vec<String> =
            d.variables().iter().map(|v| v["name"].as_str().unwrap().to_owned()).collect();
        let every: BTreeMap<String, String> = names.iter().map(|n| (n.clone(), ".*".to_owned())).collect();
        let mut chosen: BTreeMap<String, String> = BTreeMap::new();
        for v in d.variables() {
            let name = v["name"].as_str().unwrap().to_owned();
            if v["type"] != "query" {
                chosen.insert(name, v["query"].as_str().unwrap_or_default().to_owned());
                continue;
            }
            let query = v["query"].as_str().unwrap();
            let values = tag_values(&db, &substitute(query, &chosen));
            runs.push(Run {
                name: format!("{} / variable {name}", d.uid),
                all: check_answer(&db, &substitute(query, &every)),
                chosen: if values.is_empty() { Err("no values".into()) } else { Ok(values.len()) },
            });
            chosen.insert(name, any_of(&values));
        }
        for (name, query) in d.panel_queries() {
            runs.push(Run {
                name,
                all: check_answer(&db, &substitute(&query, &every)),
                chosen: check_answer(&db, &substitute(&query, &chosen)),
            });
        }
        check_chaining(&db, d);
    }
    // Late series (a rate needs a second health report): give failures a few more seconds.
    let retry_until = Instant::now() + Duration::from_secs(15);
    while runs.iter().any(|r| r.all.is_err() || r.chosen.is_err()) && Instant::now() < retry_until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rerun_failed(&db, &all, &mut runs);
    }

    println!("{:<95} {:>5} {:>7}", "query", "All", "chosen");
    for r in &runs {
        let show =
            |r: &Result<usize, String>| r.as_ref().map_or_else(|e| format!("ERR {e}"), |n| n.to_string());
        println!("{:<95} {:>5} {:>7}", r.name, show(&r.all), show(&r.chosen));
    }
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| r.all.is_err() || r.chosen.is_err())
        .map(|r| format!("{}: All → {:?}; chosen → {:?}", r.name, r.all, r.chosen))
        .collect();
    println!(
        "{} queries × 2, {} rows with All; village filled in {filled:?}, total {:?}",
        runs.len(),
        runs.iter().filter_map(|r| r.all.as_ref().ok()).sum::<usize>(),
        started.elapsed()
    );
    assert!(failed.is_empty(), "{} of {} queries fail:\n{}", failed.len(), runs.len(), failed.join("\n"));
    assert!(runs.len() > 60, "only {} queries", runs.len());
    gateway.stop().await;
}

/// The first value of the first row a panel's query returns with every variable "All".
fn first_value(db: &InfluxDb1, all: &[Dashboard], uid: &str, title: &str, reference: &str) -> f64 {
    let d = all.iter().find(|d| d.uid == uid).unwrap();
    let panel =
        d.panels().iter().find(|p| p["title"] == title).unwrap_or_else(|| panic!("{uid}: no panel {title}"));
    let target = panel["targets"].as_array().unwrap().iter().find(|t| t["refId"] == reference).unwrap();
    let every =
        d.variables().iter().map(|v| (v["name"].as_str().unwrap().to_owned(), ".*".to_owned())).collect();
    let query = substitute(target["query"].as_str().unwrap(), &every);
    let series = db.query_series(DB, &query).unwrap_or_else(|e| panic!("{query}: {e}"));
    let value =
        series.first().and_then(|s| s.values.first()).and_then(|row| row.get(1)).and_then(Value::as_f64);
    value.unwrap_or_else(|| panic!("{uid} / {title} / {reference}: no value in {series:?}"))
}

/// Runs the failed queries of `runs` again.
fn rerun_failed(db: &InfluxDb1, all: &[Dashboard], runs: &mut [Run]) {
    let every = |d: &Dashboard| -> BTreeMap<String, String> {
        d.variables().iter().map(|v| (v["name"].as_str().unwrap().to_owned(), ".*".to_owned())).collect()
    };
    for run in runs.iter_mut().filter(|r| r.all.is_err() || r.chosen.is_err()) {
        let Some(d) = all.iter().find(|d| run.name.starts_with(&format!("{} / ", d.uid))) else { continue };
        let Some((_, query)) = d.panel_queries().into_iter().find(|(n, _)| *n == run.name) else { continue };
        let values = every(d);
        run.all = check_answer(db, &substitute(&query, &values));
        // The chosen values are every value the variables list, so "All" as a regex of them.
        let chosen: BTreeMap<String, String> = d
            .variables()
            .iter()
            .map(|v| {
                let name = v["name"].as_str().unwrap().to_owned();
                let value = if v["type"] == "query" {
                    any_of(&tag_values(db, &substitute(v["query"].as_str().unwrap(), &values)))
                } else {
                    v["query"].as_str().unwrap_or_default().to_owned()
                };
                (name, value)
            })
            .collect();
        run.chosen = check_answer(db, &substitute(&query, &chosen));
    }
}

/// Choosing a street narrows the communities, choosing a community narrows the grids.
fn check_chaining(db: &InfluxDb1, d: &Dashboard) {
    let query = |name: &str| {
        d.variables().iter().find(|v| v["name"] == name).and_then(|v| v["query"].as_str()).map(str::to_owned)
    };
    let (Some(street), Some(community), Some(grid)) = (query("street"), query("community"), query("grid"))
    else {
        return;
    };
    let every: BTreeMap<String, String> =
        ["street", "community", "grid"].iter().map(|n| ((*n).to_owned(), ".*".to_owned())).collect();
    let streets = tag_values(db, &substitute(&street, &every));
    assert_eq!(streets, ["Fuhai", "Majie"], "{}", d.uid);
    let all_communities = tag_values(db, &substitute(&community, &every));
    let fuhai = BTreeMap::from([("street".to_owned(), regex_escape("Fuhai"))]);
    let communities = tag_values(db, &substitute(&community, &fuhai));
    assert_eq!(communities, ["Dongfeng", "Xinhe"], "{}: of {all_communities:?}", d.uid);
    let all_grids = tag_values(db, &substitute(&grid, &every));
    assert_eq!(all_grids.len(), 4, "{}: {all_grids:?}", d.uid);
    let xinhe = BTreeMap::from([("community".to_owned(), regex_escape("Xinhe"))]);
    assert_eq!(tag_values(db, &substitute(&grid, &xinhe)), ["新河一网格"], "{}", d.uid);
}
