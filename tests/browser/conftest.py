"""Browser tests: a real ComfyUI server per host (``PIX2GIF_HOST``: "0.3.75" or "0.33.0", default "0.33.0"; hosts
with a pinned ``comfyui-frontend-package``), with the pack in ``custom_nodes/`` as a user installs it, driven by
headless Chromium through playwright. Screenshots go to ``.comfy-ci/reports/browser-<host>/``.

    OMP_NUM_THREADS=1 PIX2GIF_HOST=0.3.75 .comfy-ci/venv/bin/python -m pytest -q tests/browser
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest

BROWSER_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BROWSER_DIR))
sys.path.insert(0, str(BROWSER_DIR.parent / "harness"))
import comfy_host  # noqa: E402
from comfy_page import ComfyPage  # noqa: E402
from comfy_server import REPO_ROOT, ComfyServer  # noqa: E402

HOST = os.environ.get("PIX2GIF_HOST", "0.33.0")
CHROMIUM = os.environ.get("PIX2GIF_CHROMIUM", "/usr/bin/chromium")
REPORTS = REPO_ROOT / ".comfy-ci" / "reports" / f"browser-{HOST}"
WORKFLOWS_DIR = REPO_ROOT / "workflows"
#: the folder name a user's clone might have; the registration test adds a second one
PACK_FOLDER = "ComfyUI-Pix2Gif"
#: a returning user's settings: no first-run template dialog, and no missing-models dialog (the bundled workflows
#: name models this machine lacks) over the canvas in the screenshots
USER_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False}


def start_server(workdir: Path, pack_folders: tuple[str, ...]) -> ComfyServer:
    server = ComfyServer.start(comfy_host.host_root(HOST), workdir, pack_folders)
    for asset in (WORKFLOWS_DIR / "assets").iterdir():  # what the workflows' Notes tell users to copy
        shutil.copy2(asset, server.base / "input" / asset.name)
    request = urllib.request.Request(server.url + "/settings", data=json.dumps(USER_SETTINGS).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=60).close()
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    booted = start_server(tmp_path_factory.mktemp("server"), (PACK_FOLDER,))
    yield booted
    booted.stop()


@pytest.fixture(scope="session")
def object_info(server) -> dict:
    """The host's node definitions, as the front end fetches them."""
    with urllib.request.urlopen(server.url + "/object_info", timeout=60) as response:
        return json.load(response)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def comfy(browser, server):
    """One page for the session (opening one costs 8-13 s on two CPU cores); tests load their workflow into it."""
    page = ComfyPage.open(browser, server.url, REPORTS)
    yield page
    page.close()
