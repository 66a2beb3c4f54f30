"""Budget parsing and registries."""

import pytest

from nas import Registry, UnknownNameError, parse_latency_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [("50ms", 50.0), ("50 ms", 50.0), ("0.05s", 50.0), ("50", 50.0), ("1.5e2ms", 150.0),
     ("2000us", 2.0)],
)
def test_latency_budgets_parse_to_milliseconds(text, ms):
    assert parse_latency_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["fast", "50 parsecs", "-5ms", "0ms", "", "ms"])
def test_malformed_budgets_are_rejected(text):
    with pytest.raises(ValueError, match="latency budget"):
        parse_latency_ms(text)


def test_registry_lists_known_names_for_unknown_ones():
    registry: Registry[int] = Registry("widget")

    @registry.register("one")
    def one() -> int:
        """The first widget."""
        return 1

    assert registry.create("one") == 1
    assert registry.entry("one").description == "The first widget."
    with pytest.raises(UnknownNameError, match="unknown widget 'two'; known: one"):
        registry.create("two")


def test_registering_a_name_twice_is_an_error():
    registry: Registry[int] = Registry("widget")
    registry.register("one")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("one")(lambda: 2)
