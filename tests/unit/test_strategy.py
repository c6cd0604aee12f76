import pytest
from pydantic import ValidationError

from tests.factory import shipped_strategy, strategy


def test_shipped_strategy_loads() -> None:
    s = shipped_strategy()
    assert [st.id for st in s.stages] == ["pre_due", "early", "mid", "late", "pre_legal"]
    assert s.earliest_dpd == -5


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([{"id": "a", "dpd_from": 1, "dpd_to": 10}, {"id": "b", "dpd_from": 10}], "overlap"),
        ([{"id": "a", "dpd_from": 10, "dpd_to": 1}], "before"),
        (
            [
                {
                    "id": "a",
                    "dpd_from": 1,
                    "dpd_to": 5,
                    "steps": [{"id": "d9", "day": 9, "channel": "sms", "template": "t"}],
                }
            ],
            "after the stage",
        ),
        (
            [
                {
                    "id": "a",
                    "dpd_from": 1,
                    "steps": [{"id": "d1", "day": 0, "channel": "sms", "template": "t"}],
                }
            ],
            "greater",
        ),
        (
            [
                {
                    "id": "a",
                    "dpd_from": 1,
                    "steps": [{"id": "d1", "day": 1, "channel": "fax", "template": "t"}],
                }
            ],
            "fax",
        ),
        ([{"id": "Bad Name", "dpd_from": 1}], "lower_snake_case"),
        (
            [
                {
                    "id": "a",
                    "dpd_from": 1,
                    "steps": [
                        {"id": "d1", "day": 1, "channel": "sms", "template": "t"},
                        {"id": "d1", "day": 2, "channel": "sms", "template": "u"},
                    ],
                }
            ],
            "twice",
        ),
        ([], "at least 1"),
    ],
)
def test_invalid_strategies_are_refused(stages: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        strategy(stages)
