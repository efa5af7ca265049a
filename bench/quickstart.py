"""The quickstart end to end, as `make demo` runs it but into a fresh folder: wall time and each stage's seconds
from its manifest.

    python -m bench.quickstart
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import CONFIG, emit


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "coldstart.cli", "run", CONFIG, "--set", f"output_dir={out}"],
            check=True, stdout=sys.stderr,
        )
        wall = time.perf_counter() - start
        manifest = json.loads(next(Path(out).glob("*/manifest.json")).read_text())
    stages = {name: stage["seconds"] for name, stage in manifest["stages"].items()}
    emit({"wall_s": wall, "stages": stages})


if __name__ == "__main__":
    main()
