"""Target expressions in x, parsed into a whitelisted tree and evaluated on arrays.

The text is parsed by `ast.parse` (parsing only: nothing is compiled or executed) and the tree
is rebuilt from a closed set of node types: numbers, the variable `x`, the constants `pi` and `e`,
+ - * / ** (with a bounded constant exponent), unary +/-, and calls of whitelisted functions.
Evaluation walks that tree with numpy or torch functions, so every operation is vectorised and
no user text ever reaches `eval` or `compile`. Every failure is a `ValueError`.
"""

from __future__ import annotations

import ast
import math
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported on first torch evaluation: the spec stays light
    pass

MAX_LENGTH = 500  # characters
MAX_NODES = 200  # tree nodes after parsing
MAX_DEPTH = 32  # nesting of the rebuilt tree
MAX_EXPONENT = 64.0  # |p| in a ** p
VARIABLE = "x"
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

# Checked before parsing: anything outside this set cannot form a whitelisted expression,
# and rejecting it early keeps odd input (quotes, brackets, null bytes, unicode) from the parser.
_ALLOWED_CHARACTERS = re.compile(r"[0-9A-Za-z_.+\-*/(), \t]*")

Array = Any  # np.ndarray or torch.Tensor


@dataclass(frozen=True)
class _Function:
    numpy: Callable[..., Any]
    torch: str  # name in the torch namespace
    arity: int = 1


def _np_sigmoid(v: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-v))


FUNCTIONS: dict[str, _Function] = {
    "sin": _Function(np.sin, "sin"),
    "cos": _Function(np.cos, "cos"),
    "tan": _Function(np.tan, "tan"),
    "arcsin": _Function(np.arcsin, "asin"),
    "arccos": _Function(np.arccos, "acos"),
    "arctan": _Function(np.arctan, "atan"),
    "sinh": _Function(np.sinh, "sinh"),
    "cosh": _Function(np.cosh, "cosh"),
    "tanh": _Function(np.tanh, "tanh"),
    "exp": _Function(np.exp, "exp"),
    "log": _Function(np.log, "log"),
    "log2": _Function(np.log2, "log2"),
    "log10": _Function(np.log10, "log10"),
    "sqrt": _Function(np.sqrt, "sqrt"),
    "abs": _Function(np.abs, "abs"),
    "sign": _Function(np.sign, "sign"),
    "floor": _Function(np.floor, "floor"),
    "ceil": _Function(np.ceil, "ceil"),
    "sigmoid": _Function(_np_sigmoid, "sigmoid"),
    "min": _Function(np.minimum, "minimum", 2),
    "max": _Function(np.maximum, "maximum", 2),
    "atan2": _Function(np.arctan2, "atan2", 2),
}
FUNCTIONS["asin"], FUNCTIONS["acos"], FUNCTIONS["atan"] = (
    FUNCTIONS["arcsin"],
    FUNCTIONS["arccos"],
    FUNCTIONS["arctan"],
)

_BINARY: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
}


# The rebuilt tree: tuples keep it immutable and trivially hashable.
#   ("num", value) | ("var",) | ("neg", node) | ("bin", op, left, right) | ("call", name, args)
Node = tuple[Any, ...]


@dataclass(frozen=True)
class Expression:
    """A parsed target expression y(x); `evaluate` works on numpy arrays and torch tensors."""

    text: str
    tree: Node

    def evaluate(self, x: Array) -> Array:
        """y(x) elementwise, with the same array type, shape and float dtype as `x`."""
        # inf/nan are results like any other here; the caller decides whether they are allowed.
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if _is_tensor(x):
                import torch

                xt = x if x.is_floating_point() else x.to(torch.float64)
                return _broadcast(_eval(self.tree, xt, "torch"), xt)
            xa = np.asarray(x, dtype=np.float64)
            return _broadcast(_eval(self.tree, xa, "numpy"), xa)


def _is_tensor(x: Any) -> bool:
    # Anything that is a tensor was made by an already-imported torch.
    torch_module = sys.modules.get("torch")
    return torch_module is not None and isinstance(x, torch_module.Tensor)


def _broadcast(value: Any, x: Array) -> Array:
    if _is_tensor(x):
        import torch

        v = value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=x.dtype)
        return v.to(device=x.device, dtype=x.dtype).expand(x.shape).clone()
    return np.broadcast_to(np.asarray(value, dtype=np.float64), x.shape).copy()


def parse_expression(text: str) -> Expression:
    """Parse `text` into a whitelisted expression of x, or raise ValueError saying why."""
    if not isinstance(text, str):
        raise ValueError("the expression must be a string")
    if len(text) > MAX_LENGTH:
        raise ValueError(f"the expression is longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise ValueError("the expression is empty")
    if not _ALLOWED_CHARACTERS.fullmatch(text):
        bad = next(ch for ch in text if not _ALLOWED_CHARACTERS.fullmatch(ch))
        hint = " (use ** for powers)" if bad == "^" else ""
        raise ValueError(f"character {bad!r} is not allowed in an expression{hint}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for '1x': we report our own
            module = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
        # RecursionError/MemoryError: pathological nesting that the length cap still allows.
        detail = exc.msg if isinstance(exc, SyntaxError) and exc.msg else type(exc).__name__
        raise ValueError(f"the expression is not valid syntax: {detail}") from None
    if sum(1 for _ in ast.walk(module)) > MAX_NODES:
        raise ValueError(f"the expression has more than {MAX_NODES} parts")
    return Expression(text=text, tree=_build(module.body, depth=0))


def _mentions_x(node: Node) -> bool:
    kind = node[0]
    if kind == "var":
        return True
    if kind == "neg":
        return _mentions_x(node[1])
    if kind == "bin":
        return _mentions_x(node[2]) or _mentions_x(node[3])
    if kind == "call":
        return any(_mentions_x(a) for a in node[2])
    return False


def _build(node: ast.AST, depth: int) -> Node:
    """Rebuild one parsed node from the whitelist; anything else is rejected by name."""
    if depth > MAX_DEPTH:
        raise ValueError(f"the expression is nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"only numbers are allowed as constants, got {type(value).__name__}")
        number = float(value) if abs(value) < 1e308 else math.inf
        if not math.isfinite(number):
            raise ValueError("numbers in the expression must be finite")
        return ("num", number)
    if isinstance(node, ast.Name):
        if node.id == VARIABLE:
            return ("var",)
        if node.id in CONSTANTS:
            return ("num", CONSTANTS[node.id])
        raise ValueError(f"unknown name '{node.id}': only x, pi and e can be used")
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.USub):
            return ("neg", _build(node.operand, depth + 1))
        if isinstance(node.op, ast.UAdd):
            return _build(node.operand, depth + 1)
        raise ValueError(f"operator {type(node.op).__name__} is not allowed")
    if isinstance(node, ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            hint = " (use ** for powers)" if isinstance(node.op, ast.BitXor) else ""
            raise ValueError(f"operator {type(node.op).__name__} is not allowed{hint}")
        left = _build(node.left, depth + 1)
        right = _build(node.right, depth + 1)
        if op == "**":
            _check_exponent(right)
        return ("bin", op, left, right)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise ValueError("only plain function calls like sin(x) are allowed")
        name = node.func.id
        fn = FUNCTIONS.get(name)
        if fn is None:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise ValueError(f"unknown function '{name}'; allowed: {allowed}")
        if node.keywords:
            raise ValueError(f"{name}() takes no keyword arguments")
        if len(node.args) != fn.arity:
            raise ValueError(f"{name}() takes {fn.arity} argument(s), got {len(node.args)}")
        args = tuple(_build(a, depth + 1) for a in node.args)
        return ("call", name, args)
    raise ValueError(f"{type(node).__name__} is not allowed in an expression")


def _check_exponent(node: Node) -> None:
    """Exponents must be constants of modest size: x ** 2 yes, x ** x or 2 ** 1000 no."""
    if _mentions_x(node):
        raise ValueError("exponents must be constants (x may not appear in an exponent)")
    value = float(Expression(text="", tree=node).evaluate(np.zeros(1))[0])
    if not math.isfinite(value) or abs(value) > MAX_EXPONENT:
        raise ValueError(f"exponents must be finite numbers with |p| <= {MAX_EXPONENT:g}")


def _eval(node: Node, x: Array, backend: str) -> Any:
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "var":
        return x
    if kind == "neg":
        return -_eval(node[1], x, backend)
    if kind == "bin":
        a = _eval(node[2], x, backend)
        b = _eval(node[3], x, backend)
        op = node[1]
        if _scalar(a, b):
            # Constant arithmetic in numpy float64: inf/nan instead of Python's exceptions
            # (ZeroDivisionError, OverflowError, complex results of negative bases).
            return float(_SCALAR_OPS[op](np.float64(a), np.float64(b)))
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        return a**b if backend == "torch" else np.power(a, b)
    name, args = node[1], node[2]
    fn = FUNCTIONS[name]
    values = [_as_array(_eval(a, x, backend), x, backend) for a in args]
    if backend == "torch":
        import torch

        return getattr(torch, fn.torch)(*values)
    return fn.numpy(*values)


def _as_array(value: Any, x: Array, backend: str) -> Array:
    if backend == "torch":
        import torch

        if isinstance(value, torch.Tensor):
            return value
        return torch.tensor(value, dtype=x.dtype, device=x.device)
    return np.asarray(value, dtype=np.float64)


def _scalar(a: Any, b: Any) -> bool:
    return isinstance(a, float) and isinstance(b, float)


_SCALAR_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.true_divide,
    "**": np.power,
}
