"""The GPU benchmark suite runs end to end on CPU with tiny models (so it cannot rot) and records what it measured."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_suite.py"
MODELS = ("plain UNet", "AnimateDiff", "AnimateZero (K/V sharing + window attention)", "Motion Inversion")


def test_tiny_cpu_run_reports_every_model_and_appends_its_results(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# earlier results\n")
    run = subprocess.run([sys.executable, str(SUITE), "--device", "cpu", "--tiny", "--host",
                          os.environ.get("PIX2GIF_HOST", "0.3.75"), "--results", str(results)],
                         capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    recorded = results.read_text()
    assert recorded.startswith("# earlier results\n") and "## gpu_suite.py: CPU" in recorded
    rows = {cells[0]: cells[1:] for line in recorded.splitlines()
            if (cells := [cell.strip() for cell in line.strip("|").split("|")])[0] in MODELS}
    assert set(rows) == set(MODELS)
    for name, (seconds, versus_plain, versus_animatediff, _, tflop, share) in rows.items():
        assert all(math.isfinite(float(value)) and float(value) > 0 for value in (seconds, versus_plain, tflop, share))
    assert float(rows["plain UNet"][1]) == 1.0 and float(rows["AnimateDiff"][2]) == 1.0
    assert float(rows["AnimateDiff"][4]) > float(rows["plain UNet"][4])  # the meta count includes the motion modules
    window = re.search(r"global ([\d.]+) ms, window ([\d.]+) ms", recorded)
    assert window and float(window[1]) > 0 and float(window[2]) > 0
