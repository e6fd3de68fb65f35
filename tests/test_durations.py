"""The one duration parser behind --duration, --instruments-refresh and training's --window."""

from __future__ import annotations

import pytest

from backend.apps.train import parse_window
from backend.config import duration_seconds
from backend.engine.bot import parse_duration


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("1.5h", 5400), ("2d", 172800), (" 12h ", 43200)])
def test_units(text, seconds):
    assert duration_seconds(text) == parse_duration(text) == parse_window(text) == seconds


def test_bare_number_is_seconds_except_where_a_unit_is_required():
    assert duration_seconds("45") == parse_window("45") == 45.0
    with pytest.raises(ValueError, match=r"invalid duration '24': give a unit, e\.g\. 24h for hours"):
        parse_duration("24")


@pytest.mark.parametrize("text", ["", "h", "5 hours", "-3m", "1w", "3mm"])
def test_other_text_is_refused_naming_the_option(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
    with pytest.raises(ValueError, match=r"invalid --window .*e\.g\. 90s"):
        parse_window(text)
    assert parse_window(None) is None


@pytest.mark.parametrize("text", ["0", "0h", "0.0s"])
def test_zero_is_refused_everywhere(text):
    for parse in (parse_duration, parse_window, duration_seconds):
        with pytest.raises(ValueError, match="must be more than zero"):
            parse(text)
