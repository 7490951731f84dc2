"""Run every benchmarks/bench_*.py in turn (`tox -e bench`, `make bench`)."""

import glob
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
failed = []
for script in sorted(glob.glob(os.path.join(here, "bench_*.py"))):
    print(f"== {os.path.basename(script)}", flush=True)
    if subprocess.run([sys.executable, script, *sys.argv[1:]]).returncode:
        failed.append(os.path.basename(script))
if failed:
    sys.exit(f"failed: {', '.join(failed)}")
