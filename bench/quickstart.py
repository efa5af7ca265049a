"""The quickstart end to end: each stage's seconds from its manifest, and their sum.

The demo's own run (`make demo`, runs/quickstart) is read when every stage of it finished with the code as it is
now (the manifest records a hash of coldstart's source); otherwise, or with `--fresh`, the quickstart runs here
into a temporary folder first (~10 minutes on 2 cores).

    python -m bench.quickstart [--fresh]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import CONFIG, emit, workload
from coldstart.runs import source_sha256

STAGES = ("score", "warmup", "handoff", "rl", "eval")


def finished_with_this_code(manifest: Path) -> bool:
    if not manifest.is_file():
        return False
    stages = json.loads(manifest.read_text()).get("stages", {})
    source = source_sha256()
    return all(
        stages.get(s, {}).get("status") == "done" and stages[s].get("versions", {}).get("coldstart_source") == source
        for s in STAGES
    )


def stage_seconds(manifest: Path) -> dict[str, float]:
    stages = json.loads(manifest.read_text())["stages"]
    return {s: stages[s]["seconds"] for s in STAGES}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fresh", action="store_true", help="run the quickstart anew even if the demo's run is current")
    args = parser.parse_args()
    demo = workload().run_dir / "manifest.json"
    if not args.fresh and finished_with_this_code(demo):
        emit({"run": str(demo.parent), "stages": stage_seconds(demo)})
        return
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [sys.executable, "-m", "coldstart.cli", "run", CONFIG, "--set", f"output_dir={out}"],
            check=True, stdout=sys.stderr,
        )
        emit({"run": "fresh", "stages": stage_seconds(next(Path(out).glob("*/manifest.json")))})


if __name__ == "__main__":
    main()
