"""What every bench/*_vs_trl.py script shares: paths, running one implementation as a measured subprocess
(peak RSS from os.wait4, how busy the rest of the machine was), waiting for an idle CPU, small helpers.

Imports nothing heavy (no torch): the scripts run in the project's venv and start each implementation as
its own subprocess.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results"
RLHFKIT_CLI = ROOT / ".venv" / "bin" / "rlhfkit"
# the subprocesses never reach a hub and never fork tokenizer threads
CHILD_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class Measured:
    exit_code: int
    peak_rss_mb: float  # of this child alone
    wall_s: float
    foreign_cores: float  # CPU used meanwhile by every other process, in cores: > ~0.1 means a contended run


def busy_cpu_s() -> float:
    """CPU seconds that all cores together have spent busy since boot (first line of /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def wait_for_idle(max_wait_s: float, busy_cores: float = 0.2, window_s: float = 2.0) -> float:
    """Wait until other processes use under `busy_cores` cores (max `max_wait_s`); returns the last reading.

    With 2 cores, one other busy process more than doubles a PyTorch step (OpenMP threads spin at barriers)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = busy_cpu_s()
        time.sleep(window_s)
        busy = (busy_cpu_s() - before) / window_s
        if busy < busy_cores or time.monotonic() >= deadline:
            return busy
        print(f"  machine busy ({busy:.1f} cores in use by other processes), waiting ...", flush=True)


def run_measured(cmd: list[str], log: Path) -> Measured:
    """Run cmd with stdout+stderr to log, measuring its peak RSS and how busy the rest of the machine was.

    os.wait4 gives the rusage of this one child; RUSAGE_CHILDREN would be the max over every child so far."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start, busy_before = time.perf_counter(), busy_cpu_s()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=CHILD_ENV, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall_s = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen the child is already reaped
    foreign_cpu_s = busy_cpu_s() - busy_before - (usage.ru_utime + usage.ru_stime)
    # ru_maxrss is in kB on Linux
    return Measured(proc.returncode, usage.ru_maxrss / 1024, wall_s, max(0.0, foreign_cpu_s) / wall_s)


def contention_message(run: Measured) -> str:
    """'' for a clean run; else a warning for the row (its times are inflated)."""
    if run.foreign_cores <= 0.1:
        return ""
    return (f"contended: other processes used {run.foreign_cores:.1f} cores meanwhile, "
            "so its times are inflated; rerun on an idle machine")


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(empty log)"


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def timed_mean(values: list[float]) -> float:
    """Mean over the steps after the first (warm-up); the only value if there is one."""
    timed = values[1:] if len(values) > 1 else values
    return sum(timed) / len(timed)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def cpu_has_native_bf16() -> bool:
    """avx512_bf16 or AMX in /proc/cpuinfo's flags (what `rlhfkit env` and `dtype: auto` read through torch),
    unless RLHFKIT_NATIVE_BF16 overrides it: every speed figure names whether bf16 was native."""
    if os.environ.get("RLHFKIT_NATIVE_BF16") in ("0", "1"):
        return os.environ["RLHFKIT_NATIVE_BF16"] == "1"
    cpuinfo = Path("/proc/cpuinfo")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("flags")), []) if cpuinfo.is_file() else []
    return "avx512_bf16" in flags or "amx_bf16" in flags


def machine() -> dict:
    return {"cores": os.cpu_count(), "cpu": cpu_name(), "native_bf16": cpu_has_native_bf16(),
            "python": sys.version.split()[0]}


def policy_folder() -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder (converted once by rlhfkit into its cache)."""
    from rlhfkit.models.load import resolve_model_path

    return resolve_model_path("smollm2-135m-instruct")


def own_peak_rss_mb() -> float:
    """This process's high-water resident set size (VmHWM), in MB: for the workers that run in TRL's venvs."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # reported in kB
    raise RuntimeError("VmHWM missing from /proc/self/status")


# ----------------------------------------------------------------------------------------- rows and tables
def merged_with_stored(rows: list, setting: dict, path: Path, row_cls: type) -> list:
    """Rows run now, plus rows of the same setting kept from the last results file."""
    if not path.is_file():
        return rows
    stored = json.loads(path.read_text())
    if stored.get("setting") != setting:
        return rows
    old = {r["name"]: row_cls(**r) for r in stored["rows"]}
    return [r if r.status != "not run" or r.name not in old else old[r.name] for r in rows]


def print_table(rows: list, columns: list[tuple[str, str, str]], name_width: int = 22) -> None:
    """One line per row: `columns` are (header, row attribute, format spec with width); rows that did not run
    say why, and contended rows get a `*` and a footnote."""
    def cell(row, attr: str, spec: str) -> str:
        value = getattr(row, attr)
        width = spec.rstrip("fds").split(".")[0]
        return format(value, spec) if isinstance(value, (int, float)) else format(str(value or "-"), f">{width}")

    head = f"{'row':<{name_width}}" + "".join(f"{h:>{s.rstrip('fds').split('.')[0]}}" for h, _, s in columns)
    print(head + "\n" + "-" * len(head))
    for r in rows:
        if r.status != "ok":
            print(f"{r.name:<{name_width}}{r.status}: {r.message}")
            continue
        print(f"{r.name:<{name_width}}" + "".join(cell(r, a, s) for _, a, s in columns) + ("  *" if r.message else ""))
    for r in rows:
        if r.status == "ok" and r.message:
            print(f"* {r.name}: {r.message}")


def run_selected(parser, rows: list, only: str, wait_idle_s: float, steps: int, log_prefix: str, run_row) -> None:
    """Run the rows named by --only (all, an implementation, or row slugs), each after waiting for an idle CPU;
    `run_row(row)` fills the row in."""
    wanted = set(only.lower().split(","))
    known = {"all", *(r.impl for r in rows), *(r.slug.lower() for r in rows)}
    if not wanted <= known:
        parser.error(f"--only: unknown {', '.join(sorted(wanted - known))}; choose from {', '.join(sorted(known))}")
    for row in rows:
        if wanted & {"all", row.impl, row.slug.lower()}:
            row.log = str((RESULTS / "logs" / f"{log_prefix}{row.slug}.log").relative_to(ROOT))
            busy = wait_for_idle(wait_idle_s)
            print(f"running {row.name} ({steps} steps; log: {row.log}; others use {busy:.1f} cores) ...", flush=True)
            run_row(row)
