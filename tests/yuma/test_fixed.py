"""I32F32 arithmetic: scalar rules from spec §1/§5 and vector == scalar."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from crucible.chain.yuma import fixed as q

raws = st.integers(-(1 << 40), 1 << 40)
positive = st.integers(0, 1 << 50)


def test_u16_encoding_floors_like_the_chain() -> None:
    # spec §5 item 5: 1/64 ⇒ 1023, 1/448 ⇒ 146, 0.5 ⇒ 32767, 1.0 ⇒ 65535
    assert q.to_u16(q.q_div(q.ONE, 64 * q.ONE)) == 1023
    assert q.to_u16(q.q_div(q.ONE, 448 * q.ONE)) == 146
    assert q.to_u16(q.ONE // 2) == 32767
    assert q.to_u16(q.ONE) == 65535
    assert q.to_u16(2 * q.ONE) == 65535 and q.to_u16(-q.ONE) == 0


def test_multiply_floors_toward_minus_infinity() -> None:
    smallest = 1  # 2^-32
    assert q.q_mul(smallest, q.ONE // 2) == 0  # 2^-33 floors to 0
    assert q.q_mul(-smallest, q.ONE // 2) == -1  # −2^-33 floors to −2^-32


def test_division_truncates_and_safe_division_returns_zero() -> None:
    assert q.q_div(q.ONE, 3 * q.ONE) == 1431655765  # ⌊2^32/3⌋
    assert q.q_div(-q.ONE, 3 * q.ONE) == -1431655765  # toward zero, not −∞
    assert q.q_div(q.ONE, 0) == 0
    assert q.q_div(q.Q_MAX, 1) == 0  # overflow ⇒ 0 in the epoch's safe division
    assert q.q_div_sat(q.Q_MAX, 1) == q.Q_MAX


def test_kappa_decodes_by_truncation() -> None:
    # 32767/65535 = 0.49999237… ; ⌊32767·2^32/65535⌋
    assert q.ratio_u16(32767) == (32767 << 32) // 65535
    assert q.ratio_u16(65535) == q.ONE


def test_exp_special_cases() -> None:
    assert q.exp_q(0) == q.ONE
    assert q.exp_q(q.ONE) == 11674931554  # ⌊e·2^32⌋, special-cased by the chain
    assert abs(q.exp_q(2 * q.ONE) / q.ONE - 7.389056) < 1e-6
    assert abs(q.exp_q(-2 * q.ONE) / q.ONE - 0.135335) < 1e-6
    assert q.exp_q(100 * q.ONE) == q.exp_q(20 * q.ONE)  # clamped


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(positive, st.integers(0, 1 << 33)), min_size=1, max_size=20))
def test_vector_multiply_equals_scalar(pairs: list[tuple[int, int]]) -> None:
    a = np.array([x for x, _ in pairs], dtype=np.int64)
    b = np.array([y for _, y in pairs], dtype=np.int64)
    assert q.v_mul(a, b).tolist() == [q.q_mul(x, y) for x, y in pairs]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(raws, raws), min_size=1, max_size=20))
def test_signed_vector_multiply_equals_scalar(pairs: list[tuple[int, int]]) -> None:
    a = np.array([x for x, _ in pairs], dtype=np.int64)
    b = np.array([y for _, y in pairs], dtype=np.int64)
    assert q.v_mul_signed(a, b).tolist() == [q.q_mul(x, y) for x, y in pairs]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(positive, st.integers(0, 1 << 60)), min_size=1, max_size=20))
def test_vector_divide_equals_scalar(pairs: list[tuple[int, int]]) -> None:
    a = np.array([x for x, _ in pairs], dtype=np.int64)
    b = np.array([y for _, y in pairs], dtype=np.int64)
    assert q.v_div(a, b).tolist() == [q.q_div(x, y) for x, y in pairs]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(raws, raws), min_size=1, max_size=20), st.booleans())
def test_signed_vector_divide_equals_scalar(pairs: list[tuple[int, int]], sat: bool) -> None:
    a = np.array([x for x, _ in pairs], dtype=np.int64)
    b = np.array([y for _, y in pairs], dtype=np.int64)
    scalar = q.q_div_sat if sat else q.q_div
    assert q.v_div_signed(a, b, saturate=sat).tolist() == [scalar(x, y) for x, y in pairs]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-25 * q.ONE, 25 * q.ONE), min_size=1, max_size=10))
def test_vector_exp_equals_scalar(xs: list[int]) -> None:
    xs += [0, q.ONE, -q.ONE]
    assert q.v_exp(np.array(xs, dtype=np.int64)).tolist() == [q.exp_q(x) for x in xs]
