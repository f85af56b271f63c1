"""Target expressions: whitelisted parsing, vectorised evaluation, and nothing else ever runs."""

from __future__ import annotations

import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dfp_engine.expression import MAX_LENGTH, parse_expression

X = np.linspace(-3.0, 3.0, 25)


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        ("cos(3*x) + cos(5*x)", np.cos(3 * X) + np.cos(5 * X)),
        ("sin(pi*x) ** 2 - e", np.sin(np.pi * X) ** 2 - np.e),
        ("-x**2 / 4 + abs(x)", -(X**2) / 4 + np.abs(X)),
        ("max(x, 0) + min(x, 1) * tanh(x)", np.maximum(X, 0) + np.minimum(X, 1) * np.tanh(X)),
        ("exp(-x**2) * sigmoid(2*x)", np.exp(-(X**2)) / (1 + np.exp(-2 * X))),
        ("3", np.full_like(X, 3.0)),
        ("2 ** -2 * x", 0.25 * X),
    ],
)
def test_evaluates_like_numpy_on_arrays_and_tensors(text: str, reference: np.ndarray) -> None:
    expr = parse_expression(text)
    np.testing.assert_allclose(expr.evaluate(X), reference, rtol=1e-12)
    t = expr.evaluate(torch.tensor(X))
    assert isinstance(t, torch.Tensor) and t.shape == (25,)
    np.testing.assert_allclose(t.numpy(), reference, rtol=1e-10)


def test_keeps_shape_and_float_dtype_of_the_input() -> None:
    x = torch.zeros(4, 1, dtype=torch.float32)
    out = parse_expression("1 + x").evaluate(x)
    assert out.shape == (4, 1) and out.dtype == torch.float32


def test_division_by_zero_and_overflow_give_non_finite_values_not_exceptions() -> None:
    assert np.isinf(parse_expression("1/x").evaluate(np.array([0.0])))[0]
    assert np.isnan(parse_expression("sqrt(x)").evaluate(np.array([-1.0])))[0]
    assert np.isinf(parse_expression("(1/0) * x + 1").evaluate(np.array([1.0])))[0]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('__import__("os").system("true")', "character"),
        ("x.__class__", "Attribute"),
        ("().__class__.__bases__", "Attribute"),
        ("open(x)", "unknown function 'open'"),
        ("eval(x)", "unknown function 'eval'"),
        ("y + 1", "unknown name 'y'"),
        ("lambda: x", "character ':'"),
        ("[x for x in x]", "character '['"),
        ("x if x else 1", "IfExp"),
        ("x ^ 2", "use ** for powers"),
        ("x ** x", "exponents must be constants"),
        ("2 ** 1000", "|p| <= 64"),
        ("9 ** 9 ** 9", "|p| <= 64"),
        ("x ** (1/0)", "finite"),
        ("1e999", "finite"),
        ("sin(x, 1)", "takes 1 argument"),
        ("x @ x", "character '@'"),
        ("x < 1", "character '<'"),
        ("True + x", "only numbers"),
        ("", "empty"),
        ("x" * (MAX_LENGTH + 1), "longer than"),
        ("-" * 60 + "x", "nested deeper"),
        ("+".join(["x"] * 120), "more than 200 parts"),
        ("sin(x", "not valid syntax"),
    ],
)
def test_rejects_everything_outside_the_whitelist(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_expression(text)


def test_an_escape_attempt_leaves_no_trace(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for text in (
        f"__import__('os').system('touch {marker}')",
        f"open('{marker}', 'w')",
        "exec('import os')",
    ):
        with pytest.raises(ValueError, match=r"not allowed|unknown"):
            parse_expression(text)
    assert not marker.exists()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_arbitrary_text_parses_or_raises_value_error_quickly(text: str) -> None:
    start = time.perf_counter()
    try:
        expr = parse_expression(text)
    except ValueError:
        pass
    else:
        expr.evaluate(np.linspace(-1, 1, 5))
    assert time.perf_counter() - start < 1.0


EXPRESSION_ALPHABET = "x0123456789.+-*/() episncoxqrtahbgml,_"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=EXPRESSION_ALPHABET, max_size=200))
def test_near_miss_expressions_parse_or_raise_value_error(text: str) -> None:
    try:
        expr = parse_expression(text)
    except ValueError:
        return
    values = expr.evaluate(np.linspace(-2, 2, 7))
    assert values.shape == (7,)
    assert all(isinstance(float(v), float) for v in values)


def test_constants_are_numbers_not_names() -> None:
    assert math.isclose(float(parse_expression("pi").evaluate(np.zeros(1))[0]), math.pi)


# ---------------------------------------------------------------- hostile text
#
# Properties of the parser under hostile input: it never runs code (no audit event of code
# execution, imports, files, processes or sockets while parsing or evaluating), never hangs
# (each input is answered in bounded time, whatever its size), and never raises anything but
# ValueError.

_AUDITED: list[str] = []
_WATCHING = [False]
# ast.parse raises "compile" (parsing to a tree only); nothing else may happen.
_ALLOWED_EVENTS = frozenset({"compile"})


def _audit(event: str, _args: tuple[object, ...]) -> None:
    if _WATCHING[0] and event not in _ALLOWED_EVENTS:
        _AUDITED.append(event)


sys.addaudithook(_audit)


def parse_watched(text: str) -> tuple[np.ndarray | None, float]:
    """Parse and evaluate `text` with the audit hook on: (values or None, seconds taken)."""
    _AUDITED.clear()
    _WATCHING[0] = True
    start = time.perf_counter()
    try:
        values = parse_expression(text).evaluate(np.linspace(-2.0, 2.0, 9))
    except ValueError:
        values = None
    finally:
        _WATCHING[0] = False
    elapsed = time.perf_counter() - start
    assert _AUDITED == [], f"{text!r} triggered {_AUDITED}"
    return values, elapsed


CODE_FRAGMENTS = st.sampled_from(
    [
        "__import__('os')", ".system('true')", "open('/etc/passwd')", "exec", "eval", "compile",
        "globals()", "getattr", "x.__class__", ".__subclasses__()", "().__class__.__base__",
        "lambda: 0", "[c for c in ()]", "breakpoint()", "import os", "\\n", ";", "@", "x[0]",
        "{}", "'s'", "b'\\x00'", "f'{x}'", "x if x else x", "(x := 1)", "*x", "**x", "...",
        "sin", "cos", "(", ")", "x", "pi", "e", "+", "-", "*", "/", "**", ",", " ", "1e308",
        "9" * 40, "0x1f", "1j", "\u00e9", "\U0001f9ea", "\x00", "\ud800",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(CODE_FRAGMENTS, max_size=12).map("".join))
def test_code_like_text_never_executes_anything(text: str) -> None:
    _, elapsed = parse_watched(text)
    assert elapsed < 1.0


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=MAX_LENGTH - 20, max_size=4 * MAX_LENGTH))
def test_long_unicode_text_is_refused_quickly(text: str) -> None:
    values, elapsed = parse_watched(text)
    assert elapsed < 1.0
    if len(text) > MAX_LENGTH:
        assert values is None


def _whitelisted(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """One level of a whitelisted expression over `children`."""
    unary = st.sampled_from(["sin", "cos", "exp", "log", "sqrt", "tanh", "abs", "sigmoid"])
    binary = st.sampled_from(["+", "-", "*", "/"])
    return st.one_of(
        st.builds(lambda f, a: f"{f}({a})", unary, children),
        st.builds(lambda a, op, b: f"({a}) {op} ({b})", children, binary, children),
        st.builds(lambda a, p: f"({a}) ** {p}", children, EXTREME_NUMBERS),
        st.builds(lambda a, b: f"max({a}, {b})", children, children),
        st.builds(lambda a: f"-({a})", children),
    )


EXTREME_NUMBERS = st.sampled_from(
    ["0", "1", "2", "64", "65", "-64", "0.5", "1e308", "1e-308", "1e309", "9" * 400, "2 ** 6",
     "(9 ** 9 ** 9)", "(1 / 0)", "(0 / 0)", "1e-999"]
)  # fmt: skip
WHITELISTED = st.recursive(
    st.sampled_from(["x", "pi", "e"]) | EXTREME_NUMBERS, _whitelisted, max_leaves=60
)


@settings(max_examples=300, deadline=None)
@given(WHITELISTED)
def test_whitelisted_trees_of_any_size_parse_or_refuse_in_bounded_time(text: str) -> None:
    values, elapsed = parse_watched(text)
    assert elapsed < 1.0
    if values is not None:
        assert values.shape == (9,) and values.dtype == np.float64


@pytest.mark.parametrize(
    "text",
    [
        "(" * 240 + "x" + ")" * 240,  # beyond CPython's parenthesis nesting
        "(" * 40 + "x" + ")" * 40,
        "-" * (MAX_LENGTH - 1) + "x",
        "sin(" * 99 + "x" + ")" * 99,
        "x" + "**2" * 160,
        "x" + "**x" * 160,
        "2" + " ** 2" * 99,
        "9" * MAX_LENGTH,
        "1" + "0" * (MAX_LENGTH - 1) + ".0",
        "max(" * 49 + "x" + ", x)" * 49,
        "+".join(["x"] * 250),
        "x" + "*1e308" * 60,
        "exp(exp(exp(exp(exp(exp(exp(exp(x))))))))",
        "(x ** 64) ** 64 ** -1",
    ],
)
def test_pathological_expressions_are_answered_quickly(text: str) -> None:
    values, elapsed = parse_watched(text[:MAX_LENGTH])
    assert elapsed < 0.5, (text[:40], elapsed)
    if values is not None:
        assert values.shape == (9,)
