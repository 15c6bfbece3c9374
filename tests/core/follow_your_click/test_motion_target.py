import pytest

from pix2gif_core.follow_your_click.motion_target import check_motion_target, describe
from pix2gif_core.follow_your_click.region_motion import RegionMotion


def motion(inside: float) -> RegionMotion:
    return RegionMotion(inside=inside, outside=0.0, points_inside=12, points_outside=40)


def test_suggestion_is_proportional_and_clamped_to_one():
    check = check_motion_target(motion(2.0), target=3.0, strength=0.5)
    assert check.measured == 2.0 and check.suggested == pytest.approx(0.75)
    text = describe(check, motion(2.0))
    assert "inside the mask 2.00 px" in text and "target 3.00 px: 33% below" in text and "try strength 0.75" in text
    strong = check_motion_target(motion(2.0), target=8.0, strength=0.5)
    assert strong.suggested == 1.0 and strong.proportional == pytest.approx(2.0)
    assert "would need about 2.00" in describe(strong, motion(2.0))
    above = check_motion_target(motion(4.0), target=2.0, strength=1.0)
    assert above.suggested == pytest.approx(0.5) and "100% above" in describe(above, motion(4.0))


def test_no_target_or_no_motion_keeps_the_strength():
    off = check_motion_target(motion(2.0), target=0.0, strength=0.8)
    assert off.suggested == 0.8 and off.proportional is None and "no target set" in describe(off, motion(2.0))
    still = check_motion_target(motion(0.0), target=3.0, strength=0.8)
    assert still.suggested == 0.8 and "nothing inside the mask moved" in describe(still, motion(0.0))
