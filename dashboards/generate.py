#!/usr/bin/env python3
"""The firegrid Grafana dashboards, declared as code.

Every panel below is a question a duty officer or an operator asks of the wall screen, the
InfluxQL that answers it, and how the answer is shown. Running this file writes

    dashboards/json/<uid>.json   the five dashboards Grafana provisions (schemaVersion 39)
    dashboards/README.md         between its "panels" markers: every panel's question and query

`python3 dashboards/generate.py --check` writes nothing and exits 1 if a committed file is not
what this file generates; the integration test `tests/it/dashboards.rs` runs it, and also runs
every query below against a real InfluxDB 1.x filled by the gateway's own writer.

Only measurements, tags and fields listed in `gateway/SCHEMA.md` may appear in a query.
Python 3.11, standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The provisioned data source (provisioning/datasources/firegrid.yaml).
DATASOURCE = {"type": "influxdb", "uid": "firegrid-influxdb"}

# One colour per severity, the same in every panel, map and legend.
SEVERITY_COLOURS = {
    "fire": "red",
    "pre_alarm": "orange",
    "water": "blue",
    "communication_loss": "purple",
    "offline": "#8e8e8e",
    "fault": "yellow",
}
SEVERITIES = list(SEVERITY_COLOURS)

# The place filter of every device and case query: the chained street → community → grid
# variables. A variable set to "All" sends `.*`, which also matches series without the tag
# (a community-wide communication loss has no grid), so nothing disappears from "All".
PLACE = '"street" =~ /^$street$/ AND "community" =~ /^$community$/ AND "grid" =~ /^$grid$/'

# Cases raised by devices in test mode are drills: recorded, never counted (SCHEMA.md).
NOT_DRILL = "\"drill\" = 'false'"

# Deadlines behind the thresholds, from alerting/engine/src/config.rs (defaults) and FIELD.md.
FIRE_ACK_S = 60  # a confirmed fire, per level: a desk silent for a minute is not there
PRE_ALARM_ACK_S = 90  # NFPA 72: an operator may verify for up to 90 s
FIRE_HANDLE_S = 15 * 60  # acknowledged fire → disposition
PRE_ALARM_HANDLE_S = 30 * 60  # acknowledged pre-alarm → disposition
STALE_S = 24 * 3600  # ISA-18.2: an alarm active for more than 24 h is stale
DISPLAY_LAG_S = 20  # GB 50440 §3: an alarm is shown at the centre within 20 s


def open_cases(drills: bool = False) -> str:
    """Each case's latest transition. A case is one kind of case in one place (the alarm
    engine keeps one open case per kind and building, or per scope for a communication
    loss), so grouping by place and kind yields one row per case; the row's `stage` is the
    case's stage now, and `feedback` means closed."""
    drill = "" if drills else f" AND {NOT_DRILL}"
    return (
        'SELECT last("case_id") AS "case_id", "stage", "severity", "level", "transition", "drill" '
        f'FROM "case_transition" WHERE $timeFilter{drill} AND {PLACE} '
        'GROUP BY "street", "community", "grid", "building", "case_kind"'
    )


def thresholds(base: str, *steps: tuple[float, str]) -> dict:
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}] + [{"color": c, "value": v} for v, c in steps],
    }


def target(query: str, ref: str = "A", table: bool = False, alias: str | None = None) -> dict:
    t = {
        "refId": ref,
        "datasource": DATASOURCE,
        "query": query,
        "rawQuery": True,
        "resultFormat": "table" if table else "time_series",
    }
    if alias:
        t["alias"] = alias
    return t


def by_name(name: str, *properties: tuple[str, object]) -> dict:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": k, "value": v} for k, v in properties],
    }


def severity_overrides() -> list[dict]:
    return [by_name(s, ("color", {"mode": "fixed", "fixedColor": c})) for s, c in SEVERITY_COLOURS.items()]


def severity_mappings() -> list[dict]:
    """Severity names as text with their colour (tables, maps)."""
    return [
        {
            "type": "value",
            "options": {s: {"color": c, "index": i, "text": s} for i, (s, c) in enumerate(SEVERITY_COLOURS.items())},
        }
    ]


def state_mappings(off: tuple[str, str], on: tuple[str, str]) -> list[dict]:
    """A 0/1 state shown as words in colour."""
    return [
        {
            "type": "value",
            "options": {
                "0": {"color": off[1], "index": 0, "text": off[0]},
                "1": {"color": on[1], "index": 1, "text": on[0]},
            },
        }
    ]


class Panel:
    """One panel: a question, the queries answering it, and its display."""

    def __init__(
        self,
        kind: str,
        title: str,
        question: str,
        why: str,
        queries: list[dict],
        unit: str,
        w: int,
        h: int,
        thresholds: dict | None = None,
        color: dict | None = None,
        overrides: list[dict] | None = None,
        mappings: list[dict] | None = None,
        options: dict | None = None,
        custom: dict | None = None,
        time_from: str | None = None,
        interval: str | None = None,
        transformations: list[dict] | None = None,
        links: list[dict] | None = None,
        no_value: str | None = None,
        decimals: int | None = None,
        minimum: float | None = None,
    ):
        self.kind = kind
        self.title = title
        self.question = question
        self.why = why
        self.queries = queries
        self.w, self.h = w, h
        defaults: dict = {"unit": unit, "thresholds": thresholds or {"mode": "absolute", "steps": [{"color": "green", "value": None}]}}
        if color:
            defaults["color"] = color
        if mappings:
            defaults["mappings"] = mappings
        if custom:
            defaults["custom"] = custom
        if links:
            defaults["links"] = links
        if no_value is not None:
            defaults["noValue"] = no_value
        if decimals is not None:
            defaults["decimals"] = decimals
        if minimum is not None:
            defaults["min"] = minimum
        self.field_config = {"defaults": defaults, "overrides": overrides or []}
        self.options = options or {}
        self.time_from = time_from
        self.interval = interval
        self.transformations = transformations or []

    def to_json(self, pid: int, x: int, y: int) -> dict:
        p = {
            "id": pid,
            "type": self.kind,
            "title": self.title,
            "description": f"{self.question} {self.why}",
            "datasource": DATASOURCE,
            "gridPos": {"x": x, "y": y, "w": self.w, "h": self.h},
            "fieldConfig": self.field_config,
            "options": self.options,
            "targets": self.queries,
        }
        if self.time_from:
            p["timeFrom"] = self.time_from
        if self.interval:
            p["interval"] = self.interval
        if self.transformations:
            p["transformations"] = self.transformations
        return p


class Dashboard:
    """Panels laid out left to right in rows of 24 columns, so none can overlap."""

    def __init__(self, uid: str, title: str, purpose: str, variables: list[dict], time_from: str = "now-24h"):
        self.uid = uid
        self.title = title
        self.purpose = purpose
        self.variables = variables
        self.time_from = time_from
        self.placed: list[tuple[Panel, int, int]] = []
        self.x = self.y = self.row_h = 0

    def add(self, panel: Panel) -> None:
        if self.x + panel.w > 24:
            self.newline()
        self.placed.append((panel, self.x, self.y))
        self.x += panel.w
        self.row_h = max(self.row_h, panel.h)

    def newline(self) -> None:
        self.x, self.y, self.row_h = 0, self.y + self.row_h, 0

    def to_json(self) -> dict:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.purpose,
            "tags": ["firegrid"],
            "editable": False,
            "graphTooltip": 1,
            "refresh": "10s",
            "schemaVersion": 39,
            "version": 1,
            "timezone": "browser",
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "weekStart": "",
            "annotations": {
                "list": [
                    {
                        "builtIn": 1,
                        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                        "enable": True,
                        "hide": True,
                        "iconColor": "rgba(0, 211, 255, 1)",
                        "name": "Annotations & Alerts",
                        "type": "dashboard",
                    }
                ]
            },
            "links": [
                {
                    "title": "Firegrid",
                    "type": "dashboards",
                    "tags": ["firegrid"],
                    "asDropdown": True,
                    "includeVars": True,
                    "keepTime": True,
                }
            ],
            "templating": {"list": self.variables},
            "panels": [p.to_json(i + 1, x, y) for i, (p, x, y) in enumerate(self.placed)],
        }


def query_variable(name: str, label: str, query: str) -> dict:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "sort": 1,
        "hide": 0,
        "skipUrlSync": False,
    }


# The grid hierarchy, chained: a community list narrowed by the street, a grid list by the
# community. SHOW TAG VALUES without FROM looks in every measurement, so a place that has only
# cases (no device data yet) is still listed.
PLACE_VARIABLES = [
    query_variable("street", "Street", 'SHOW TAG VALUES WITH KEY = "street"'),
    query_variable("community", "Community", 'SHOW TAG VALUES WITH KEY = "community" WHERE "street" =~ /^$street$/'),
    query_variable("grid", "Grid", 'SHOW TAG VALUES WITH KEY = "grid" WHERE "community" =~ /^$community$/'),
]

CONSOLE_VARIABLE = {
    "type": "textbox",
    "name": "console_url",
    "label": "Officer console",
    "query": "https://firegrid.example/console",
    "current": {"selected": False, "text": "https://firegrid.example/console", "value": "https://firegrid.example/console"},
    "options": [],
    "hide": 2,
    "skipUrlSync": False,
}

STAT = {
    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    "colorMode": "background",
    "graphMode": "none",
    "justifyMode": "auto",
    "orientation": "auto",
    "textMode": "auto",
    "wideLayout": True,
    "showPercentChange": False,
}
BARGAUGE = {
    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    "orientation": "horizontal",
    "displayMode": "basic",
    "showUnfilled": True,
    "valueMode": "color",
    "namePlacement": "auto",
    "minVizHeight": 16,
    "minVizWidth": 8,
    "maxVizHeight": 300,
    "sizing": "auto",
}
TIMESERIES = {
    "legend": {"displayMode": "table", "placement": "right", "showLegend": True, "calcs": ["lastNotNull", "max"]},
    "tooltip": {"mode": "multi", "sort": "desc"},
}
TABLE = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
STATE_TIMELINE = {
    "showValue": "never",
    "mergeValues": True,
    "alignValue": "left",
    "rowHeight": 0.9,
    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
    "tooltip": {"mode": "single", "sort": "none"},
}


def lines(style: str = "line") -> dict:
    """Time series drawn as lines, with the thresholds drawn as dashed lines."""
    return {
        "drawStyle": style,
        "lineWidth": 1,
        "fillOpacity": 10 if style == "bars" else 0,
        "pointSize": 6,
        "showPoints": "auto",
        "spanNulls": False,
        "axisPlacement": "auto",
        "thresholdsStyle": {"mode": "dashed"},
    }


def fixed(colour: str) -> dict:
    return {"mode": "fixed", "fixedColor": colour}


# ---- 1. Street command overview. ----------------------------------------------------------


def overview() -> Dashboard:
    d = Dashboard(
        "firegrid-overview",
        "Firegrid · Street command overview",
        "The wall screen of the street command centre: where a fire is now, which cases wait for "
        "whom, whether the grids meet their deadlines today, and whether the devices are there.",
        PLACE_VARIABLES,
    )
    open_where = "\"stage\" <> 'feedback'"
    d.add(
        Panel(
            "stat",
            "Confirmed fires now",
            "How many buildings have an open, confirmed fire case?",
            "A fire is confirmed when two detectors, or a detector and a camera, in one building "
            "alarm within 2 minutes. Open means not closed (stage other than feedback); cases "
            "opened in the last 30 days are considered. Drills are left out.",
            [target(f'SELECT count("case_id") AS "fires" FROM ({open_cases()}) WHERE {open_where} AND "severity" = \'fire\'')],
            "short",
            4,
            6,
            thresholds=thresholds("green", (1, "red")),
            options=STAT,
            time_from="30d",
            no_value="0",
        )
    )
    d.add(
        Panel(
            "bargauge",
            "Open cases by stage",
            "Which cases wait for whom: how many are unanswered (warning), acknowledged (response) "
            "or being handled on site (handling)?",
            "Stages of the closed loop 预警 → 响应 → 应案 → 反馈. Any case in warning is waiting for "
            "an acknowledgement and will escalate at its deadline. Cases opened in the last 30 days.",
            [
                target(f'SELECT count("case_id") AS "{stage}" FROM ({open_cases()}) WHERE "stage" = \'{stage}\'', ref, alias=stage)
                for ref, stage in zip("ABC", ("warning", "response", "handling"))
            ],
            "short",
            8,
            6,
            color=fixed("text"),
            overrides=[by_name("warning", ("color", {"mode": "thresholds"}), ("thresholds", thresholds("green", (1, "red"))))],
            options=BARGAUGE,
            time_from="30d",
            no_value="0",
        )
    )
    d.add(
        Panel(
            "bargauge",
            "Open cases by severity",
            "What kind of trouble is open right now?",
            "Open cases (not closed) by severity, in the severity colours used on every firegrid "
            "dashboard. Cases opened in the last 30 days; drills left out.",
            [
                target(f'SELECT count("case_id") AS "{s}" FROM ({open_cases()}) WHERE {open_where} AND "severity" = \'{s}\'', ref, alias=s)
                for ref, s in zip("ABCDEF", SEVERITIES)
            ],
            "short",
            12,
            6,
            color={"mode": "thresholds"},
            overrides=severity_overrides(),
            options=BARGAUGE,
            time_from="30d",
            no_value="0",
        )
    )
    d.newline()
    d.add(
        Panel(
            "stat",
            "Cases opened today",
            "How many alarms came in today, by severity?",
            "Each case opened today, counted once with the severity it opened with (a fire opens "
            "as a pre-alarm until a second device confirms it). Drills left out.",
            [
                target(
                    f'SELECT count("case_id") FROM "case_transition" WHERE $timeFilter AND "transition" = \'opened\' AND {NOT_DRILL} AND {PLACE} GROUP BY "severity"',
                    alias="$tag_severity",
                )
            ],
            "short",
            8,
            5,
            color={"mode": "thresholds"},
            overrides=severity_overrides(),
            options={**STAT, "colorMode": "value", "textMode": "value_and_name"},
            time_from="now/d",
            no_value="0",
        )
    )
    d.add(
        Panel(
            "stat",
            "Fires confirmed today",
            "How many fires were confirmed today?",
            "Confirmations today (two detectors, or a detector and a camera, in one building). "
            "Drills left out.",
            [target(f'SELECT count("case_id") AS "confirmed" FROM "case_transition" WHERE $timeFilter AND "transition" = \'confirmed\' AND {NOT_DRILL} AND {PLACE}')],
            "short",
            4,
            5,
            thresholds=thresholds("green", (1, "red")),
            options=STAT,
            time_from="now/d",
            no_value="0",
        )
    )
    d.add(
        Panel(
            "stat",
            "Deadline compliance today",
            "What share of today's cases met every deadline?",
            "A case misses a deadline when it is not acknowledged in time at its level, or not "
            "disposed in time after acknowledgement: the engine then escalates it, so a case "
            "met every deadline exactly when it has no `escalated` transition. Per case, "
            "since_open_s is 0 on `opened` and positive on `escalated`, so 1 − ceil(max/(max+1)) "
            "is 1 for a case that never escalated and 0 otherwise; the mean over cases is the "
            "share. Green only when every case met every deadline; orange from 90 %.",
            [
                target(
                    'SELECT mean("met") AS "compliance" FROM (SELECT 1 - ceil(max("since_open_s") / (max("since_open_s") + 1)) AS "met" '
                    f'FROM "case_transition" WHERE $timeFilter AND ("transition" = \'opened\' OR "transition" = \'escalated\') AND {NOT_DRILL} AND {PLACE} '
                    'GROUP BY "street", "community", "grid", "building", "case_kind")'
                )
            ],
            "percentunit",
            4,
            5,
            thresholds=thresholds("red", (0.9, "orange"), (1, "green")),
            options=STAT,
            time_from="now/d",
            decimals=1,
        )
    )
    d.add(
        Panel(
            "stat",
            "Devices online",
            "What share of the devices is online?",
            "Devices heard from in the last 7 days (a heartbeat at least every 24 h) minus those "
            "whose latest liveness verdict is offline (N missed heartbeats, or an MQTT last will), "
            "as a share. InfluxQL cannot combine two measurements in one result, so Grafana "
            "divides query B by query A. Green from 99 %, orange from 95 % (targets for a "
            "village; GB 50440 asks that every link be patrolled).",
            [
                target(
                    'SELECT count("boot") AS "reporting" FROM (SELECT last("boot") AS "boot" FROM "device_heartbeat" '
                    f'WHERE $timeFilter AND {PLACE} GROUP BY "device")',
                    "A",
                    table=True,
                ),
                target(
                    'SELECT sum("offline") AS "offline" FROM (SELECT 1 - last("online") AS "offline" FROM "device_status" '
                    f'WHERE $timeFilter AND {PLACE} GROUP BY "device")',
                    "B",
                    table=True,
                ),
            ],
            "percentunit",
            4,
            5,
            thresholds=thresholds("red", (0.95, "orange"), (0.99, "green")),
            options={**STAT, "reduceOptions": {"calcs": ["lastNotNull"], "fields": "/^online$/", "values": False}},
            time_from="7d",
            decimals=1,
            transformations=[
                {"id": "joinByField", "options": {"byField": "Time", "mode": "outer"}},
                {
                    "id": "calculateField",
                    "options": {"mode": "binary", "binary": {"left": "offline", "operator": "/", "right": "reporting"}, "alias": "offline_share"},
                },
                {
                    "id": "calculateField",
                    "options": {"mode": "binary", "binary": {"left": "1", "operator": "-", "right": "offline_share"}, "alias": "online"},
                },
            ],
        )
    )
    d.add(
        Panel(
            "bargauge",
            "Grids that missed a deadline today",
            "Which grids missed their deadline today?",
            "Cases per grid that escalated today because a deadline passed (acknowledgement at "
            "60 s per level for a fire, 90 s for a pre-alarm by default, or the handling "
            "deadline). Counted once per case however often it escalated. Drills left out.",
            [
                target(
                    f'SELECT count(distinct("case_id")) FROM "case_transition" WHERE $timeFilter AND "transition" = \'escalated\' AND {NOT_DRILL} AND {PLACE} GROUP BY "grid"',
                    alias="$tag_grid",
                )
            ],
            "short",
            4,
            5,
            thresholds=thresholds("green", (1, "red")),
            options=BARGAUGE,
            time_from="now/d",
        )
    )
    d.newline()
    d.add(
        Panel(
            "geomap",
            "Buildings with open cases",
            "Where are the open cases?",
            "One marker per open case at its building, coloured by severity. InfluxDB holds no "
            "coordinates: the map looks the building id up in the gazetteer that "
            "dashboards/gazetteer.py makes from the device registry (lat/lon columns); see "
            "dashboards/README.md. Cases of a whole grid or community (communication loss) have "
            "no building and are not on the map. Cases opened in the last 30 days.",
            [
                target(
                    f'SELECT "case_id", "severity", "stage", "level" FROM ({open_cases()}) WHERE {open_where} GROUP BY "building", "grid"',
                    table=True,
                )
            ],
            "short",
            16,
            14,
            mappings=severity_mappings(),
            options={
                "view": {"id": "fit", "lat": 25.03, "lon": 102.66, "zoom": 15, "allLayers": True},
                "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True, "showScale": True},
                "basemap": {"type": "default", "name": "Basemap", "config": {}},
                "layers": [
                    {
                        "type": "markers",
                        "name": "Open cases",
                        "location": {"mode": "lookup", "lookup": "building", "gazetteer": "public/gazetteer/firegrid-buildings.json"},
                        "config": {
                            "showLegend": True,
                            "style": {
                                "color": {"field": "severity", "fixed": "red"},
                                "size": {"fixed": 9, "min": 6, "max": 16},
                                "opacity": 0.8,
                                "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                                "text": {"mode": "field", "field": "building", "fixed": ""},
                                "textConfig": {"fontSize": 11, "offsetY": -14, "textAlign": "center", "textBaseline": "middle"},
                            },
                        },
                        "tooltip": True,
                    }
                ],
                "tooltip": {"mode": "details"},
            },
            time_from="30d",
        )
    )
    d.add(
        Panel(
            "table",
            "Latest case transitions",
            "What just happened?",
            "The 25 newest transitions of any case: opened, confirmed, escalated, acknowledged, "
            "dispatched, disposed, closed ... with the officer who caused it.",
            [
                target(
                    'SELECT "case_id", "transition", "severity", "stage", "level", "building", "officer" FROM "case_transition" '
                    f'WHERE $timeFilter AND {PLACE} ORDER BY time DESC LIMIT 25',
                    table=True,
                )
            ],
            "short",
            8,
            14,
            overrides=[by_name("severity", ("mappings", severity_mappings()), ("custom.cellOptions", {"type": "color-text"}))],
            options=TABLE,
        )
    )
    return d


# ---- 2. Cases and response. ---------------------------------------------------------------


def response_times(group: str) -> list[dict]:
    """p50 and p90 of the time from opening to acknowledgement, dispatch and closure."""
    out = []
    for i, (transition, name) in enumerate((("acknowledged", "ack"), ("dispatched", "dispatch"), ("closed", "close"))):
        out.append(
            target(
                f'SELECT percentile("since_open_s", 50) AS "{name}_p50", percentile("since_open_s", 90) AS "{name}_p90" '
                f'FROM "case_transition" WHERE $timeFilter AND "transition" = \'{transition}\' AND {NOT_DRILL} AND {PLACE} GROUP BY "{group}"',
                chr(ord("A") + i),
                table=True,
            )
        )
    return out


def response_overrides() -> list[dict]:
    ack = thresholds("green", (FIRE_ACK_S, "orange"), (PRE_ALARM_ACK_S, "red"))
    dispatch = thresholds("green", (FIRE_HANDLE_S, "orange"), (PRE_ALARM_HANDLE_S, "red"))
    close = thresholds("green", (STALE_S, "red"))
    out = []
    for name, t in (("ack", ack), ("dispatch", dispatch), ("close", close)):
        for p in ("p50", "p90"):
            out.append(by_name(f"{name}_{p}", ("thresholds", t), ("custom.cellOptions", {"type": "color-text"})))
    return out


def cases() -> Dashboard:
    d = Dashboard(
        "firegrid-cases",
        "Firegrid · Cases and response",
        "How the closed loop 预警 → 响应 → 应案 → 反馈 performs: response times per grid and "
        "community, deadlines missed, escalations, alarm floods, stale cases and every open case.",
        PLACE_VARIABLES + [CONSOLE_VARIABLE],
        time_from="now-7d",
    )
    why_times = (
        "Seconds from opening to the first acknowledgement, dispatch and closure (since_open_s of "
        "those transitions), median and 90th percentile; drills left out. Acknowledgement turns "
        f"orange past {FIRE_ACK_S} s (a fire's deadline per level) and red past {PRE_ALARM_ACK_S} s "
        f"(a pre-alarm's); dispatch orange past {FIRE_HANDLE_S // 60} min and red past "
        f"{PRE_ALARM_HANDLE_S // 60} min (handling deadlines); closure red past 24 h."
    )
    merge = [{"id": "merge", "options": {}}]
    d.add(
        Panel(
            "table",
            "Response times per grid",
            "How fast does each grid acknowledge, dispatch and close?",
            why_times,
            response_times("grid"),
            "s",
            12,
            8,
            overrides=response_overrides(),
            options=TABLE,
            transformations=merge,
        )
    )
    d.add(
        Panel(
            "table",
            "Response times per community",
            "How fast does each community acknowledge, dispatch and close?",
            why_times,
            response_times("community"),
            "s",
            12,
            8,
            overrides=response_overrides(),
            options=TABLE,
            transformations=merge,
        )
    )
    d.newline()
    d.add(
        Panel(
            "timeseries",
            "Time to acknowledge, each case",
            "Was each case acknowledged before its deadline?",
            f"One point per acknowledgement, at the time it came, by severity. Dashed lines: "
            f"{FIRE_ACK_S} s, the confirmed-fire deadline per level, and {PRE_ALARM_ACK_S} s, the "
            "pre-alarm deadline (NFPA 72's verification limit). Drills left out.",
            [
                target(
                    f'SELECT "since_open_s" FROM "case_transition" WHERE $timeFilter AND "transition" = \'acknowledged\' AND {NOT_DRILL} AND {PLACE} GROUP BY "severity"',
                    alias="$tag_severity",
                )
            ],
            "s",
            12,
            8,
            thresholds=thresholds("green", (FIRE_ACK_S, "orange"), (PRE_ALARM_ACK_S, "red")),
            color={"mode": "palette-classic"},
            custom={**lines("points"), "pointSize": 8},
            overrides=severity_overrides(),
            options=TIMESERIES,
            minimum=0,
        )
    )
    d.add(
        Panel(
            "table",
            "Deadline compliance per grid",
            "Which grids met every deadline, and which missed some?",
            "Share of each grid's cases in the time range that never escalated, i.e. were "
            "acknowledged and disposed within every deadline (see the overview's compliance "
            "panel for how it is computed). Drills left out.",
            [
                target(
                    'SELECT mean("met") AS "compliance", count("met") AS "cases" FROM (SELECT 1 - ceil(max("since_open_s") / (max("since_open_s") + 1)) AS "met" '
                    f'FROM "case_transition" WHERE $timeFilter AND ("transition" = \'opened\' OR "transition" = \'escalated\') AND {NOT_DRILL} AND {PLACE} '
                    'GROUP BY "street", "community", "grid", "building", "case_kind") GROUP BY "grid"',
                    table=True,
                )
            ],
            "percentunit",
            6,
            8,
            overrides=[
                by_name("compliance", ("thresholds", thresholds("red", (0.9, "orange"), (1, "green"))), ("custom.cellOptions", {"type": "color-background"})),
                by_name("cases", ("unit", "short")),
            ],
            options=TABLE,
            decimals=1,
        )
    )
    d.add(
        Panel(
            "bargauge",
            "Escalations by level reached",
            "How far up the hierarchy did unanswered cases climb?",
            "Escalations in the time range by the level they reached (grid → community → street "
            "→ district). Each is a deadline that passed without an answer. Drills left out.",
            [
                target(
                    f'SELECT count("case_id") FROM "case_transition" WHERE $timeFilter AND "transition" = \'escalated\' AND {NOT_DRILL} AND {PLACE} GROUP BY "level"',
                    alias="$tag_level",
                )
            ],
            "short",
            6,
            8,
            thresholds=thresholds("orange", (1, "red")),
            options=BARGAUGE,
        )
    )
    d.newline()
    desks = '"desk" =~ /^(grid:$grid|community:$community|street:$street|district:.*)$/'
    d.add(
        Panel(
            "state-timeline",
            "Alarm floods per desk",
            "Which desks were flooded with alarms, and when?",
            "ISA-18.2 / IEC 62682: more than 10 new alarms in 10 minutes for one operator is a "
            "flood, when alarms stop being handled one by one. Red while a desk floods.",
            [
                target(
                    f'SELECT last("flooding") FROM "alarm_flood" WHERE $timeFilter AND {desks} GROUP BY time($__interval), "desk" fill(previous)',
                    alias="$tag_desk",
                )
            ],
            "none",
            16,
            7,
            mappings=state_mappings(("normal", "green"), ("flood", "red")),
            color=fixed("green"),
            options=STATE_TIMELINE,
            interval="1m",
        )
    )
    d.add(
        Panel(
            "table",
            "Flood episodes",
            "How bad was each flood?",
            "Every flood that began in the time range, with the new alarms the desk had in the "
            "flood window when it began (ISA-18.2 threshold: 10 per 10 minutes).",
            [target(f'SELECT "pages" FROM "alarm_flood" WHERE $timeFilter AND "flooding" = 1 AND {desks} GROUP BY "desk", "level"', table=True)],
            "short",
            8,
            7,
            thresholds=thresholds("orange", (20, "red")),
            options=TABLE,
        )
    )
    d.newline()
    d.add(
        Panel(
            "timeseries",
            "Cases opened by severity",
            "When did the cases come in?",
            "New cases per interval, stacked by the severity they opened with. Drills left out.",
            [
                target(
                    f'SELECT count("case_id") FROM "case_transition" WHERE $timeFilter AND "transition" = \'opened\' AND {NOT_DRILL} AND {PLACE} GROUP BY time($__interval), "severity" fill(none)',
                    alias="$tag_severity",
                )
            ],
            "short",
            16,
            8,
            color={"mode": "palette-classic"},
            custom={**lines("bars"), "stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 80},
            overrides=severity_overrides(),
            options=TIMESERIES,
            interval="1m",
            minimum=0,
        )
    )
    d.add(
        Panel(
            "table",
            "Stale alarms",
            "Which alarms have been active for more than 24 hours?",
            "ISA-18.2 calls an alarm active for more than 24 h stale: it is either a fault the "
            "detector cannot clear or a case nobody closes. One row per stale alarm, with how "
            "long its case had been open when it went stale.",
            [
                target(
                    f'SELECT "case_id", "since_open_s" FROM "case_transition" WHERE $timeFilter AND "transition" = \'stale\' AND {PLACE} GROUP BY "building", "device", "severity"',
                    table=True,
                )
            ],
            "s",
            8,
            8,
            thresholds=thresholds("orange", (STALE_S, "red")),
            overrides=[by_name("case_id", ("unit", "none")), by_name("severity", ("mappings", severity_mappings()))],
            options=TABLE,
        )
    )
    d.newline()
    d.add(
        Panel(
            "table",
            "Open cases",
            "Which cases are open, where, at which stage and level?",
            "Every case not yet closed (drills included, marked), newest activity first; the "
            "case number links to the officer console (set the hidden console_url variable). "
            "Cases opened in the last 30 days.",
            [
                target(
                    f'SELECT "case_id", "severity", "stage", "level", "transition", "drill" FROM ({open_cases(drills=True)}) '
                    "WHERE \"stage\" <> 'feedback' GROUP BY \"street\", \"community\", \"grid\", \"building\", \"case_kind\"",
                    table=True,
                )
            ],
            "none",
            24,
            10,
            overrides=[
                by_name(
                    "case_id",
                    ("links", [{"title": "Open case ${__value.raw}", "url": "${console_url}/cases/${__value.raw}", "targetBlank": True}]),
                ),
                by_name("severity", ("mappings", severity_mappings()), ("custom.cellOptions", {"type": "color-background"})),
                by_name("Time", ("displayName", "last activity"), ("unit", "dateTimeFromNow")),
            ],
            options={**TABLE, "sortBy": [{"displayName": "last activity", "desc": True}]},
            time_from="30d",
        )
    )
    return d


# ---- 3. Device health. ----------------------------------------------------------------------


def devices() -> Dashboard:
    d = Dashboard(
        "firegrid-devices",
        "Firegrid · Device health",
        "Which detectors, cameras and sensors are offline, low on battery, dirty or crying wolf, "
        "and which whole buildings or grids went silent together.",
        PLACE_VARIABLES,
        time_from="now-7d",
    )
    offline_colour = SEVERITY_COLOURS["offline"]
    d.add(
        Panel(
            "stat",
            "Devices offline now",
            "How many devices are offline?",
            "Devices whose latest liveness verdict in the last 7 days is offline: silent for 3 "
            "heartbeat intervals (plus grace), or their MQTT last will arrived. Devices inside a "
            "scope that lost communication together are counted here only when their own "
            "connection dropped; see the next panel for whole scopes.",
            [target(f'SELECT count("online") AS "offline" FROM (SELECT last("online") AS "online" FROM "device_status" WHERE $timeFilter AND {PLACE} GROUP BY "device") WHERE "online" = 0')],
            "short",
            4,
            5,
            thresholds=thresholds("green", (1, offline_colour)),
            options=STAT,
            time_from="7d",
            no_value="0",
        )
    )
    d.add(
        Panel(
            "stat",
            "Scopes without communication",
            "How many buildings, grids or communities went silent together?",
            "Scopes whose latest state in the last 7 days is lost: at least half of their "
            "devices (and at least 5) silent at once, typically a dead NB-IoT cell or a cut "
            "feeder. One case per scope instead of hundreds of offline pages.",
            [target('SELECT count("lost") AS "lost" FROM (SELECT last("lost") AS "lost" FROM "communication_loss" WHERE $timeFilter GROUP BY "level", "scope") WHERE "lost" = 1')],
            "short",
            4,
            5,
            thresholds=thresholds("green", (1, SEVERITY_COLOURS["communication_loss"])),
            options=STAT,
            time_from="7d",
            no_value="0",
        )
    )
    d.add(
        Panel(
            "table",
            "Offline devices",
            "Which devices are offline, and how long had they been silent?",
            "Each device whose latest liveness verdict is offline, with how long it had been "
            "silent when it was declared offline (empty when its MQTT last will reported it).",
            [
                target(
                    f'SELECT "online", "silent_ms" FROM (SELECT last("online") AS "online", "silent_ms" FROM "device_status" WHERE $timeFilter AND {PLACE} '
                    'GROUP BY "device", "device_kind", "building", "grid") WHERE "online" = 0 GROUP BY "device", "device_kind", "building", "grid"',
                    table=True,
                )
            ],
            "ms",
            8,
            8,
            overrides=[by_name("online", ("unit", "none"), ("mappings", state_mappings(("offline", offline_colour), ("online", "green"))))],
            options=TABLE,
            time_from="7d",
        )
    )
    d.add(
        Panel(
            "table",
            "Scopes that lost communication",
            "Which buildings, grids or communities are silent now?",
            "Each scope whose latest state is lost, with the devices silent and the devices in "
            "the scope when it was lost. The scope's own case carries the place.",
            [
                target(
                    'SELECT "lost", "offline", "total" FROM (SELECT last("lost") AS "lost", "offline", "total" FROM "communication_loss" WHERE $timeFilter GROUP BY "level", "scope") '
                    'WHERE "lost" = 1 GROUP BY "level", "scope"',
                    table=True,
                )
            ],
            "short",
            8,
            8,
            overrides=[by_name("lost", ("mappings", state_mappings(("restored", "green"), ("lost", SEVERITY_COLOURS["communication_loss"]))))],
            options=TABLE,
            time_from="7d",
        )
    )
    d.newline()
    battery = thresholds("dark-red", (2600, "red"), (3100, "orange"), (3300, "green"))
    why_battery = (
        "Battery voltage under load from each device's latest heartbeat (detectors report it "
        "daily). Below 3,300 mV a Li-SOCl₂ cell has left its plateau (orange); at 3,100 mV the "
        "detector raises its low-battery fault (red, firmware/detector config.rs); below "
        "2,600 mV the sounder can no longer reach 85 dB(A) (dark red)."
    )
    d.add(
        Panel(
            "histogram",
            "Battery under load",
            "How are the detectors' batteries distributed?",
            why_battery,
            [target(f'SELECT last("battery_mv") AS "battery_mv" FROM "device_heartbeat" WHERE $timeFilter AND {PLACE} GROUP BY "device"', table=True)],
            "mvolt",
            8,
            8,
            thresholds=battery,
            color={"mode": "thresholds"},
            custom={"fillOpacity": 80, "lineWidth": 1},
            options={"bucketCount": 20, "combine": True, "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"}},
            time_from="7d",
        )
    )
    d.add(
        Panel(
            "table",
            "Lowest batteries",
            "Which detectors need a battery first?",
            why_battery + " The ten lowest, from each device's latest heartbeat.",
            [
                target(
                    'SELECT bottom("battery_mv", "device", "building", 10) AS "battery_mv" FROM '
                    f'(SELECT last("battery_mv") AS "battery_mv" FROM "device_heartbeat" WHERE $timeFilter AND {PLACE} GROUP BY "device", "building")',
                    table=True,
                )
            ],
            "mvolt",
            8,
            8,
            thresholds=battery,
            overrides=[by_name("battery_mv", ("custom.cellOptions", {"type": "color-background"}))],
            options={**TABLE, "sortBy": [{"displayName": "battery_mv", "desc": False}]},
            time_from="7d",
        )
    )
    d.add(
        Panel(
            "table",
            "Highest drift compensation",
            "Which detectors are getting dirty?",
            "Drift compensation in use, as a share of the allowed headroom, from each device's "
            "latest heartbeat; the ten highest. The detector raises its contamination fault at "
            "80 % and clears it below 60 % (GB 20517-2025 §5.21; firmware/detector detect).",
            [
                target(
                    'SELECT top("drift_pct", "device", "building", 10) AS "drift_pct" FROM '
                    f'(SELECT last("drift_pct") AS "drift_pct" FROM "device_heartbeat" WHERE $timeFilter AND {PLACE} GROUP BY "device", "building")',
                    table=True,
                )
            ],
            "percent",
            8,
            8,
            thresholds=thresholds("green", (60, "orange"), (80, "red")),
            overrides=[by_name("drift_pct", ("custom.cellOptions", {"type": "color-background"}))],
            options={**TABLE, "sortBy": [{"displayName": "drift_pct", "desc": True}]},
            time_from="7d",
        )
    )
    d.newline()
    d.add(
        Panel(
            "bargauge",
            "Active faults by kind",
            "Which device faults are raised now?",
            "Devices whose latest report of each fault kind (low battery, contamination, tamper, "
            "sensor fault, end of life) says raised. Each is a maintenance work order for the "
            "next working day.",
            [
                target(
                    f'SELECT count("active") FROM (SELECT last("active") AS "active" FROM "device_fault" WHERE $timeFilter AND {PLACE} GROUP BY "device", "fault") '
                    'WHERE "active" = 1 GROUP BY "fault"',
                    alias="$tag_fault",
                )
            ],
            "short",
            8,
            7,
            color=fixed(SEVERITY_COLOURS["fault"]),
            options=BARGAUGE,
            time_from="30d",
        )
    )
    d.add(
        Panel(
            "table",
            "Alarm bad actors",
            "Which detectors alarm most often?",
            "The ten detectors with the most alarm reports in the time range: the ISA-18.2 "
            "\"bad actor\" list. A detector near a kitchen or a bathroom door belongs here "
            "before its neighbours stop taking it seriously.",
            [
                target(
                    'SELECT top("alarms", "device", "building", 10) AS "alarms" FROM '
                    f'(SELECT count("level") AS "alarms" FROM "detector_state" WHERE $timeFilter AND "state" = \'alarm\' AND {PLACE} GROUP BY "device", "building")',
                    table=True,
                )
            ],
            "short",
            8,
            7,
            thresholds=thresholds("green", (3, "orange"), (10, "red")),
            overrides=[by_name("alarms", ("custom.cellOptions", {"type": "color-text"}))],
            options={**TABLE, "sortBy": [{"displayName": "alarms", "desc": True}]},
        )
    )
    d.add(
        Panel(
            "table",
            "Chattering devices",
            "Which devices chatter?",
            "Devices the alarm engine marked chattering: 3 or more activations within a minute "
            "(ISA-18.2 practice). A chattering device pages once per deadline instead of on "
            "every activation, so it must be fixed, not just acknowledged.",
            [
                target(
                    f'SELECT count("case_id") AS "episodes" FROM "case_transition" WHERE $timeFilter AND "transition" = \'chattering\' AND {PLACE} GROUP BY "device", "building"',
                    table=True,
                )
            ],
            "short",
            8,
            7,
            thresholds=thresholds("orange", (3, "red")),
            options=TABLE,
        )
    )
    d.newline()
    d.add(
        Panel(
            "table",
            "False alarms per building",
            "Which buildings cry wolf, and why?",
            "Cases disposed as false alarms in the last 30 days, per building and cause "
            "(cooking, steam, dust, smoking, insects, device fault, malicious, other). Drills "
            "left out.",
            [
                target(
                    f'SELECT count("case_id") AS "false_alarms" FROM "case_transition" WHERE $timeFilter AND "transition" = \'disposed\' AND "disposition" = \'false_alarm\' AND {NOT_DRILL} AND {PLACE} '
                    'GROUP BY "building", "grid", "cause"',
                    table=True,
                )
            ],
            "short",
            8,
            8,
            thresholds=thresholds("green", (2, "orange"), (5, "red")),
            overrides=[by_name("false_alarms", ("custom.cellOptions", {"type": "color-text"}))],
            options={**TABLE, "sortBy": [{"displayName": "false_alarms", "desc": True}]},
            time_from="30d",
        )
    )
    d.add(
        Panel(
            "table",
            "Camera channels not online",
            "Which camera channels show no picture?",
            "Channels whose latest health report is not online (video loss, tampered, offline). "
            "A fire cannot be verified on camera there.",
            [
                target(
                    'SELECT "status" FROM (SELECT last("online") AS "online", "status" FROM "camera_health" '
                    f'WHERE $timeFilter AND {PLACE} GROUP BY "device", "channel", "building") WHERE "online" = 0 GROUP BY "device", "channel", "building"',
                    table=True,
                )
            ],
            "none",
            8,
            8,
            options=TABLE,
            time_from="7d",
        )
    )
    d.add(
        Panel(
            "table",
            "Heartbeat age",
            "When did each device last report?",
            "Each device's latest heartbeat, oldest first, with signal and firmware. Detectors "
            "report every 24 h by default and are offline after 3 missed heartbeats; a device "
            "near the bottom of this list is the next one to go offline. Signal (RSRP) below "
            "−105 dBm is orange and below −115 dBm red: where NB-IoT cells commonly switch to "
            "coverage-enhancement levels that cost battery.",
            [
                target(
                    'SELECT last("uptime_s") AS "uptime_s", "signal_dbm", "firmware" FROM "device_heartbeat" '
                    f'WHERE $timeFilter AND {PLACE} GROUP BY "device", "building"',
                    table=True,
                )
            ],
            "none",
            8,
            8,
            overrides=[
                by_name("Time", ("displayName", "last heartbeat"), ("unit", "dateTimeFromNow")),
                by_name("uptime_s", ("unit", "s")),
                by_name(
                    "signal_dbm",
                    ("unit", "dBm"),
                    ("thresholds", thresholds("red", (-115, "orange"), (-105, "green"))),
                    ("custom.cellOptions", {"type": "color-text"}),
                ),
            ],
            options={**TABLE, "sortBy": [{"displayName": "last heartbeat", "desc": False}]},
            time_from="7d",
        )
    )
    return d


# ---- 4. Water and facilities. -------------------------------------------------------------

# A sprinkler at the hydraulically most remote point needs at least 0.05 MPa (GB 50084-2017
# §5.0.2); the gateway's example Modbus configuration raises low pressure at 0.15 MPa.
PRESSURE_MIN_MPA = 0.05
PRESSURE_LOW_MPA = 0.15
# Tank levels differ per tank; 1 m is a placeholder for the lines, to be set to the `low` of
# the tanks' Modbus points.
LEVEL_LOW_M = 1.0


def water() -> Dashboard:
    d = Dashboard(
        "firegrid-water",
        "Firegrid · Water and facilities",
        "Whether the sprinklers and hydrants would have water: pipe pressure and tank level per "
        "building, and the low-pressure and low-level conditions the gateway raised.",
        PLACE_VARIABLES
        + [query_variable("building", "Building", 'SHOW TAG VALUES FROM "water" WITH KEY = "building" WHERE "grid" =~ /^$grid$/')],
    )
    where = f'$timeFilter AND {PLACE} AND "building" =~ /^$building$/'
    pressure = thresholds("red", (PRESSURE_MIN_MPA, "orange"), (PRESSURE_LOW_MPA, "green"))
    why_pressure = (
        f"Dashed lines: {PRESSURE_MIN_MPA} MPa, the least working pressure of the most remote "
        f"sprinkler (GB 50084-2017), and {PRESSURE_LOW_MPA} MPa, where the example Modbus "
        "configuration raises low pressure; set them to your points' `low`."
    )
    why_level = (
        f"Dashed line: {LEVEL_LOW_M} m, a placeholder for the tank's low level (the `low` of its "
        "Modbus point); set it per site."
    )
    d.add(
        Panel(
            "timeseries",
            "Sprinkler pipe pressure",
            "Would the sprinklers get enough pressure?",
            "Pipe pressure per building and sensor (MQTT sensors and polled Modbus sensors). " + why_pressure,
            [target(f'SELECT mean("pressure_mpa") FROM "water" WHERE {where} GROUP BY time($__interval), "building", "device" fill(none)', alias="$tag_building $tag_device")],
            "suffix: MPa",
            12,
            9,
            thresholds=pressure,
            color={"mode": "palette-classic"},
            custom=lines(),
            options=TIMESERIES,
            interval="10s",
            minimum=0,
            decimals=2,
        )
    )
    d.add(
        Panel(
            "timeseries",
            "Tank level",
            "Is there water in the tanks?",
            "Tank level per building and sensor. " + why_level,
            [target(f'SELECT mean("level_m") FROM "water" WHERE {where} GROUP BY time($__interval), "building", "device" fill(none)', alias="$tag_building $tag_device")],
            "lengthm",
            12,
            9,
            thresholds=thresholds("red", (LEVEL_LOW_M, "green")),
            color={"mode": "palette-classic"},
            custom=lines(),
            options=TIMESERIES,
            interval="10s",
            minimum=0,
            decimals=2,
        )
    )
    d.newline()
    d.add(
        Panel(
            "bargauge",
            "Latest pressure per building",
            "Which building has the lowest pressure now?",
            "Each building's latest pipe pressure reading. " + why_pressure,
            [target(f'SELECT last("pressure_mpa") FROM "water" WHERE {where} GROUP BY "building"', alias="$tag_building")],
            "suffix: MPa",
            8,
            8,
            thresholds=pressure,
            color={"mode": "thresholds"},
            options=BARGAUGE,
            decimals=2,
            minimum=0,
        )
    )
    d.add(
        Panel(
            "bargauge",
            "Latest tank level per building",
            "Which building's tank is lowest now?",
            "Each building's latest tank level reading. " + why_level,
            [target(f'SELECT last("level_m") FROM "water" WHERE {where} GROUP BY "building"', alias="$tag_building")],
            "lengthm",
            8,
            8,
            thresholds=thresholds("red", (LEVEL_LOW_M, "green")),
            color={"mode": "thresholds"},
            options=BARGAUGE,
            decimals=2,
            minimum=0,
        )
    )
    d.add(
        Panel(
            "table",
            "Water conditions raised now",
            "Which sensors report low pressure, low level or a fault now?",
            "Conditions the gateway raised from polled sensors and not yet cleared, with the "
            "value that raised them (empty when the sensor stopped answering). Each opened a "
            "water case (blue) for the grid.",
            [
                target(
                    f'SELECT "active", "value" FROM (SELECT last("active") AS "active", "value" FROM "water_condition" WHERE {where} '
                    'GROUP BY "building", "device", "condition") WHERE "active" = 1 GROUP BY "building", "device", "condition"',
                    table=True,
                )
            ],
            "none",
            8,
            8,
            overrides=[by_name("active", ("mappings", state_mappings(("cleared", "green"), ("raised", SEVERITY_COLOURS["water"]))))],
            options=TABLE,
            time_from="30d",
        )
    )
    d.newline()
    d.add(
        Panel(
            "state-timeline",
            "Water conditions over time",
            "When was each building short of water?",
            "Low pressure, low level and sensor fault per building and sensor: blue while raised.",
            [
                target(
                    f'SELECT last("active") FROM "water_condition" WHERE {where} GROUP BY time($__interval), "building", "device", "condition" fill(previous)',
                    alias="$tag_building $tag_device $tag_condition",
                )
            ],
            "none",
            24,
            7,
            mappings=state_mappings(("normal", "green"), ("raised", SEVERITY_COLOURS["water"])),
            color=fixed("green"),
            options=STATE_TIMELINE,
            interval="10s",
        )
    )
    return d


# ---- 5. Gateway health. -----------------------------------------------------------------------


def gateway() -> Dashboard:
    variables = [
        query_variable("gateway", "Gateway", 'SHOW TAG VALUES FROM "gateway_health" WITH KEY = "gateway"'),
        query_variable("destination", "Destination", 'SHOW TAG VALUES FROM "gateway_destination" WITH KEY = "destination" WHERE "gateway" =~ /^$gateway$/'),
    ]
    d = Dashboard(
        "firegrid-gateway",
        "Firegrid · Gateway health",
        "Whether the edge gateway itself is well: MQTT sessions, what it accepts and rejects, its "
        "store-and-forward spool, and every database destination. The gateway writes these "
        "series every 10 s; counters are totals since it started, shown as rates.",
        variables,
        time_from="now-6h",
    )
    gw = '"gateway" =~ /^$gateway$/'
    dest = f'{gw} AND "destination" =~ /^$destination$/'
    d.add(
        Panel(
            "stat",
            "MQTT sessions",
            "Is the gateway connected to the broker?",
            "1 when both MQTT sessions (alarm and telemetry) are connected, from the latest "
            "health report. Disconnected means alarms queue at the broker.",
            [target(f'SELECT last("mqtt_connected") FROM "gateway_health" WHERE $timeFilter AND {gw} GROUP BY "gateway"', alias="$tag_gateway")],
            "none",
            6,
            6,
            mappings=state_mappings(("disconnected", "red"), ("connected", "green")),
            thresholds=thresholds("red", (1, "green")),
            options=STAT,
            interval="10s",
        )
    )
    d.add(
        Panel(
            "state-timeline",
            "MQTT connection",
            "When was the gateway disconnected from the broker?",
            "Red for every interval in which a health report said a session was down.",
            [target(f'SELECT min("mqtt_connected") FROM "gateway_health" WHERE $timeFilter AND {gw} GROUP BY time($__interval), "gateway" fill(null)', alias="$tag_gateway")],
            "none",
            12,
            6,
            mappings=state_mappings(("disconnected", "red"), ("connected", "green")),
            color=fixed("green"),
            options=STATE_TIMELINE,
            interval="10s",
        )
    )
    d.add(
        Panel(
            "stat",
            "Unknown devices",
            "Are devices talking that the registry does not know?",
            "Distinct devices missing from the registry: their messages are accepted and stored "
            "but nobody is paged for them until they are registered (see /api/unknown-devices).",
            [target(f'SELECT last("unknown_devices") FROM "gateway_health" WHERE $timeFilter AND {gw} GROUP BY "gateway"', alias="$tag_gateway")],
            "short",
            6,
            6,
            thresholds=thresholds("green", (1, "orange")),
            options=STAT,
            interval="10s",
        )
    )
    d.newline()
    d.add(
        Panel(
            "timeseries",
            "Messages accepted per second by kind",
            "What is the gateway taking in?",
            "Accepted device messages per second by kind (heartbeat, state, fault, camera, water ...).",
            [
                target(
                    f'SELECT non_negative_derivative(max("count"), 1s) FROM "gateway_messages" WHERE $timeFilter AND {gw} AND "outcome" = \'accepted\' GROUP BY time($__interval), "kind" fill(none)',
                    alias="$tag_kind",
                )
            ],
            "suffix: msg/s",
            12,
            8,
            color={"mode": "palette-classic"},
            custom=lines(),
            options=TIMESERIES,
            interval="10s",
            minimum=0,
        )
    )
    d.add(
        Panel(
            "timeseries",
            "Messages rejected per second by reason",
            "What is the gateway refusing, and why?",
            "Rejected messages per second by reason (malformed, topic and payload disagree, out "
            "of range, replayed, rate limited, spool full ...; firmware/protocol/README.md), and "
            "duplicates acknowledged again but not stored. Any steady rejection is a device or "
            "firmware to look at.",
            [
                target(
                    f'SELECT non_negative_derivative(max("count"), 1s) FROM "gateway_messages" WHERE $timeFilter AND {gw} AND "outcome" = \'rejected\' GROUP BY time($__interval), "reason" fill(none)',
                    "A",
                    alias="$tag_reason",
                ),
                target(
                    f'SELECT non_negative_derivative(max("duplicates"), 1s) AS "duplicates" FROM "gateway_health" WHERE $timeFilter AND {gw} GROUP BY time($__interval) fill(none)',
                    "B",
                    alias="duplicate",
                ),
            ],
            "suffix: msg/s",
            12,
            8,
            color={"mode": "palette-classic"},
            custom=lines(),
            options=TIMESERIES,
            interval="10s",
            minimum=0,
        )
    )
    d.newline()
    d.add(
        Panel(
            "timeseries",
            "Spool size",
            "How much is waiting in the store-and-forward spool?",
            "Bytes in the durable spool. It grows while a database is unreachable and shrinks as "
            "destinations catch up; when full, the oldest telemetry is shed (never alarms).",
            [target(f'SELECT max("spool_bytes") FROM "gateway_health" WHERE $timeFilter AND {gw} GROUP BY time($__interval), "gateway" fill(none)', alias="$tag_gateway")],
            "bytes",
            8,
            8,
            color={"mode": "palette-classic"},
            custom=lines(),
            options=TIMESERIES,
            interval="10s",
            minimum=0,
        )
    )
    d.add(
        Panel(
            "timeseries",
            "Telemetry shed",
            "Is the spool full and dropping telemetry?",
            "Telemetry records shed per second because the spool was full. Anything above zero "
            "means heartbeats and readings are being lost (alarms and events never are).",
            [target(f'SELECT non_negative_derivative(max("spool_shed"), 1s) FROM "gateway_health" WHERE $timeFilter AND {gw} GROUP BY time($__interval), "gateway" fill(none)', alias="$tag_gateway")],
            "suffix: rec/s",
            8,
            8,
            thresholds=thresholds("green", (0.001, "red")),
            color={"mode": "palette-classic"},
            custom=lines(),
            options=TIMESERIES,
            interval="10s",
            minimum=0,
        )
    )
    d.add(
        Panel(
            "timeseries",
            "Backlog per destination",
            "How many records has each database not received yet?",
            "Records in the spool not yet written to each destination.",
            [target(f'SELECT max("depth") FROM "gateway_destination" WHERE $timeFilter AND {dest} GROUP BY time($__interval), "destination" fill(none)', alias="$tag_destination")],
            "short",
            8,
            8,
            color={"mode": "palette-classic"},
            custom=lines(),
            options=TIMESERIES,
            interval="10s",
            minimum=0,
        )
    )
    d.newline()
    d.add(
        Panel(
            "timeseries",
            "Age of the oldest unwritten record",
            "How far behind is each database?",
            f"Age of the oldest record each destination has not received. Dashed lines: "
            f"{DISPLAY_LAG_S} s, within which GB 50440 wants an alarm shown at the centre (orange), "
            "and 60 s (red): dashboards fed by this destination are that far behind.",
            [target(f'SELECT max("age_s") FROM "gateway_destination" WHERE $timeFilter AND {dest} GROUP BY time($__interval), "destination" fill(none)', alias="$tag_destination")],
            "s",
            8,
            8,
            thresholds=thresholds("green", (DISPLAY_LAG_S, "orange"), (60, "red")),
            color={"mode": "palette-classic"},
            custom=lines(),
            options=TIMESERIES,
            interval="10s",
            minimum=0,
        )
    )
    d.add(
        Panel(
            "timeseries",
            "Write latency",
            "How long does a write to each database take?",
            "Duration of the latest successful write per destination. Dashed lines: 1 s (orange) "
            "and 10 s (red, the default request timeout, after which a write fails and is retried).",
            [target(f'SELECT max("write_seconds") FROM "gateway_destination" WHERE $timeFilter AND {dest} GROUP BY time($__interval), "destination" fill(none)', alias="$tag_destination")],
            "s",
            8,
            8,
            thresholds=thresholds("green", (1, "orange"), (10, "red")),
            color={"mode": "palette-classic"},
            custom=lines(),
            options=TIMESERIES,
            interval="10s",
            minimum=0,
        )
    )
    d.add(
        Panel(
            "timeseries",
            "Write errors per destination",
            "Are writes failing or being given up?",
            "Failed write requests per second (retried from the spool) and lines moved to the "
            "dead-letter file per second (refused by the database as invalid, never retried).",
            [
                target(
                    f'SELECT non_negative_derivative(max("write_failures"), 1s) FROM "gateway_destination" WHERE $timeFilter AND {dest} GROUP BY time($__interval), "destination" fill(none)',
                    "A",
                    alias="$tag_destination failed",
                ),
                target(
                    f'SELECT non_negative_derivative(max("dead_lettered"), 1s) FROM "gateway_destination" WHERE $timeFilter AND {dest} GROUP BY time($__interval), "destination" fill(none)',
                    "B",
                    alias="$tag_destination dead-lettered",
                ),
            ],
            "reqps",
            8,
            8,
            thresholds=thresholds("green", (0.001, "red")),
            color={"mode": "palette-classic"},
            custom=lines(),
            options=TIMESERIES,
            interval="10s",
            minimum=0,
        )
    )
    d.newline()
    d.add(
        Panel(
            "timeseries",
            "Lines written per second",
            "Is data flowing into each database?",
            "Lines written per second per destination.",
            [
                target(
                    f'SELECT non_negative_derivative(max("lines_written"), 1s) FROM "gateway_destination" WHERE $timeFilter AND {dest} GROUP BY time($__interval), "destination" fill(none)',
                    alias="$tag_destination",
                )
            ],
            "suffix: lines/s",
            12,
            7,
            color={"mode": "palette-classic"},
            custom=lines(),
            options=TIMESERIES,
            interval="10s",
            minimum=0,
        )
    )
    d.add(
        Panel(
            "state-timeline",
            "Destinations refusing writes",
            "Is a database refusing the gateway's writes?",
            "Red while a destination is held: it refused writes for credentials, permissions or a "
            "missing database, so the gateway waits instead of retrying (its backlog grows).",
            [target(f'SELECT max("held") FROM "gateway_destination" WHERE $timeFilter AND {dest} GROUP BY time($__interval), "destination" fill(null)', alias="$tag_destination")],
            "none",
            12,
            7,
            mappings=state_mappings(("writing", "green"), ("held", "red")),
            color=fixed("green"),
            options=STATE_TIMELINE,
            interval="10s",
        )
    )
    return d


DASHBOARDS = [overview, cases, devices, water, gateway]


README = HERE / "README.md"
BEGIN = "<!-- panels: generated by dashboards/generate.py, do not edit by hand -->"
END = "<!-- end of panels -->"


def catalogue(dashboards: list[Dashboard]) -> str:
    """Every dashboard's purpose and every panel's question and query, as Markdown."""
    spans = {"now/d": "today", "30d": "last 30 days", "7d": "last 7 days"}
    out = []
    for d in dashboards:
        out += [f"### {d.title}", "", f"`json/{d.uid}.json`. {d.purpose}", ""]
        for p, _, _ in d.placed:
            span = spans.get(p.time_from or "")
            out += [f"#### {p.title}" + (f" ({span})" if span else ""), "", f"**{p.question}** {p.why}", ""]
            for t in p.queries:
                out += ["```sql", t["query"], "```", ""]
    return "\n".join(out)


def readme(dashboards: list[Dashboard]) -> str:
    """README.md with the catalogue between its markers; the rest is written by hand."""
    text = README.read_text(encoding="utf-8")
    head, found, rest = text.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise SystemExit(f"{README} lacks the lines {BEGIN!r} and {END!r}")
    return f"{head}{BEGIN}\n\n{catalogue(dashboards)}\n{END}{tail}"


def outputs() -> dict[Path, str]:
    dashboards = [make() for make in DASHBOARDS]
    files = {HERE / "json" / f"{d.uid}.json": json.dumps(d.to_json(), indent=2, ensure_ascii=False) + "\n" for d in dashboards}
    files[README] = readme(dashboards)
    return files


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if check:
            stale.append(path.relative_to(HERE.parent))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("Out of date; run python3 dashboards/generate.py:", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
