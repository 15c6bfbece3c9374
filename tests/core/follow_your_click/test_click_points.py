import pytest

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.follow_your_click.click_points import parse_clicks


def test_clicks_with_labels_and_default_positive():
    clicks = parse_clicks("[[10, 20, 1], [30.5, 5, 0], [0, 47]]", 80, 48)
    assert clicks.points == ((10.0, 20.0), (30.5, 5.0), (0.0, 47.0))
    assert clicks.labels == (1, 0, 1)


@pytest.mark.parametrize("text, words", [
    ("[[80, 10, 1]]", "outside the 80×48 image"),
    ("[[-1, 10, 1]]", "outside"),
    ("[[10, 48, 1]]", "outside"),
    ("[]", "no click on the object"),
    ("", "no click on the object"),
    ("[[10, 10, 0]]", "no click on the object"),
    ("[[10, 10, 2]]", "label 2"),
    ("[[10, 10, true]]", "label true"),
    ("[[10, NaN, 1]]", "finite"),
    ("[[10, 10, 1, 4]]", "entry 1"),
    ("[[10, 10, 1]", "not JSON"),
    ('{"x": 1}', "JSON list"),
])
def test_bad_clicks_are_refused_naming_the_input(text, words):
    with pytest.raises(Pix2GifInputError, match="points") as err:
        parse_clicks(text, 80, 48)
    assert words in str(err.value)
