"""The observer's fast Observation constructor builds exactly what the dataclass does."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlkit.contract import Observation
from policies.vllm.observe import OBSERVATION_FIELDS, make_observation

_ints = st.integers(0, 10**6)
_floats = st.floats(0.0, 1e4, allow_nan=False)


@given(
    st.tuples(_floats, _ints, _ints, _ints, _ints, _ints, _ints, _ints, _floats, _ints, _ints,
              st.lists(_floats, max_size=4).map(tuple), _floats, _floats,
              st.lists(_ints, max_size=4).map(tuple), st.lists(_floats, max_size=4).map(tuple),
              _ints, _ints, st.integers(1, 64),
              st.lists(_ints, max_size=4).map(tuple), st.lists(_floats, max_size=4).map(tuple))
)
def test_make_observation_equals_the_dataclass_constructor(values: tuple[Any, ...]) -> None:
    fast = make_observation(*values)
    slow = Observation(**dict(zip(OBSERVATION_FIELDS, values, strict=True)))
    assert type(fast) is Observation
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.num_running = 1  # type: ignore[misc]  # the point: it stays frozen


def test_every_contract_field_is_known_to_the_observer() -> None:
    assert sorted(OBSERVATION_FIELDS) == sorted(f.name for f in dataclasses.fields(Observation))
    with pytest.raises(ValueError):  # a wrong arity is refused, never a half-built object
        make_observation(*range(len(OBSERVATION_FIELDS) - 1))
