"""Seeds give the same numbers as before the redesign (issue 13): the final iterates of every
method, on a quadratic and a quartic, and of every SDE model each admits, against values recorded
in tests/data/golden.json (float64, exact to the last bit as float.hex, compared to 1e-13 relative
so that another vector unit's summation order does not count as a change)."""

from __future__ import annotations

import json

import pytest
import torch

from tests._golden_cases import GOLDEN, cases

RECORDED = json.loads(GOLDEN.read_text())
CASES = cases()


def test_every_recorded_case_still_exists_and_every_case_is_recorded():
    assert sorted(CASES) == sorted(RECORDED)


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_same_numbers_as_recorded(name):
    expected = torch.tensor(
        [[float.fromhex(v) for v in row] for row in RECORDED[name]], dtype=torch.float64
    )
    torch.testing.assert_close(CASES[name](), expected, rtol=1e-13, atol=0.0)
