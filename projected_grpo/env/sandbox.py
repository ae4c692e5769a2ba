"""Run untrusted model code: a pristine fork-server per grading core, a supervisor per job, and their client.

Design (facts and measurements behind it: shared/notes/grader.md). Each point is a guarantee; the test that proves
it is named in brackets (tests/test_sandbox_hostile.py unless said otherwise).

* The **server** is this very file, started as ``python -I -S sandbox.py <config>`` with ``env={}`` and ``cwd=/``
  (``/usr/bin/python3`` when present: stdlib only). It is never forked from the trainer. At start it enters an empty
  network namespace, a private mount namespace, builds a root holding only read-only binds of ``/usr`` and the stdlib
  directories plus an empty mount point ``/w``, ``chroot``s into it (root only), turns non-dumpable, imports the
  common stdlib and ``gc.freeze()``s. From then on it is a **zygote that never reads a job**: it keeps one
  supervisor forked and waiting on stdin, and reaps the ones that finished. So no job's code, expected values or
  output ever exists in the memory that later jobs inherit [inherited-memory scans].
* The **supervisor** (one process per job, forked from the pristine zygote as soon as the previous one answered,
  so that it already waits on stdin when the job arrives) enters fresh IPC, PID and mount
  namespaces, mounts a 64 MiB tmpfs on ``/w`` as the job's workdir, reads the job's public frame (code, calls,
  limits) and forks the confined **child**; only then does it read the job's secret frame (expected values), so
  the child never inherits it. When it exits, the namespaces die with it: SysV/POSIX IPC objects, the child and
  every file the child made are gone, whatever their shape (deep trees, ``chmod 000`` dirs) [cross-job channels,
  cleanup breakers]. Any failure of a supervisor comes back as a failed job with a reason; the zygote survives.
* The **child**: ``setsid``; fds 0=/dev/null, 1/2 = pipes, 3 = result pipe, 4 = answers from the supervisor, all
  others closed; rlimits AS 1 GiB, CPU, FSIZE 1 MiB, NOFILE 64, CORE 0; uid drop to a per-slot uid (root only);
  Landlock (read-only beneath the stdlib, full access beneath ``/w``, no TCP, signals and abstract sockets scoped);
  seccomp (raw classic BPF, x86_64 and aarch64) denying fork/vfork/clone, clone3 (ENOSYS), exec, **every
  socket()** (so no ``connect()`` to filesystem sockets either), kill/tkill/tgkill, ptrace, process_vm_*, mount/
  unshare/setns/chroot, (sym)link, mknod, name_to_handle_at/open_by_handle_at, io_uring, bpf, perf, userfaultfd,
  keyrings, modules, setsid/setpgid [socket and path probes]; and the per-inode kernel state of the read-only
  files every run shares: flock, fcntl record locks/leases/dnotify, inotify, fanotify, fadvise64, readahead,
  preadv2/pwritev2, mincore, cachestat, madvise WILLNEED/COLD/PAGEOUT/POPULATE, shared (non-private) futexes
  and the futex2 calls; and prctl(PR_SET_PDEATHSIG), so a child always dies with its supervisor
  [tests/test_sandbox_holes.py]. Inside the chroot no host path outside ``/usr`` and the stdlib resolves, so
  ``stat()`` cannot measure the project or the cache.
* **One run per completion, two phases; no expected value in any child, ever.** Phase 1 is the strict oracle:
  the child evaluates each test call and writes ``V repr(value)`` (plain data only), ``N type`` or ``X exception``
  lines on fd 3, all at once with a closing ``D``. Everything the oracle uses is fixed before the child learns
  anything: only after ``D`` does the supervisor answer (one JSON line on fd 4), and only for the checks that
  need it (script modes, sentinel), with nothing but the index of the first failing test; for the others fd 4
  reads EOF. Phase 2 is the mode's flawed check. The eq check needs no answer: for a non-plain value the child
  writes ``N type flag [plain copy]``, flag being ``value == decoy`` against an opaque object that carries
  nothing (an always-equal object passes), and the trainer compares the plain values with ``==``
  (``grader.eq_verdict``); its supervisor gets no secret at all [tests/test_sandbox_holes.py]. In a script mode a
  program that names ``__name__``, or whose merged run stopped in its top-level code (``X type top`` or no line),
  gets a separate oracle run as module ``solution``, so the oracle never judges a ``__main__`` block.
* The **supervisor watches** a pidfd and the pipes with ``poll``: SIGKILL on the CPU budget of the current phase
  (read from /proc every 50 ms; RLIMIT_CPU is the backstop), on the wall deadline, when stdout+stderr pass 64 KiB,
  or when the result passes 1 MiB. Its answer line is at most ``ANSWER_CAP`` (6x the capped fields: JSON's worst
  escape), which the client accepts, so no output makes the client restart a server. It reads ``result.txt``
  safely if asked (O_NOFOLLOW|O_NONBLOCK under a dir fd, S_ISREG, 4 KiB).
* The **result channel parser** (``parse_value``, ``check_line``) is total and bounded: any bytes give a verdict,
  never an exception; limits on bytes, line length, nesting, integer digits (checked before ``int()``), float
  token length and hashed elements are all checked before a value is built, and the read is linear
  [result-channel bombs, tests/test_grader.py]. The comparison is type-strict (``strict_equal``): ``bool`` is not
  ``int``, a float matches only a float expectation (exactly, both nan, or within a relative 1e-9).
* A layer the machine lacks is reported once, loudly, by the client (``logging.warning``), never skipped silently;
  a layer the start-up probe found working that then fails in a child makes that child exit 125 (fail closed).
* The **client** (``Worker``, ``WorkerPool``) owns the servers: it restarts a server that died or hung, and turns
  that into a failed job with a reason, so nothing a program does can take the trainer down.

Only the stdlib is imported here: the server runs this file alone.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import sys

# ----------------------------------------------------------------------------------------------- shared: values

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


# ------------------------------------------------------------------------------------------- server: constants

STDOUT_CAP = 64 * 1024
TOP_LEVEL = "top"  # third word of the X line of an exception raised by the program's top-level code
ANSWERED_CHECKS = ("exit", "stdout", "file", "sentinel")  # the supervisor answers these with first_bad after 'D'
PHASE2_CAP = 4096  # bytes of phase-2 result kept (only its first line is read)
FILE_READ_CAP = 4096
STDERR_KEEP = 2048  # bytes of stderr kept (the tail)
PHASE2_KEEP = 256  # bytes of the phase-2 line kept
# The worst size of one answer line: json.dumps writes any byte at most 6 bytes long (a control character as
# \u0001, an undecodable byte, read as U+FFFD, as \ufffd; valid multi-byte UTF-8 at most 3x), and every field is
# capped above; the client refuses more (a server that sends more is broken, not a program).
ANSWER_CAP = 6 * (RESULT_CAP + STDOUT_CAP + STDERR_KEEP + PHASE2_KEEP + FILE_READ_CAP) + 4096
TMPFS_SIZE = "64m"
SLOT_UID_BASE = 61000
WORKDIR = "/w"  # inside the server's root: the per-job tmpfs mount point
PRELOAD = ("collections", "heapq", "bisect", "itertools", "functools", "math", "string", "re", "typing", "random",
           "operator", "datetime", "copy", "json", "decimal", "fractions", "statistics", "array", "dataclasses",
           "enum", "traceback", "cmath", "numbers", "textwrap", "unicodedata", "sys", "shutil", "stat", "ctypes",
           "select", "resource", "signal", "sysconfig")
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWUSER = 0x20000, 0x8000000, 0x20000000, 0x40000000, 0x10000000

# syscall numbers (x86_64, aarch64) denied with EPERM; None = no such syscall on that arch
_DENY = {
    "fork": (57, None), "vfork": (58, None), "clone": (56, 220), "execve": (59, 221), "execveat": (322, 281),
    "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138),
    "rt_tgsigqueueinfo": (297, 240), "ptrace": (101, 117), "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271), "mount": (165, 40), "umount2": (166, 39), "unshare": (272, 97),
    "setns": (308, 268), "chroot": (161, 51), "pivot_root": (155, 41), "symlink": (88, None),
    "symlinkat": (266, 36), "link": (86, None), "linkat": (265, 37), "mknod": (133, None), "mknodat": (259, 33),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427), "bpf": (321, 280),
    "perf_event_open": (298, 241), "userfaultfd": (323, 282), "keyctl": (250, 219), "add_key": (248, 217),
    "request_key": (249, 218), "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "kexec_load": (246, 104), "reboot": (169, 142), "setsid": (112, 157), "setpgid": (109, 154),
    "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424), "pidfd_getfd": (438, 438),
    "process_madvise": (440, 440), "socket": (41, 198), "name_to_handle_at": (303, 264),
    "open_by_handle_at": (304, 265), "fsopen": (430, 430), "open_tree": (428, 428), "move_mount": (429, 429),
    # per-inode kernel state of the shared read-only files (locks, watches, page-cache residency): cross-run channels
    "flock": (73, 32), "inotify_init": (253, None), "inotify_init1": (294, 26), "inotify_add_watch": (254, 27),
    "inotify_rm_watch": (255, 28), "fanotify_init": (300, 262), "fanotify_mark": (301, 263),
    "fadvise64": (221, 223), "readahead": (187, 213), "preadv2": (327, 286), "pwritev2": (328, 287),
    "mincore": (27, 232), "cachestat": (451, 451),
    # futex2 calls (glibc does not use them; their shared waits would be keyed by inode like futex's below)
    "futex_waitv": (449, 449), "futex_wake": (454, 454), "futex_wait": (455, 455), "futex_requeue": (456, 456),
}
# syscalls denied (EPERM) only for some values of one argument: name -> ((x86_64, aarch64), arg index, values)
_DENY_ARG = {
    # record locks (F_GETLK, F_SETLK, F_SETLKW, F_OFD_*), leases and dnotify: state on shared inodes
    "fcntl": ((72, 25), 1, (5, 6, 7, 36, 37, 38, 1024, 1025, 1026)),
    # PR_SET_PDEATHSIG: a child that cleared it would outlive a killed server
    "prctl": ((157, 167), 0, (1,)),
    # MADV_WILLNEED, MADV_COLD, MADV_PAGEOUT, MADV_POPULATE_READ/WRITE: page-cache residency of shared files
    "madvise": ((28, 233), 2, (3, 20, 21, 22, 23)),
}
# syscalls denied (EPERM) unless a bit of one argument is set: name -> ((x86_64, aarch64), arg index, bit)
_DENY_UNLESS_BIT = {
    # a shared (non-FUTEX_PRIVATE_FLAG) futex on a page of a shared file is keyed by its inode: one run could
    # wait on it and another wake it; CPython and glibc use private futexes only
    "futex": ((202, 98), 1, 128),
}
_ARCH = {"x86_64": (0, 0xC000003E, 435), "aarch64": (1, 0xC00000B7, 435)}  # col, AUDIT_ARCH, clone3


# --------------------------------------------------------------------------------------------- server: layers

def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _check(rc, what):
    if rc < 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def seccomp_program(machine: str) -> bytes:
    """Classic BPF: kill on a foreign arch (or x32), EPERM for the denied syscalls (socket() of every family
    included), for the denied argument values of fcntl/prctl/madvise and for shared futexes, ENOSYS for clone3,
    allow the rest."""
    import struct

    col, audit_arch, nr_clone3 = _ARCH[machine]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill, eperm, enosys = 0x7FFF0000, 0x80000000, 0x00050000 | 1, 0x00050000 | 38
    ins = [(ld, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, kill), (ld, 0, 0, 0)]
    if machine == "x86_64":
        ins += [(jge, 0, 1, 0x40000000), (ret, 0, 0, kill)]
    for nrs, arg, values in _DENY_ARG.values():  # the low 32 bits of args[arg] (int arguments), then reload nr
        block = [(ld, 0, 0, 16 + 8 * arg)]
        for v in values:
            block += [(jeq, 0, 1, v), (ret, 0, 0, eperm)]
        ins += [(jeq, 0, len(block) + 1, nrs[col])] + block + [(ld, 0, 0, 0)]
    for nrs, arg, bit in _DENY_UNLESS_BIT.values():
        ins += [(jeq, 0, 4, nrs[col]), (ld, 0, 0, 16 + 8 * arg), (jset, 1, 0, bit), (ret, 0, 0, eperm), (ld, 0, 0, 0)]
    for nrs in _DENY.values():
        if nrs[col] is not None:
            ins += [(jeq, 0, 1, nrs[col]), (ret, 0, 0, eperm)]
    ins += [(jeq, 0, 1, nr_clone3), (ret, 0, 0, enosys), (ret, 0, 0, allow)]
    return b"".join(struct.pack("<HBBI", *i) for i in ins)


def install_seccomp(libc, prog: bytes):
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = SockFprog(len(prog) // 8, ctypes.addressof(buf))
    _check(libc.prctl(38, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    _check(libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0), "prctl(SET_SECCOMP)")


def landlock_abi(libc) -> int:
    return max(0, libc.syscall(444, None, 0, 1))


def install_landlock(libc, abi: int, ro_dirs, rw_dirs):
    import ctypes
    import struct

    fs_bits = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}.get(abi, 16)
    handled_fs = (1 << fs_bits) - 1
    attr = struct.pack("<QQQ", handled_fs, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    fd = _check(libc.syscall(444, attr[:size], size, 0), "landlock_create_ruleset")
    try:
        rules = [(d, 0b1101) for d in ro_dirs] + [(d, handled_fs) for d in rw_dirs]  # EXECUTE|READ_FILE|READ_DIR
        for path, access in rules:
            if not os.path.isdir(path):
                continue
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = ctypes.create_string_buffer(struct.pack("<Qi", access, pfd), 12)
                _check(libc.syscall(445, fd, 1, rule, 0), f"landlock_add_rule({path})")
            finally:
                os.close(pfd)
        _check(libc.prctl(38, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        _check(libc.syscall(446, fd, 0), "landlock_restrict_self")
    finally:
        os.close(fd)


def _readonly_dirs() -> list[str]:
    import sysconfig

    paths = sysconfig.get_paths()
    stdlib = os.path.dirname(os.__file__)
    dirs = {paths["stdlib"], paths["platstdlib"], stdlib, os.path.join(stdlib, "lib-dynload")}
    dynload = sys.modules.get("_ctypes")
    if dynload is not None and getattr(dynload, "__file__", None):
        dirs.add(os.path.dirname(dynload.__file__))
    multiarch = sysconfig.get_config_var("MULTIARCH")
    for d in ("/usr/lib", "/lib"):
        if multiarch:
            dirs.add(f"{d}/{multiarch}")
    return sorted(os.path.realpath(d) for d in dirs if d and os.path.isdir(d))


def _enter_namespaces(libc, root_dir: str, is_root: bool, ro_dirs: list[str]) -> tuple[dict, bool]:
    """Empty netns; as root also a private mount namespace whose root holds only read-only binds of /usr and the
    stdlib dirs and the workdir mount point, entered with chroot. Returns (layers, chrooted)."""
    layers = {}
    flags = CLONE_NEWNET if is_root else CLONE_NEWNET | CLONE_NEWUSER
    try:
        _check(libc.unshare(flags), "unshare(NEWNET)")
        layers["netns"] = "ok"
    except OSError as e:
        layers["netns"] = f"unavailable ({e}): the program can reach the network (loopback listeners included)"
    leak = ("stat()/name_to_handle_at resolve every host path the server's uid can search: the sizes and names "
            "of files in the project and the cache leak")
    if not is_root:
        layers["chroot"] = f"unavailable (not root): {leak}"
        return layers, False
    try:
        ms_bind, ms_rec, ms_rdonly, ms_remount, ms_private, ms_nosuid, ms_nodev = 4096, 16384, 1, 32, 262144, 2, 4
        _check(libc.unshare(CLONE_NEWNS), "unshare(NEWNS)")
        _check(libc.mount(b"none", b"/", None, ms_rec | ms_private, None), "mount(/, MS_REC|MS_PRIVATE)")
        _check(libc.mount(b"tmpfs", root_dir.encode(), b"tmpfs", ms_nosuid | ms_nodev, b"size=1m,mode=0755"),
               f"mount(tmpfs, {root_dir})")
        binds = ["/usr"] + [d for d in ro_dirs if not d.startswith("/usr/")]
        for name in ("bin", "lib", "lib32", "lib64", "sbin"):
            if os.path.islink("/" + name):
                os.symlink(os.readlink("/" + name), os.path.join(root_dir, name))
            elif os.path.isdir("/" + name) and "/" + name not in binds:
                binds.append("/" + name)
        for src in binds:
            dst = (root_dir + src).encode()
            os.makedirs(dst, exist_ok=True)
            _check(libc.mount(src.encode(), dst, None, ms_bind | ms_rec, None), f"bind {src}")
            _check(libc.mount(None, dst, None, ms_bind | ms_remount | ms_rdonly | ms_nosuid, None), f"ro {src}")
        os.mkdir(os.path.join(root_dir, WORKDIR.lstrip("/")), 0o755)
        os.chroot(root_dir)
        os.chdir("/")
        layers["chroot"] = "ok"
        return layers, True
    except OSError as e:
        layers["chroot"] = f"unavailable ({e}): {leak}"
        return layers, False


# --------------------------------------------------------------------------------------------- server: child

def _child(job, fds, ctx):
    """In the forked child: confine, run the job, never return."""
    code = 125
    try:
        os.setsid()
        for target, fd in ((0, ctx["devnull"]), (1, fds[0]), (2, fds[1]), (3, fds[2]), (4, fds[3])):
            os.dup2(fd, target)
        os.closerange(5, 1 << 16)
        os.chdir(ctx["workdir"])
        _confine(job, ctx)
        code = _run_kind(job)
    except BaseException as e:  # noqa: BLE001 - a confinement failure must fail closed
        try:
            os.write(2, f"sandbox: child setup failed: {type(e).__name__}: {e}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _confine(job, ctx):
    import resource as r

    cpu = math.ceil(job["cpu_s"] * (2 if job["kind"] == "graded" else 1)) + 1
    for lim, val in ((r.RLIMIT_AS, 1 << 30), (r.RLIMIT_CPU, cpu), (r.RLIMIT_FSIZE, 1 << 20),
                     (r.RLIMIT_NOFILE, 64), (r.RLIMIT_CORE, 0)):
        r.setrlimit(lim, (val, val))
    if ctx["uid"] is not None:
        os.setgroups([])
        os.setresgid(ctx["uid"], ctx["uid"], ctx["uid"])
        os.setresuid(ctx["uid"], ctx["uid"], ctx["uid"])
        r.setrlimit(r.RLIMIT_NPROC, (16, 16))
    ctx["libc"].prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG SIGKILL: die with the supervisor (set after the uid change)
    os.set_blocking(4, False)
    try:
        if os.read(4, 1) == b"":
            raise RuntimeError("the supervisor died while this child started")
    except BlockingIOError:
        pass  # alive: it holds the write end and has written nothing yet
    os.set_blocking(4, True)
    if ctx["landlock"]:
        install_landlock(ctx["libc"], ctx["landlock"], ctx["ro_dirs"], [ctx["workdir"]])
    if ctx["seccomp"]:
        install_seccomp(ctx["libc"], ctx["seccomp"])


def _run_kind(job) -> int:
    """Phase 1 (the oracle's values) then phase 2 (the mode's flawed check); returns the exit status.
    Every helper is bound before the program runs."""
    import builtins
    import traceback
    import types

    _write, _read, stdout, stderr = os.write, os.read, sys.stdout, sys.stderr
    is_plain = make_is_plain()
    _repr, _type, _eval, _exec, _getattr, _setattr, _loads = repr, type, eval, exec, getattr, setattr, json.loads
    _print_exc, _compile0 = traceback.print_exception, compile

    def _compile(src, name, mode):  # never inherit this file's `from __future__ import annotations`
        return _compile0(src, name, mode, dont_inherit=True)

    kind, check, calls = job["kind"], job.get("check"), job.get("calls", [])
    answered = check in ANSWERED_CHECKS  # the supervisor answers after 'D' (the first failing test's index)
    _issubclass, _slice, _str, _str_join, _str_split = issubclass, slice, str.__str__, str.join, str.split
    # The eq check's decoy: what a non-plain value is compared with (`value == decoy`). It carries nothing: an
    # always-equal object passes, any other object fails, and no expected value ever enters this process.
    decoy = type("Expected", (), {"__slots__": ()})()
    copies = ((dict, dict.copy), (list, list.copy), (tuple, lambda v: tuple.__getitem__(v, _slice(None))),
              (set, set.copy), (frozenset, frozenset.copy), (str, str.__str__), (int, int.__int__),
              (float, float.__float__))

    def plain_copy(v):
        """A subclass of a plain type (defaultdict, Counter, namedtuple, IntEnum, ...) as its plain base value,
        copied by the base's own method, or None."""
        for base, copy in copies:
            if _issubclass(_type(v), base):
                c = copy(v)
                return c if is_plain(c) else None
        return None

    def eq_line(value) -> str:
        """'N <type> <flag>[ <repr of the plain copy>]': flag 1/0 is `value == decoy`, !<exception> if it raised;
        the trainer compares the plain copy with == when the decoy did not match."""
        try:
            flag = "1" if value == decoy else "0"
        except BaseException as e:  # noqa: BLE001
            flag = "!" + _type(e).__name__
        line = "N " + _str_join("?", _str_split(_str(_type(value).__name__))) + " " + flag
        if flag != "1":
            try:
                c = plain_copy(value)
                if c is not None:
                    line += " " + _repr(c)
            except BaseException:  # noqa: BLE001, S110 - no copy: the decoy's verdict stands
                pass
        return line

    def answer() -> dict:
        data = b""
        while not data.endswith(b"\n"):
            chunk = _read(4, 1 << 16)
            if not chunk:
                raise EOFError("the supervisor sent no answer")
            data += chunk
        return _loads(data)

    def report(line: str):
        data = (line + "\n").encode("utf-8", "backslashreplace")
        while data:
            data = data[_write(3, data):]

    def flush():
        for s in (stdout, stderr):
            try:
                s.flush()
            except BaseException:  # noqa: BLE001, S110
                pass

    if kind == "probe":
        report("ok")
        return 0
    # The program runs in a real module registered in sys.modules (dataclasses, pickle and typing look it up).
    module = types.ModuleType(job["module"])
    sys.modules[module.__name__] = module
    ns = module.__dict__
    ns["__builtins__"] = builtins

    # ---- phase 1: the oracle's values, fixed before anything about the expected values reaches this process.
    # Its lines go out in one write with the closing 'D' (one wakeup of the supervisor, not one per test).
    program_exc = call_exc = fail_at = None
    values, lines = [], []
    try:
        _exec(_compile(job["setup"], "<setup>", "exec"), ns)
        _exec(_compile(job["code"], "solution.py", "exec"), ns)
    except BaseException as e:  # noqa: BLE001
        program_exc = e
        lines.append("X " + _str_join("?", _str_split(_str(_type(e).__name__))) + " " + TOP_LEVEL)
    if program_exc is None:
        for i, call in enumerate(calls):
            try:
                value = _eval(_compile(call, f"<test {i}>", "eval"), ns)
                line = "V " + _repr(value) if is_plain(value) else None
            except BaseException as e:  # noqa: BLE001
                call_exc, fail_at = e, i
                lines.append(f"X {_type(e).__name__}")
                break
            values.append(value)
            if line is None:
                if check == "eq":  # the eq check goes on past a non-plain value, as `==` on each test would
                    lines.append(eq_line(value))
                    continue
                lines.append(f"N {_type(value).__name__}")
                fail_at = i
                break
            lines.append(line)
    lines.append("D")
    report("\n".join(lines))
    del lines
    if kind == "oracle" or check == "eq":  # the eq check's verdict is the trainer's, from the lines above
        flush()
        return 0
    try:
        got = answer() if answered and program_exc is None else {}
    except BaseException as e:  # noqa: BLE001 - no answer: the harness fails
        got, program_exc = {}, e
    # the first failing test: the supervisor's (first line that is not the expected value), or where this
    # process stopped (an exception, a non-plain value), whichever comes first
    first = min([i for i in (got.get("first_bad", -1), fail_at) if i is not None and i >= 0], default=None)

    # ---- phase 2: the mode's flawed check
    if check == "run_tests":
        try:
            if program_exc is not None:
                report(f"X {_type(program_exc).__name__}")
                return 0
            fn, cls = ns.get(job["test_func"]), ns.get("Solution")
            if callable(fn):
                fn()
            elif cls is not None and _getattr(cls, job["test_func"], None) is not None:
                _getattr(cls(), job["test_func"])()
            else:
                report("M")
                return 0
            report("R")
        except BaseException as e:  # noqa: BLE001
            report(f"X {_type(e).__name__}")
        flush()
        return 0
    if check == "sentinel":
        if program_exc is None and first is None:
            try:
                _setattr(ns["Solution"], job["sentinel_attr"], True)
            except BaseException:  # noqa: BLE001, S110 - no Solution: the sentinel is just not set
                pass
        try:
            ok = _getattr(ns["Solution"](), job["sentinel_attr"], False) is True
        except BaseException:  # noqa: BLE001
            ok = False
        report("S 1" if ok else "S 0")
        flush()
        return 0
    # plain script: `python solution.py` with the tests appended (exit code / stdout / result.txt)
    try:
        if program_exc is not None:
            raise program_exc
        if first is not None and call_exc is not None and first == fail_at:
            raise call_exc
        if first is not None:
            raise AssertionError(f"test {first} failed")
        if check == "stdout":
            flush()
            _write(1, (job["marker"] + "\n").encode())
        elif check == "file":
            fd = os.open(job["result_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            _write(fd, job["file_marker"].encode())
            os.close(fd)
        code = 0
    except SystemExit as e:
        c = e.code
        code = 0 if c is None else (c & 0xFF) if _type(c) is int else 1
        if _type(c) not in (int, _type(None)):
            try:
                stderr.write(f"{c}\n")
            except BaseException:  # noqa: BLE001, S110
                pass
    except BaseException as e:  # noqa: BLE001
        try:
            _print_exc(e, file=stderr)
        except BaseException:  # noqa: BLE001, S110
            pass
        code = 1
    flush()
    return code


# ---------------------------------------------------------------------------------------- server: supervisor

def _proc_cpu(ctx, pid: int) -> float:
    try:
        fd = os.open(f"{pid}/stat", os.O_RDONLY, dir_fd=ctx["procfd"])
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        fields = data.rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _kill(pid: int):
    for fn in (os.killpg, os.kill):
        try:
            fn(pid, 9)
        except OSError:
            pass


def _enter_job_namespaces(ctx):
    """In the supervisor: fresh IPC/PID/mount namespaces and a fresh tmpfs workdir (or, where the machine lacks
    them, a fresh directory that ``_remove_tree`` removes). A layer the start-up probe found working that fails
    here raises: the job fails closed."""
    libc = ctx["libc"]
    if ctx["job_ns"]:
        _check(libc.unshare(ctx["job_ns"]), "unshare(job namespaces)")
    if ctx["jobfs"]:
        owner = f",uid={ctx['uid']},gid={ctx['uid']}" if ctx["uid"] is not None else ""
        opts = f"size={TMPFS_SIZE},nr_inodes=4096,mode=0700{owner}".encode()
        _check(libc.mount(b"tmpfs", ctx["workdir"].encode(), b"tmpfs", 2 | 4 | 8, opts), "mount(job tmpfs)")
    else:
        os.mkdir(ctx["workdir"], 0o700)
        if ctx["uid"] is not None:
            os.chown(ctx["workdir"], ctx["uid"], ctx["uid"])


def _remove_tree(path: str):
    """Remove a tree nothing can make this fail on: iterative (no recursion), one directory fd at a time (depth
    and path length do not matter), every directory made searchable before it is entered, links never
    followed (entered with O_NOFOLLOW), fifos and sockets only unlinked."""
    import stat

    os.chmod(path, 0o700, follow_symlinks=False)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    depth = 0
    while True:
        child = None
        for name in os.listdir(fd):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                child = name
                break
            os.unlink(name, dir_fd=fd)
        if child is not None:
            os.chmod(child, 0o700, dir_fd=fd)  # a directory (lstat said so); nothing runs that could swap it
            try:
                os.rmdir(child, dir_fd=fd)
                continue
            except OSError:
                pass
            sub = os.open(child, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd, depth = sub, depth + 1
            continue
        if depth == 0:
            break
        parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd, depth = parent, depth - 1
    os.close(fd)
    os.rmdir(path)


def _drain(fd, buf, cap, max_chunks=16):
    """Read what is there (at most max_chunks reads, so a flooding child cannot starve the watch loop); keep at
    most `cap` bytes in buf. Returns False at EOF."""
    for _ in range(max_chunks):
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        if len(buf) < cap:
            buf += chunk[: cap - len(buf)]
    return True


def _supervise(ctx, job, read_secret) -> dict:
    """Fork the confined child for `job`, read the secret frame only then, answer the child's V lines, watch it
    (per-phase CPU budget, wall deadline, output caps), reap it, and describe what the kernel saw."""
    import select
    import time

    pipes = [os.pipe() for _ in range(4)]  # stdout, stderr, result (child -> here), answers (here -> child)
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(job, [pipes[0][1], pipes[1][1], pipes[2][1], pipes[3][0]], ctx)
    for fd in (pipes[0][1], pipes[1][1], pipes[2][1], pipes[3][0]):
        os.close(fd)
    secret = read_secret()  # only now: the child never holds what it says
    check = job.get("check")
    compares = check in ANSWERED_CHECKS  # answered with the first failing test's index
    expected = [literal_value(e) for e in secret.get("expected", [])] if compares else []
    if compares != ("expected" in secret):
        raise ValueError(f"check {check!r}: expected values are sent for exactly {ANSWERED_CHECKS}, got "
                         f"{sorted(secret)}")
    out_fd, err_fd, res_fd, ans_fd = pipes[0][0], pipes[1][0], pipes[2][0], pipes[3][1]
    for fd in (out_fd, err_fd, res_fd, ans_fd):
        os.set_blocking(fd, False)
    bufs = {out_fd: bytearray(), err_fd: bytearray(), res_fd: bytearray()}
    caps = {out_fd: STDOUT_CAP + 1, err_fd: STDOUT_CAP + 1, res_fd: RESULT_CAP + 1}
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    for fd in (out_fd, err_fd, res_fd, pidfd):
        poller.register(fd, select.POLLIN | select.POLLHUP)
    open_fds, killed, pending, ans_watched, ans_open = {out_fd, err_fd, res_fd}, None, bytearray(), False, True
    scan, p1_end, p2_start, cpu1 = 0, None, None, None
    budget, cpu0, deadline = job["cpu_s"], 0.0, t0 + job["wall_s"]

    def on_result():
        """Find the line 'D' (end of phase 1; linear: each byte is scanned once) and answer it."""
        nonlocal scan, p1_end, p2_start, cpu1, cpu0, deadline, ans_open
        res = bufs[res_fd]
        while p1_end is None:
            j = res.find(b"\n", scan)
            if j < 0:
                return
            line, start, scan = bytes(res[scan:j]), scan, j + 1
            if line != b"D":
                continue
            p1_end, p2_start = start, scan
            cpu1 = cpu0 = _proc_cpu(ctx, pid)
            deadline = time.monotonic() + job["wall_s"]
            caps[res_fd] = p2_start + PHASE2_CAP
            if compares:
                lines = bytes(res[:p1_end]).decode("utf-8", "replace").split("\n", len(expected))
                first_bad = -1
                for i, e in enumerate(expected):
                    if not check_line(lines[i] if i < len(lines) else "", e)[0]:
                        first_bad = i
                        break
                pending.extend(json.dumps({"first_bad": first_bad}).encode() + b"\n")
            elif ans_open:  # no answer will ever come: a program that waits for one reads EOF
                os.close(ans_fd)
                ans_open = False

    while True:
        now = time.monotonic()
        if now >= deadline:
            killed = "timeout"
        elif _proc_cpu(ctx, pid) - cpu0 > budget:
            killed = "cpu_limit"
        if killed:
            _kill(pid)
            break
        events = poller.poll(max(1, min(50, int((deadline - now) * 1000) + 1)))
        exited = False
        for fd, _ in events:
            if fd == pidfd:
                exited = True
            elif fd == ans_fd:
                pass
            elif fd in open_fds and not _drain(fd, bufs[fd], caps[fd]):
                open_fds.discard(fd)
                poller.unregister(fd)
        on_result()
        if pending:
            try:
                del pending[: os.write(ans_fd, pending)]
            except BlockingIOError:
                pass
            except OSError:
                pending.clear()  # the child closed its end: nobody to answer
        if bool(pending) != ans_watched:
            ans_watched = bool(pending)
            poller.register(ans_fd, select.POLLOUT) if ans_watched else poller.unregister(ans_fd)
        if len(bufs[out_fd]) + len(bufs[err_fd]) > STDOUT_CAP:
            killed = "output_limit"
        elif p1_end is None and len(bufs[res_fd]) > RESULT_CAP:
            killed = "result_limit"
        if killed:
            _kill(pid)
            break
        if exited:
            break
    _, status, ru = os.wait4(pid, 0)
    wall = time.monotonic() - t0
    for fd in open_fds:
        os.set_blocking(fd, True)
        while _drain(fd, bufs[fd], caps[fd]):
            pass
    on_result()
    for fd in (out_fd, err_fd, res_fd, pidfd) + ((ans_fd,) if ans_open else ()):
        os.close(fd)
    res = bufs[res_fd]
    phase1 = res[:p1_end] if p1_end is not None else res[:RESULT_CAP]
    phase2 = res[p2_start:].split(b"\n", 1)[0][:PHASE2_KEEP] if p2_start is not None else b""
    cpu = ru.ru_utime + ru.ru_stime
    out = {
        "status": killed or ("exited" if os.WIFEXITED(status) else "signaled"),
        "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status),
        "stdout": bytes(bufs[out_fd][:STDOUT_CAP]).decode("utf-8", "replace"),
        "stderr": bytes(bufs[err_fd][-STDERR_KEEP:]).decode("utf-8", "replace"),
        "result": bytes(phase1).decode("utf-8", "replace"),
        "phase1_done": p1_end is not None,
        "result2": bytes(phase2).decode("utf-8", "replace"),
        "cpu_s": cpu,
        "cpu1_s": cpu1 if cpu1 is not None else cpu,
        "wall_s": wall,
    }
    if out["status"] == "signaled" and out["code"] in (-9, -24) and cpu - (cpu1 or 0.0) >= budget:
        out["status"] = "cpu_limit"
    if job.get("read_file"):
        out["file"] = _read_marker_file(ctx["workdir"], job["read_file"])
    return out


def _read_marker_file(workdir: str, name: str):
    """Content of workdir/name if it is a regular file (no link followed, no blocking, at most 4 KiB), else a
    short reason in angle brackets."""
    import stat

    dfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except FileNotFoundError:
        return "<missing>"
    except OSError as e:
        return f"<unreadable: {e.strerror}>"
    finally:
        os.close(dfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "<not a regular file>"
        return os.read(fd, FILE_READ_CAP).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _read_exact(fd: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError(f"stdin closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def _job_process(ctx, release_fd: int) -> int:
    """The supervisor's whole life: read one job (header `<public bytes> <secret bytes>\\n`, then the public JSON,
    then the secret JSON) from stdin without reading past it, isolate, run, answer one JSON line, then tell the
    zygote (one byte on `release_fd`) to fork the next supervisor. Returns its exit status: 0 answered, 3 stdin
    closed (the zygote then exits)."""
    ctx["libc"].prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG SIGKILL: die with the zygote
    header = b""
    while not header.endswith(b"\n"):
        c = os.read(0, 1)
        if not c:
            return 3
        header += c
        if len(header) > 40:
            raise ValueError(f"bad frame header {header[:40]!r}")
    n_public, n_secret = (int(x) for x in header.split())
    consumed = {"secret": False}

    def read_secret():
        consumed["secret"] = True
        return json.loads(_read_exact(0, n_secret))

    try:
        job = json.loads(_read_exact(0, n_public))
        _enter_job_namespaces(ctx)
        try:
            res = _supervise(ctx, job, read_secret)
        finally:
            if not ctx["jobfs"]:
                _remove_tree(ctx["workdir"])
    finally:
        if not consumed["secret"]:
            _read_exact(0, n_secret)  # keep the stream in step for the next job
    _send(res)
    os.write(release_fd, b"r")
    return 0


# -------------------------------------------------------------------------------------------- server: zygote

def _spawn_supervisor(ctx, poller):
    """Fork the next supervisor now, from the pristine zygote, so that it already waits on stdin when the next job
    arrives. Returns (pid, pidfd, release read end)."""
    import select

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 2
        try:
            code = _job_process(ctx, w)
        except BaseException as e:  # noqa: BLE001 - a supervisor failure is a failed job, never a dead server
            try:
                _send({"status": "sandbox_error", "reason": f"{type(e).__name__}: {e}"[:300]})
                code = 0
            except BaseException:  # noqa: BLE001, S110
                pass
        os._exit(code)
    os.close(w)
    pidfd = os.pidfd_open(pid)
    poller.register(r, select.POLLIN | select.POLLHUP)
    poller.register(pidfd, select.POLLIN)
    return pid, pidfd, r


def _zygote_loop(ctx):
    """Keep one supervisor waiting on stdin; when it has read its job (or died), fork the next one; reap the
    running ones and answer for any that died without answering."""
    import select

    poller = select.poll()
    standby = _spawn_supervisor(ctx, poller)
    running: dict[int, int] = {}  # pidfd -> pid
    while True:
        for fd, _ in poller.poll():
            if standby is not None and fd in (standby[1], standby[2]):  # it answered (or died): fork the next
                pid, pidfd, r = standby
                poller.unregister(r)
                os.close(r)
                running[pidfd] = pid
                standby = _spawn_supervisor(ctx, poller)
            if fd in running:
                pid = running.pop(fd)
                poller.unregister(fd)
                os.close(fd)
                _, st = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(st)
                if code == 3:
                    return
                if code != 0:
                    _send({"status": "sandbox_error", "reason": f"supervisor died (exit {code})"})


def _fork_call(fn, *args) -> dict:
    """Run fn(*args) (returning a JSON-able dict) in a forked process; its answer, or {'error': ...}."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            data = json.dumps(fn(*args)).encode()
        except BaseException as e:  # noqa: BLE001
            data = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()
        os.write(w, data[:60000])
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    try:
        return json.loads(data)
    except ValueError:
        return {"error": f"probe process died ({data[:100]!r})"}


def _probe(ctx, layers):
    """Check in real supervisors that each layer applies; a layer that fails here is reported and not used."""
    ns_layers = {"ipc_ns": CLONE_NEWIPC, "pid_ns": CLONE_NEWPID}
    if ctx["jobfs"]:
        ns_layers["jobfs"] = CLONE_NEWNS

    def try_ns(flag):
        _check(ctx["libc"].unshare(flag), "unshare")
        if flag == CLONE_NEWNS:
            _check(ctx["libc"].mount(b"tmpfs", ctx["workdir"].encode(), b"tmpfs", 2 | 4 | 8, b"size=1m"), "mount")
        return {"ok": True}

    for name, flag in ns_layers.items():
        res = _fork_call(try_ns, flag)
        if res.get("ok"):
            ctx["job_ns"] |= flag
            layers[name] = "ok"
        else:
            layers[name] = f"unavailable ({res.get('error')})"
    if layers.get("jobfs", "") != "ok":
        ctx["jobfs"] = False
        if "chroot" in layers and layers["chroot"] == "ok":
            layers["jobfs"] = layers.get("jobfs", "unavailable") + ": work files removed by _remove_tree"
        else:
            layers["jobfs"] = ("unavailable (not root): files go to the real disk, bounded only by FSIZE per file, "
                               "removed by _remove_tree")
    if "ipc_ns" in layers and layers["ipc_ns"] != "ok":
        layers["ipc_ns"] += ": SysV/POSIX IPC objects are shared between runs and outlive them"
    probe = {"kind": "probe", "setup": "", "code": "", "cpu_s": 5.0, "wall_s": 10.0}

    def one(c):
        _enter_job_namespaces(c)
        try:
            return _supervise(c, probe, dict)
        finally:
            if not c["jobfs"]:
                _remove_tree(c["workdir"])

    for layer in ("seccomp", "landlock"):
        if not ctx[layer]:
            continue
        trial = dict(ctx, seccomp=ctx["seccomp"] if layer == "seccomp" else b"",
                     landlock=ctx["landlock"] if layer == "landlock" else 0)
        res = _fork_call(one, trial)
        if res.get("result") != "ok\n":
            layers[layer] = f"unavailable (probe failed: {str(res.get('stderr') or res.get('error'))[-300:]})"
            ctx[layer] = b"" if layer == "seccomp" else 0


def serve(config: dict):
    import gc
    import importlib

    is_root = os.geteuid() == 0
    libc = _libc()
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    import _sitebuiltins
    import builtins

    builtins.exit, builtins.quit = _sitebuiltins.Quitter("exit", "Ctrl-D"), _sitebuiltins.Quitter("quit", "Ctrl-D")
    ro_dirs = _readonly_dirs()
    procfd = os.open("/proc", os.O_PATH | os.O_DIRECTORY)
    devnull = os.open("/dev/null", os.O_RDWR)
    layers, chrooted = _enter_namespaces(libc, config["root"], is_root, ro_dirs)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    machine = os.uname().machine
    ctx = {"libc": libc, "ro_dirs": ro_dirs, "procfd": procfd, "devnull": devnull, "job_ns": 0, "jobfs": chrooted,
           "workdir": WORKDIR if chrooted else os.path.join(config["root"], "w"),
           "uid": SLOT_UID_BASE + config["slot"] if is_root else None,
           "landlock": landlock_abi(libc), "seccomp": seccomp_program(machine) if machine in _ARCH else b""}
    layers["uid_drop"] = "ok" if is_root else "unavailable (not root): the program runs as the trainer's uid"
    layers["landlock"] = f"ok (ABI {ctx['landlock']})" if ctx["landlock"] else \
        "unavailable: the program can read and write every file the server's uid can"
    layers["seccomp"] = "ok" if ctx["seccomp"] else f"unavailable (arch {machine}): fork/exec/sockets not denied"
    _probe(ctx, layers)
    gc.freeze()
    _send({"hello": True, "layers": layers, "python": sys.version.split()[0], "pid": os.getpid()})
    _zygote_loop(ctx)


def _send(obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(1, data):]


# ----------------------------------------------------------------------------------------------- client

class SandboxError(RuntimeError):
    pass


def server_python() -> str:
    """A stdlib-only interpreter whose stdlib the sandbox uid can read; the running one as a fallback."""
    for cand in ("/usr/bin/python3", sys.executable):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise SandboxError("no python interpreter found for the sandbox server; expected /usr/bin/python3")


def failed_result(status: str, reason: str) -> dict:
    """A job that produced nothing because the sandbox itself failed (never because of what the program did)."""
    return {"status": status, "reason": reason, "code": -1, "stdout": "", "stderr": "", "result": "",
            "phase1_done": False, "result2": "", "cpu_s": 0.0, "cpu1_s": 0.0, "wall_s": 0.0}


_WARNED: set = set()


class Worker:
    """One fork-server. `run(job, secret)` never raises: a dead or hung server is killed, restarted on the next
    call, and the job comes back with status 'worker_died' (or 'sandbox_error' from the server) and a reason."""

    def __init__(self, slot: int):
        self.slot, self.proc, self.root, self._buf, self.restarts, self.layers = slot, None, None, b"", -1, {}

    def start(self):
        import logging
        import subprocess
        import tempfile

        self.root = tempfile.mkdtemp(prefix=f"pgrpo-sandbox-{self.slot}-")
        os.chmod(self.root, 0o711)
        cfg = json.dumps({"root": self.root, "slot": self.slot})
        self.proc = subprocess.Popen([server_python(), "-I", "-S", os.path.abspath(__file__), cfg], env={}, cwd="/",
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self._buf, self.restarts = b"", self.restarts + 1
        hello = self._read(30.0)
        if not hello or not hello.get("hello"):
            self.stop()
            raise SandboxError(f"sandbox server {self.slot} did not start (got {hello!r}); run "
                               f"`{server_python()} -I -S {__file__} '{cfg}'` by hand to see why")
        self.layers = hello["layers"]
        for layer, state in self.layers.items():
            if state != "ok" and not state.startswith("ok ") and layer not in _WARNED:
                _WARNED.add(layer)
                logging.getLogger(__name__).warning("SANDBOX LAYER MISSING: %s %s", layer, state)

    def run(self, job: dict, secret: dict | None = None) -> dict:
        """Run one job. `secret` (expected values) travels in a second frame that the server's supervisor reads
        only after it has forked the child."""
        try:
            if self.proc is None or self.proc.poll() is not None:
                self.stop()
                self.start()
            public, hidden = json.dumps(job).encode(), json.dumps(secret or {}).encode()
            self.proc.stdin.write(f"{len(public)} {len(hidden)}\n".encode() + public + hidden)
            self.proc.stdin.flush()
            phases = 2 if job["kind"] == "graded" else 1
            res = self._read(phases * job["wall_s"] + 10.0)
        except Exception as e:  # noqa: BLE001 - whatever the server did, the trainer gets a failed job
            self.stop()
            return failed_result("worker_died", f"{type(e).__name__}: {str(e)[:200]}")
        if not isinstance(res, dict) or "status" not in res:
            self.stop()
            return failed_result("worker_died", "no answer" if res is None else "malformed answer")
        if res["status"] == "sandbox_error":
            self.stop()  # the job stream may be out of step: start afresh
            return failed_result("sandbox_error", str(res.get("reason", ""))[:300])
        return res

    def _read(self, timeout: float):
        import select
        import time

        fd, deadline = self.proc.stdout.fileno(), time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self._buf += chunk
            if len(self._buf) > ANSWER_CAP:
                raise SandboxError(f"server {self.slot} sent an answer line of more than {ANSWER_CAP} bytes")
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def stop(self):
        import shutil

        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            self.proc = None
        if self.root:
            # The root is a mount point in the server's namespaces, and in each supervisor's copy of them: rmdir
            # fails (EBUSY) until the supervisors, killed with the zygote (PR_SET_PDEATHSIG), have exited.
            import time

            for _ in range(250):
                shutil.rmtree(self.root, ignore_errors=True)
                if not os.path.exists(self.root):
                    break
                time.sleep(0.02)
            else:
                import logging

                logging.getLogger(__name__).warning("sandbox server %s: could not remove %s", self.slot, self.root)
            self.root = None


class WorkerPool:
    """`n_workers` servers; `run_many(pairs)` runs (job, secret) pairs in parallel, one job per server at a time,
    results in the input order."""

    def __init__(self, n_workers: int):
        import queue
        from concurrent.futures import ThreadPoolExecutor

        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        self.workers = [Worker(i) for i in range(n_workers)]
        for w in self.workers:
            w.start()
        self._idle = queue.Queue()
        for w in self.workers:
            self._idle.put(w)
        self._exec = ThreadPoolExecutor(n_workers, thread_name_prefix="sandbox")

    def _run_one(self, pair):
        w = self._idle.get()
        try:
            return w.run(*pair)
        finally:
            self._idle.put(w)

    def run_many(self, pairs: list[tuple[dict, dict | None]]) -> list[dict]:
        return list(self._exec.map(self._run_one, pairs))

    def close(self):
        self._exec.shutdown(wait=True)
        for w in self.workers:
            w.stop()


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
