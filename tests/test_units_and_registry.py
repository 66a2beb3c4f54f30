"""Budget parsing and registries."""

import pytest

from nas import Registry, UnknownNameError, parse_latency_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [("50ms", 50.0), ("50 ms", 50.0), ("0.05s", 50.0), ("1.5e2ms", 150.0), ("2000us", 2.0),
     ("+50ms", 50.0)],
)
def test_latency_budgets_parse_to_milliseconds(text, ms):
    assert parse_latency_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize(
    ("text", "says"),
    [("fast", "must be a positive number with a unit"), ("50 parsecs", "unknown unit 'parsecs'"),
     ("-5ms", "must be positive, got '-5ms'"), ("0ms", "must be positive"),
     ("", "must be a positive number"), ("ms", "must be a positive number"),
     ("50", "'50' has no unit")],
)
def test_malformed_budgets_are_rejected_saying_what_is_wrong(text, says):
    """Issue 14: a bare number is refused (the message asks for a unit; it used to be
    taken as ms), and a negative budget says it must be positive."""
    with pytest.raises(ValueError, match="latency budget") as err:
        parse_latency_ms(text)
    assert says in str(err.value)


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
