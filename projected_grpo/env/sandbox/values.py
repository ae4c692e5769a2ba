"""Plain data as text: the reader of trusted data literals (a dataset's expected values) and the total, bounded
parser of the repr() lines a child reports. Stdlib only: the server imports it too."""

from __future__ import annotations

import ast
import math
import re

_PLAIN_SCALARS = (int, float, str, bool, type(None))
_LITERAL_NAMES = {"inf": math.inf, "nan": math.nan, "True": True, "False": False, "None": None}


# Limits of the result channel. All are checked before a value is built: nothing a child writes can cost the
# trainer (or the supervisor) more than these.
RESULT_CAP = 1 << 20  # bytes of result per run; the supervisor kills the child beyond
MAX_LINE = 1 << 16  # bytes of one value line (the largest expected repr in the LeetCode sample is 574)
MAX_DEPTH = 32  # containers nested in one another (a flat list is 1)
MAX_INT_DIGITS = 4000  # digits of one integer, counted before int() runs
MAX_FLOAT_CHARS = 40  # characters of one float token
MAX_HASHED = 2048  # set elements + dict keys in one line (hashing chosen ints is quadratic)
FLOAT_REL_TOL = 1e-9  # a float matches a float expectation exactly, both nan, or within this relative tolerance


def literal_value(src: str):
    """Evaluate a *trusted* data literal (a dataset's expected value) without running code: numbers, strings,
    None/bools, inf/nan, float('inf'), list/tuple/dict/set/frozenset (nested), unary +/-, and + - * ** // % on
    numbers. Raises ValueError otherwise. Untrusted text (what a child wrote) goes through ``parse_value``."""
    try:
        return _literal(ast.parse(src.strip(), mode="eval").body)
    except (SyntaxError, RecursionError, MemoryError, ArithmeticError, TypeError) as e:
        raise ValueError(f"not a plain data literal ({type(e).__name__}: {e})") from None


def _literal(node):
    if isinstance(node, ast.Constant) and type(node.value) in _PLAIN_SCALARS:
        return node.value
    if isinstance(node, ast.Name) and node.id in _LITERAL_NAMES:
        return _LITERAL_NAMES[node.id]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(e) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand)
        if type(v) in (int, float, bool):
            return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Pow, ast.FloorDiv, ast.Mod)):
        a, b = _literal(node.left), _literal(node.right)
        small = all(type(x) is float or abs(x) < 1 << 64 for x in (a, b))
        if type(a) in (int, float) and type(b) in (int, float) and small and not (isinstance(node.op, ast.Pow) and abs(b) > 256):
            return {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b, ast.Pow: lambda: a**b,
                    ast.FloorDiv: lambda: a // b, ast.Mod: lambda: a % b}[type(node.op)]()
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        name, args = node.func.id, [_literal(a) for a in node.args]
        if name == "float" and len(args) == 1 and type(args[0]) in (str, int, float):
            return float(args[0])
        if name in ("set", "frozenset", "tuple", "list") and len(args) <= 1:
            return {"set": set, "frozenset": frozenset, "tuple": tuple, "list": list}[name](*args)
    raise ValueError(f"not a plain data literal: {ast.dump(node)[:200]}")


_TOKEN = re.compile(r"""[ \t]*(?:(?P<num>-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))|(?P<name>[A-Za-z]+)"""
                    r"""|(?P<str>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")|(?P<punct>[\[\](){},:-]))""")
_NAMES = {"True": True, "False": False, "None": None, "inf": math.inf, "nan": math.nan}


class _ReprParser:
    """Recursive descent over the repr() grammar of plain data; every token is read once (linear)."""

    def __init__(self, text: str):
        self.s, self.i, self.hashed = text, 0, 0

    def fail(self, why: str):
        raise ValueError(f"{why} at char {self.i}")

    def tok(self):
        m = _TOKEN.match(self.s, self.i)
        if m is None:
            self.fail("bad token")
        self.i = m.end()
        return m.lastgroup, m.group(m.lastgroup)

    def peek(self):
        m = _TOKEN.match(self.s, self.i)
        return (m.lastgroup, m.group(m.lastgroup)) if m else (None, None)

    def expect(self, p: str):
        if self.tok() != ("punct", p):
            self.fail(f"expected {p!r}")

    def number(self, t: str):
        body = t.lstrip("-")
        if body.isdigit():
            if len(body) > MAX_INT_DIGITS:
                self.fail(f"integer of more than {MAX_INT_DIGITS} digits")
            return int(t)
        if len(t) > MAX_FLOAT_CHARS:
            self.fail(f"float token longer than {MAX_FLOAT_CHARS} chars")
        return float(t)

    def items(self, close: str, depth: int, hashed: bool) -> list:
        out = []
        while True:
            if self.peek() == ("punct", close):
                self.tok()
                return out
            out.append(self.value(depth + 1))
            if hashed:
                self.count_hashed()
            kind, t = self.tok()
            if (kind, t) == ("punct", close):
                return out
            if (kind, t) != ("punct", ","):
                self.fail(f"expected ',' or {close!r}")

    def count_hashed(self):
        self.hashed += 1
        if self.hashed > MAX_HASHED:
            self.fail(f"more than {MAX_HASHED} set elements / dict keys")

    def value(self, depth: int = 0):
        if depth >= MAX_DEPTH:
            self.fail(f"nesting deeper than {MAX_DEPTH}")
        kind, t = self.tok()
        if kind == "num":
            return self.number(t)
        if kind == "str":
            return ast.literal_eval(t)  # one quoted token (the regex admits nothing else), bounded by MAX_LINE
        if kind == "name":
            if t in _NAMES:
                return _NAMES[t]
            if t == "set":
                self.expect("(")
                self.expect(")")
                return set()
            if t == "frozenset":
                self.expect("(")
                if self.peek() == ("punct", ")"):
                    self.tok()
                    return frozenset()
                self.expect("{")
                out = frozenset(self.items("}", depth, True))
                self.expect(")")
                return out
            self.fail(f"unknown name {t[:20]!r}")
        if t == "-":
            kind, t = self.tok()
            if (kind, t) == ("name", "inf"):
                return -math.inf
            self.fail("'-' not before inf")
        if t == "[":
            return self.items("]", depth, False)
        if t == "(":
            if self.peek() == ("punct", ")"):
                self.tok()
                return ()
            first = self.value(depth + 1)
            kind, t = self.tok()
            if t != ",":
                self.fail("a parenthesised value that is not a tuple")
            return (first, *self.items(")", depth, False))
        if t == "{":
            if self.peek() == ("punct", "}"):
                self.tok()
                return {}
            first = self.value(depth + 1)
            self.count_hashed()
            if self.peek() == ("punct", ":"):
                self.tok()
                pairs = [(first, self.value(depth + 1))]
                while True:
                    kind, t = self.tok()
                    if t == "}":
                        return dict(pairs)
                    if t != ",":
                        self.fail("expected ',' or '}' in a dict")
                    if self.peek() == ("punct", "}"):
                        self.tok()
                        return dict(pairs)
                    k = self.value(depth + 1)
                    self.count_hashed()
                    self.expect(":")
                    pairs.append((k, self.value(depth + 1)))
            kind, t = self.tok()
            if t == "}":
                return {first}
            if t != ",":
                self.fail("expected ',' or '}' in a set")
            return {first, *self.items("}", depth, True)}
        self.fail(f"unexpected {t[:20]!r}")


def parse_value(text: str):
    """The plain value a child reported as repr() text. Total and bounded: returns a value or raises ValueError,
    and never does more work than the limits above allow (length checked first, one pass over the text)."""
    if len(text) > MAX_LINE:
        raise ValueError(f"value line of {len(text)} chars > {MAX_LINE}")
    p = _ReprParser(text)
    try:
        v = p.value()
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - unhashable keys, bad escapes, ...: all mean "not a plain value"
        raise ValueError(f"{type(e).__name__} at char {p.i}") from None
    if text[p.i:].strip():
        raise ValueError(f"trailing text at char {p.i}")
    return v
