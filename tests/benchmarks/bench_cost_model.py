"""Cost counters of one CFG-batched UNet call at SD1.5 shapes (2 videos × 16 frames, 64×64 latent): plain UNet vs
with our AnimateDiff v2 motion modules injected. Exact and machine-independent (PyTorch ``meta`` device).

    .comfy-ci/venv/bin/python tests/benchmarks/bench_cost_model.py [--host 0.3.75]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "harness"))
import comfy_host  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="0.3.75")
    args = parser.parse_args()
    comfy_host.start(args.host, Path(tempfile.mkdtemp(prefix="pix2gif-cost-")))
    import cost_model

    plain, patched = cost_model.sd15_call_costs(videos=2, frames=16, side=64)
    reference = cost_model.animatediff_added_flops(videos=2, frames=16)
    added = patched.flops - plain.flops
    print(f"host {args.host}: one CFG step, 2×16 frames, 64×64 latent")
    print("| | TFLOP | aten ops |\n|---|---|---|")
    print(f"| plain SD1.5 UNet | {plain.flops / 1e12:.3f} | {plain.aten_ops} |")
    print(f"| + AnimateDiff v2 (ours) | {patched.flops / 1e12:.3f} | {patched.aten_ops} |")
    print(f"| ratio | {patched.flops / plain.flops:.3f} | {patched.aten_ops / plain.aten_ops:.3f} |")
    print(f"added {added / 1e12:.3f} TFLOP = {added / 32 / 1e12:.4f} TFLOP/frame; "
          f"analytic AnimateDiff reference {reference / 1e12:.3f} TFLOP (ours/ref = {added / reference:.4f})")


if __name__ == "__main__":
    main()
