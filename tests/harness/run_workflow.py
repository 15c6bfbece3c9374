"""Run a bundled UI-format workflow headless on an embedded ComfyUI host (installed by ``bash .ci/setup``).

    .comfy-ci/venv/bin/python tests/harness/run_workflow.py workflows/motion_preview.json
    .comfy-ci/venv/bin/python tests/harness/run_workflow.py workflows/animatediff_txt2gif.json --tiny-models

``--tiny-models`` swaps the checkpoint, motion-model and I2VGen-XL loaders for tiny random-weight models (no
downloads) and shrinks the clip, so the graph runs in seconds on a CPU; without it the workflow's own model files
must be in ``--models`` (``checkpoints/``, ``animatediff_models/``; for I2VGen-XL ``diffusion_models/``,
``text_encoders/``, ``clip_vision/``, ``vae/``). The images in ``workflows/assets`` are copied to the host's input
folder first. Files the workflow saves are copied to ``--out``; text outputs are printed.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HARNESS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(HARNESS_DIR))
import comfy_host  # noqa: E402
import workflow  # noqa: E402

ASSETS_DIR = comfy_host.REPO_ROOT / "workflows" / "assets"
#: the model folders ``--models DIR`` may hold (``DIR/<folder>/``), as ComfyUI names them
MODEL_FOLDERS = ("checkpoints", "animatediff_models", "sams", "follow_your_click", "diffusion_models", "unet",
                 "text_encoders", "clip", "clip_vision", "vae")


def install_workflow_assets() -> None:
    """Copy the workflows' bundled inputs (workflows/assets/*) into the host's input folder, where LoadImage looks."""
    import folder_paths

    for asset in ASSETS_DIR.iterdir():
        shutil.copy2(asset, Path(folder_paths.get_input_directory()) / asset.name)


def run(host: comfy_host.Host, path: Path, workdir: Path, tiny_models: bool = False,
        models: Path | None = None) -> comfy_host.PromptResult:
    """Run the UI workflow at ``path`` on the booted ``host`` (its assets installed, tiny models swapped in when
    asked, ``models`` registered), with the workflow embedded as the browser would send it."""
    import folder_paths
    import nodes

    install_workflow_assets()
    prompt = workflow.to_prompt(workflow.load(path), nodes.NODE_CLASS_MAPPINGS)
    if tiny_models:
        workflow.use_tiny_models(prompt, workdir / "animatediff_models")
        folder_paths.add_model_folder_path("animatediff_models", str(workdir / "animatediff_models"))
    if models:
        for folder in MODEL_FOLDERS:
            if folder in folder_paths.folder_names_and_paths:  # the host's names (text_encoders were clip before)
                folder_paths.add_model_folder_path(folder, str(models / folder))
    return host.run(prompt, {"extra_pnginfo": {"workflow": workflow.load(path)}})


def saved_file(item: dict) -> Path:
    """Where a node's UI output item (``{"filename", "subfolder", "type"}``) lies on disk."""
    import folder_paths

    return Path(folder_paths.get_directory_by_type(item["type"])) / item["subfolder"] / item["filename"]


def start_host(host_name: str) -> tuple[comfy_host.Host, Path]:
    """Boot ``host_name`` in a fresh work folder with the test-only custom nodes; returns the host and the folder."""
    workdir = Path(tempfile.mkdtemp(prefix="pix2gif-run-"))
    host = comfy_host.start(host_name, workdir, (HARNESS_DIR / "custom_nodes",))
    sys.path.append(str(comfy_host.REPO_ROOT))
    return host, workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workflow", type=Path)
    parser.add_argument("--host", default="0.3.75", help="2024-03, 0.3.75, 0.33.0, or a path to a ComfyUI tree")
    parser.add_argument("--out", type=Path, default=Path("output"))
    parser.add_argument("--tiny-models", action="store_true")
    parser.add_argument("--models", type=Path, help="folder with checkpoints/, animatediff_models/, sams/, …")
    args = parser.parse_args(argv)

    host, workdir = start_host(args.host)
    result = run(host, args.workflow, workdir, args.tiny_models, args.models)
    if not result.success:
        print(result.error or result.validation_error, file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for node_id, output in result.outputs.items():
        for item in output.get("images", []):
            shutil.copy2(saved_file(item), args.out / item["filename"])
            print(f"node {node_id}: wrote {args.out / item['filename']}")
        for text in output.get("text", []):
            print(f"node {node_id}: {text}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
