"""The report's figures leave matplotlib's global state alone: a notebook that trains through the Python API
(which draws loss.png) keeps its inline backend and shows no stray figures."""

import subprocess
import sys


def test_drawing_a_report_figure_keeps_the_backend_and_pyplots_figures(tmp_path):
    code = f"""
import matplotlib
matplotlib.use("svg")  # stands in for a notebook's inline backend
import matplotlib.pyplot as plt
from rlhfkit.report.plots import plot_series
rows = [{{"step": 1, "loss": 1.0}}, {{"step": 2, "loss": 0.5}}]
plot_series(rows, "step", {{"loss": "train"}}, {str(tmp_path / "loss.png")!r}, "title", "loss")
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert plt.get_fignums() == [], plt.get_fignums()
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
