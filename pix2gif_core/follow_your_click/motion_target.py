"""A target motion strength for Regional Motion, checked against the clip it produced.

Follow-Your-Click's motion strength is the mean optical-flow magnitude of the moving region (methods.md §5.4); the
pack measures it as :func:`~.region_motion.region_motion` does (every frame against frame 0, pixels, inside the
mask). The regional patch acts before any frame exists, so the target is compared afterwards, on the decoded
frames: the measured value, how far it is from the target, and the strength that would reach it if the flow
inside grew in proportion to the strength – a first-order estimate to try, then measure again.
"""
from __future__ import annotations

from dataclasses import dataclass

from .region_motion import RegionMotion


@dataclass(frozen=True)
class MotionTargetCheck:
    """``measured``: the flow inside the mask (pixels); ``target``: the asked one (0 = none); ``strength``: the
    strength the clip was made with; ``suggested``: the strength to try next in [0, 1] (``strength`` when there
    is no target or nothing moved); ``proportional``: the unclamped estimate (None without an estimate)."""

    measured: float
    target: float
    strength: float
    suggested: float
    proportional: float | None


def check_motion_target(motion: RegionMotion, target: float, strength: float) -> MotionTargetCheck:
    """Compare ``motion.inside`` with ``target`` (pixels, 0 = off) for a clip made at ``strength`` in [0, 1]."""
    proportional = None
    if target > 0 and motion.inside > 0 and strength > 0:
        proportional = strength * target / motion.inside
    suggested = strength if proportional is None else min(max(proportional, 0.0), 1.0)
    return MotionTargetCheck(motion.inside, target, strength, suggested, proportional)


def describe(check: MotionTargetCheck, motion: RegionMotion) -> str:
    """One line for the node: measured inside/outside, and with a target how far off and what to try."""
    text = (f"measured motion inside the mask {motion.inside:.2f} px ({motion.points_inside} points), outside "
            f"{motion.outside:.2f} px ({motion.points_outside} points), every frame against frame 0")
    if check.target <= 0:
        return text + f"; made at strength {check.strength:.2f} (no target set)"
    off = (check.measured - check.target) / check.target
    text += f"; target {check.target:.2f} px: {abs(off):.0%} {'above' if off > 0 else 'below'}"
    if check.proportional is None:
        reason = "strength is 0" if check.strength <= 0 else "nothing inside the mask moved or could be tracked"
        return text + f"; no strength to suggest ({reason})"
    text += f"; try strength {check.suggested:.2f} (made at {check.strength:.2f})"
    if check.proportional > 1:
        text += (f" – reaching the target would need about {check.proportional:.2f}: at 1 the motion model gives "
                 "its own motion; for more raise Apply Motion Model's motion_scale or ask for more motion in the "
                 "prompt")
    return text
