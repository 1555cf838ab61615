"""Run `python -m rlhfkit ARGS...` in this process and, at exit, write this process's peak resident set size
(VmHWM) and its rank to OUT_DIR/rss.<rank>.json: the per-process peak that `bench/zero_memory.py` compares.

    accelerate launch ... bench/rss_probe.py OUT_DIR rlhfkit-command [its flags]
"""

import atexit
import json
import os
import runpy
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("VmHWM missing from /proc/self/status")


def write(out: Path) -> None:
    rank = int(os.environ.get("RANK", "0"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rss.{rank}.json").write_text(json.dumps({"rank": rank, "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    out = Path(sys.argv[1])
    atexit.register(write, out)
    sys.argv = ["rlhfkit", *sys.argv[2:]]
    runpy.run_module("rlhfkit", run_name="__main__")
