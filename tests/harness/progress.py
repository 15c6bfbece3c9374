"""What a user sees of a node's progress, read from the host's global progress hook.

ComfyUI ≥ 0.33 throttles progress reports (the first and the last always, others ≥ 0.1 s and 0.5 % apart), so
tests assert on the bars a user sees – values in order, ending on the last step – never on the number of reports.
"""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def recorded_progress():
    """Collect ``(value, total)`` of every report while the block runs."""
    import comfy.utils

    reports: list[tuple[int, int]] = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, *args, **kwargs: reports.append((value, total)))
    try:
        yield reports
    finally:
        comfy.utils.set_progress_bar_global_hook(None)


def progress_bars(reports: list[tuple[int, int]], total: int) -> list[list[int]]:
    """The bars of ``total`` steps in report order, each its reported values; a bar ends where the value drops."""
    bars: list[list[int]] = []
    for value, bar_total in reports:
        if bar_total != total:
            continue
        if not bars or value < bars[-1][-1]:
            bars.append([])
        bars[-1].append(value)
    return bars


def assert_complete_bars(reports: list[tuple[int, int]], total: int, count: int) -> None:
    """``count`` bars of ``total`` steps, each rising from its first step to the last step."""
    bars = progress_bars(reports, total)
    assert len(bars) == count, bars
    for bar in bars:
        assert bar[0] >= 1 and bar[-1] == total and bar == sorted(bar), bars
