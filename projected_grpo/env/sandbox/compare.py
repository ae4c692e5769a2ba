"""The oracle's comparison: type-strict equality of a reported value with an expected one, one oracle line's
verdict, and the exact-builtin test of plain data. Stdlib only: the server imports it too."""

from __future__ import annotations

import math
import re

from .values import FLOAT_REL_TOL, MAX_DEPTH, parse_value


def _typed(x):
    """A hashable key that keeps the type: 1, True and 1.0 are three different keys."""
    t = type(x)
    if t is tuple:
        return ("tuple", tuple(_typed(e) for e in x))
    if t is frozenset:
        return ("frozenset", frozenset(_typed(e) for e in x))
    return (t.__name__, x)


def strict_equal(got, exp) -> bool:
    """Type-strict equality of a reported plain value with an expected one: the types must be identical at every
    level (bool is not int, int is not float, list is not tuple); floats match exactly, both nan, or within a
    relative FLOAT_REL_TOL; set elements and dict keys are compared with their types."""
    t = type(exp)
    if type(got) is not t:
        return False
    if t is float:
        if math.isnan(got) or math.isnan(exp):
            return math.isnan(got) and math.isnan(exp)
        if got == exp:
            return True
        if math.isinf(got) or math.isinf(exp):
            return False
        return abs(got - exp) <= FLOAT_REL_TOL * max(abs(got), abs(exp))
    if t in (int, str, bool, type(None)):
        return got == exp
    if t is list or t is tuple:
        return len(got) == len(exp) and all(strict_equal(g, e) for g, e in zip(got, exp))
    if t is set or t is frozenset:
        return len(got) == len(exp) and {_typed(x) for x in got} == {_typed(x) for x in exp}
    if t is dict:
        if len(got) != len(exp):
            return False
        by_key = {_typed(k): v for k, v in got.items()}
        return all(_typed(k) in by_key and strict_equal(by_key[_typed(k)], v) for k, v in exp.items())
    return False


def clip_name(s: str) -> str:
    """A name the child chose (a type name), made safe for a mechanism string: word characters, at most 40."""
    return re.sub(r"[^\w.]", "?", s[:40])


def check_line(line: str, exp) -> tuple[bool, str]:
    """One oracle line against its expected value: (equal, reason when not)."""
    if line.startswith("V "):
        try:
            v = parse_value(line[2:])
        except ValueError as e:
            return False, f"unparseable_value({clip_name(str(e).split(' at ')[0].replace(' ', '_'))})"
        return (True, "") if strict_equal(v, exp) else (False, "wrong_answer")
    if line.startswith("N "):
        return False, f"non_plain:{clip_name(line[2:].split(' ', 1)[0])}"
    if line.startswith("X "):
        return False, f"raised:{clip_name(line[2:].split(' ', 1)[0])}"
    return False, "no_value"


def make_is_plain():
    """is_plain(v): exact builtin data types, recursively (no subclasses, so no custom __eq__/__repr__ takes part),
    with every builtin it uses bound now, so code run later cannot rebind them."""
    _type, _int, _float, _str, _bool, _none = type, int, float, str, bool, type(None)
    _list, _tuple, _dict, _set, _frozenset = list, tuple, dict, set, frozenset

    def is_plain(v, depth=0):
        if depth > MAX_DEPTH:
            return False
        t = _type(v)
        if t is _int or t is _float or t is _str or t is _bool or t is _none:
            return True
        if t is _list or t is _tuple or t is _set or t is _frozenset:
            for x in v:
                if not is_plain(x, depth + 1):
                    return False
            return True
        if t is _dict:
            for k in v:
                if not (is_plain(k, depth + 1) and is_plain(v[k], depth + 1)):
                    return False
            return True
        return False

    return is_plain
