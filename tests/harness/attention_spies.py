"""Host-test spy: which of the pack's engine files call PyTorch's SDPA themselves instead of the host's attention."""
from __future__ import annotations

import sys

import torch.nn.functional


def watch_core_sdpa(monkeypatch) -> list[str]:
    """Until ``monkeypatch`` undoes it, every ``F.scaled_dot_product_attention`` call made from a ``pix2gif_core``
    file appends that file to the returned list (the host's own calls pass unrecorded)."""
    callers, sdpa = [], torch.nn.functional.scaled_dot_product_attention

    def watched(*args, **kwargs):
        caller = sys._getframe(1).f_code.co_filename
        if "pix2gif_core" in caller:
            callers.append(caller)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", watched)
    return callers
