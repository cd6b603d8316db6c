#!/usr/bin/env python3
"""Writes the buildings' coordinates as a Grafana gazetteer, for the overview's map.

InfluxDB holds no coordinates: the device registry does (`lat`, `lon`, see
gateway/REGISTRY.md). The Geomap panel "Buildings with open cases" looks each case's
`building` tag up in this file, in the format Grafana's Geomap reads as a gazetteer
(`[{"key": ..., "latitude": ..., "longitude": ..., "name": ...}]`, one entry per building).

    python3 dashboards/gazetteer.py devices.csv > /usr/share/grafana/public/gazetteer/firegrid-buildings.json

Run it again whenever the registry gains a building. Python 3.11, standard library only.
"""

from __future__ import annotations

import csv
import json
import sys


def gazetteer(rows: list[dict[str, str]]) -> list[dict]:
    """One entry per building, in the order buildings first appear in the registry."""
    buildings: dict[str, dict] = {}
    for row in rows:
        building = row["building_id"].strip()
        if building in buildings:
            continue
        buildings[building] = {
            "key": building,
            "latitude": float(row["lat"]),
            "longitude": float(row["lon"]),
            "name": f"{building} · {row['building_address'].strip()}",
        }
    return list(buildings.values())


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    # utf-8-sig: the registry may start with a byte-order mark (REGISTRY.md).
    with open(sys.argv[1], encoding="utf-8-sig", newline="") as f:
        rows = [{k.strip(): (v or "") for k, v in row.items()} for row in csv.DictReader(f)]
    json.dump(gazetteer(rows), sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
