"""Metrics: one JSON line per step in metrics.jsonl, mirrored to TensorBoard; progress bars. Main process only."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class Tracker:
    """Writes `metrics.jsonl` and TensorBoard events under `output_dir` (no-op off the main process)."""

    def __init__(self, output_dir: str | Path, is_main_process: bool = True, resume_step: int | None = None):
        self.is_main_process = is_main_process
        self.path = Path(output_dir) / "metrics.jsonl"
        self._tb = None
        if not is_main_process:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():  # resume: drop lines written after the checkpoint we resume from
            rows = [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
            kept = [r for r in rows if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path.parent / "tensorboard"))
        except ImportError:  # tensorboard is a dependency; keep metrics.jsonl working without it anyway
            log.warning("tensorboard not installed: metrics go to metrics.jsonl only")

    def log(self, step: int, metrics: dict) -> None:
        if not self.is_main_process:
            return
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def progress(iterable=None, *, total=None, desc: str = "", disable: bool = False):
    """The one progress-bar style: tqdm with ETA; hidden off the main process."""
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, leave=True)


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
