"""The pack installed twice, under two folder names (a clone and a fork side by side): the front end imports
each of the pack's scripts once per folder, and each extension registers once, with no console error or warning from the pack, on
the first load and after a reload."""
from __future__ import annotations

import pytest
from comfy_page import ComfyPage
from conftest import PACK_FOLDER, REPORTS, start_server

SECOND_FOLDER = "pix2gif-fork"
EXTENSIONS = {"pix2gif.js": "pix2gif.animationInfo", "click_picker.js": "pix2gif.clickPicker"}


@pytest.fixture(scope="module")
def twice_installed(tmp_path_factory):
    booted = start_server(tmp_path_factory.mktemp("twice"), (PACK_FOLDER, SECOND_FOLDER))
    yield booted
    booted.stop()


def test_extension_registers_once_from_two_folders(browser, twice_installed):
    comfy = ComfyPage.open(browser, twice_installed.url, REPORTS)
    try:
        comfy.page.wait_for_timeout(2000)  # every extension module imported and set up
        counts = comfy.page.evaluate("(names) => names.map((n) => app.extensions.filter((e) => e.name === n).length)",
                                     list(EXTENSIONS.values()))
        comfy.screenshot("installed-twice")
        for script in EXTENSIONS:
            loaded = [url for url in comfy.requested if url.endswith(f"/{script}")]
            assert sorted(url.split("/extensions/")[1] for url in loaded) == \
                sorted(f"{folder}/{script}" for folder in (PACK_FOLDER, SECOND_FOLDER))
        assert counts == [1] * len(EXTENSIONS)
        assert not comfy.our_problems(), [line.text[:300] for line in comfy.our_problems()]

        comfy.page.reload()
        comfy.wait_until_ready()
        comfy.page.wait_for_timeout(2000)
        assert comfy.page.evaluate("(names) => names.map((n) => app.extensions.filter((e) => e.name === n).length)",
                                   list(EXTENSIONS.values())) == [1] * len(EXTENSIONS)
        assert not comfy.our_problems(), "after a reload: " + str([line.text[:300] for line in comfy.our_problems()])
    finally:
        comfy.close()
