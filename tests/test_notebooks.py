"""The walkthrough notebook runs top to bottom on the embedded models in its quick setting
(RLHFKIT_NOTEBOOK_QUICK=1: tiny step counts, a few minutes on 2 cores), leaving its stored outputs alone."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebooks" / "rlhf_walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_notebook_runs_in_the_quick_setting(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("RLHFKIT_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("RLHFKIT_NOTEBOOK_RUNS", str(tmp_path / "runs"))  # the kernel inherits the environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []))
    assert "SETTING: quick" in text
    assert text.count("Correctly identified better response:") == 2  # the seed's two get_reward examples
    assert text.count("RLHF Model Response:") == 3  # the seed's three test prompts, side by side
    assert "RLHF - SFT, RM reward" in text  # the held-out statistics with their intervals
    images = sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))
    assert images == 3  # RM loss/accuracy, PPO curves, held-out bars
    for name in ("rm/model", "ppo/policy", "eval_heldout/eval/eval.json"):
        assert (tmp_path / "runs" / name).exists(), name
    stored = nbformat.read(NOTEBOOK, as_version=4)  # executing a copy in memory leaves the file as it was
    assert "SETTING: quick" not in str(stored)
