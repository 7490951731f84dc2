"""Boot figures of `tox -e nova`: API call -> ACTIVE and -> first console line.

tests/nova appends one line per boot to build/nova-timings.jsonl (driver,
active_s, first_line_s); this prints the count and medians per driver. Not a
bench_*.py: it needs Nova's env, which `make bench` does not have.
Usage: python benchmarks/nova_figures.py [build/nova-timings.jsonl]
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

path = Path(sys.argv[1] if len(sys.argv) > 1 else "build/nova-timings.jsonl")
boots = defaultdict(list)
for line in path.read_text().splitlines():
    record = json.loads(line)
    boots[record["driver"]].append(record)
for driver, records in sorted(boots.items()):
    active = statistics.median(r["active_s"] for r in records)
    first = statistics.median(r["first_line_s"] for r in records)
    print(f"{driver}: {len(records)} boots, median to ACTIVE {active:.1f} s, "
          f"to first console line {first:.1f} s")
