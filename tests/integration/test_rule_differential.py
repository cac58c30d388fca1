"""Random small stores under random enforced rules of every kind: jit-dispatch ends each run as the
newest jit ends the same transition, and the newest `jit validate` passes after its write where it
passes after jit's (docs/jit-format.md#rule-differential). A few fixed seeds; bench/rules_differential.py
runs many more."""

from __future__ import annotations

from pathlib import Path

import pytest

import rule_differential as rd
from helpers import clean_env
from real_jit import jit_binary

SEEDS = range(1000, 1024)


@pytest.mark.parametrize("seed", SEEDS)
def test_jit_dispatch_ends_a_random_case_as_the_newest_jit_does(seed: int, tmp_path: Path) -> None:
    jit = rd.Jit(jit_binary("newest"))
    case = rd.generate(seed)
    target = rd.build(jit, case, tmp_path / "repo")
    jits = rd.jits_verdict(jit, tmp_path / "repo", target, tmp_path / "copy")
    ours, reason = rd.dispatch_verdict(jit, tmp_path / "repo", target, clean_env())
    found = rd.mismatch(jits, ours)
    assert found is None, f"seed {seed}: {found}\nreason: {reason}\nrules:\n{case.rules}"
