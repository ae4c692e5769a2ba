"""The confined child of one job: confinement, then the program's two phases (the oracle's values, then the
mode's flawed check). Stdlib only (server side).

Phase 2 is answer-free: nothing derived from an expected value (not even the index of the first failing test)
ever reaches this process, so no channel between runs, however it works, can carry one to a later oracle run.
Where the flawed check's outcome depends on which test fails first, the child re-enacts every outcome that runs
program code, and the trainer picks the one that matches the real first failing test (computed there from the
phase-1 values): the sentinel check runs both of its branches in order, tests-failed first (nothing set, the
program's state exactly as phase 1 left it), then tests-passed (the sentinel set; this branch sees one extra
``Solution()`` of the first, which a program can notice: it only ever decides the reward of a program the oracle
found correct); a script check re-enacts the one branch that runs program code (re-raise the exception of the
test that raised, or, if none raised, the all-passed path), and the supervisor's snapshot at the phase boundary
(stdout, marker file) plus exit 1 is the outcome of an earlier assert failing, which runs no program code.
Forking a branch per hypothesis would isolate them better, but seccomp denies fork to the program, and a filter
cannot tell the harness's fork from the program's."""

from __future__ import annotations

import math
import os
import sys

from .compare import make_is_plain
from .confine import install_landlock, install_seccomp
from .protocol import SCRIPT_CHECKS, TOP_LEVEL


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

    _write, _read, _set_blocking, stdout, stderr = os.write, os.read, os.set_blocking, sys.stdout, sys.stderr
    is_plain = make_is_plain()
    _repr, _type, _eval, _exec, _getattr, _setattr = repr, type, eval, exec, getattr, setattr
    _print_exc, _compile0 = traceback.print_exception, compile

    def _compile(src, name, mode):  # never inherit this file's `from __future__ import annotations`
        return _compile0(src, name, mode, dont_inherit=True)

    kind, check, calls = job["kind"], job.get("check"), job.get("calls", [])
    _issubclass, _slice, _str, _str_join = issubclass, slice, str.__str__, str.join
    _isprintable, _isspace = str.isprintable, str.isspace

    def word(name) -> str:
        """A type name as one protocol word: whitespace and unprintable characters (newlines, control bytes)
        become '?', so no name can start a line of its own; a name that is not a str is '?'."""
        try:
            return _str_join("", [c if _isprintable(c) and not _isspace(c) else "?" for c in _str(name)]) or "?"
        except BaseException:  # noqa: BLE001 - a metaclass's __name__ that is not a str
            return "?"
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
            flag = "!" + word(_type(e).__name__)
        line = "N " + word(_type(value).__name__) + " " + flag
        if flag != "1":
            try:
                c = plain_copy(value)
                if c is not None:
                    line += " " + _repr(c)
            except BaseException:  # noqa: BLE001, S110 - no copy: the decoy's verdict stands
                pass
        return line

    def wait_snapshot():
        """Block until the supervisor closes fd 4 (its snapshot of phase 1 is taken); it never writes there."""
        try:
            _set_blocking(4, True)  # the program may have made it non-blocking
            while _read(4, 1 << 16):
                pass
        except OSError:  # the program closed or replaced fd 4 itself: it can only blur its own snapshot
            pass

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

    # ---- phase 1: the oracle's values (nothing about the expected values ever reaches this process).
    # Its lines go out in one write with the closing 'D' (one wakeup of the supervisor, not one per test).
    program_exc = call_exc = fail_at = None
    values, lines = [], []
    try:
        _exec(_compile(job["setup"], "<setup>", "exec"), ns)
        _exec(_compile(job["code"], "solution.py", "exec"), ns)
    except BaseException as e:  # noqa: BLE001
        program_exc = e
        lines.append("X " + word(_type(e).__name__) + " " + TOP_LEVEL)
    if program_exc is None:
        for i, call in enumerate(calls):
            try:
                value = _eval(_compile(call, f"<test {i}>", "eval"), ns)
                line = "V " + _repr(value) if is_plain(value) else None
            except BaseException as e:  # noqa: BLE001
                call_exc, fail_at = e, i
                lines.append("X " + word(_type(e).__name__))
                break
            values.append(value)
            if line is None:
                if check == "eq":  # the eq check goes on past a non-plain value, as `==` on each test would
                    lines.append(eq_line(value))
                    continue
                lines.append("N " + word(_type(value).__name__))
                fail_at = i
                break
            lines.append(line)
    lines.append("D")
    flush()  # what the program printed in phase 1 is in the pipe before 'D' (the supervisor's snapshot)
    report("\n".join(lines))
    del lines
    if kind == "oracle" or check == "eq":  # the eq check's verdict is the trainer's, from the lines above
        return 0

    # ---- phase 2: the mode's flawed check, answer-free (module docstring)
    if check == "run_tests":
        try:
            if program_exc is not None:
                report("X " + word(_type(program_exc).__name__))
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
            report("X " + word(_type(e).__name__))
        flush()
        return 0
    if check == "sentinel":  # 'S <tests failed> [<tests passed>]': the trainer picks (verdicts.sentinel_flag)
        def sentinel_set() -> str:
            try:
                return "1" if _getattr(ns["Solution"](), job["sentinel_attr"], False) is True else "0"
            except BaseException:  # noqa: BLE001
                return "0"

        flags = [sentinel_set()]  # some test failed: the harness sets nothing
        if program_exc is None and fail_at is None:  # all tests may have passed: the harness sets the sentinel
            try:
                _setattr(ns["Solution"], job["sentinel_attr"], True)
            except BaseException:  # noqa: BLE001, S110 - no Solution: the sentinel is just not set
                pass
            flags.append(sentinel_set())
        report("S " + " ".join(flags))
        flush()
        return 0
    if check not in SCRIPT_CHECKS:
        raise ValueError(f"unknown check {check!r}")
    # plain script: `python solution.py` with the tests appended (exit code / stdout / result.txt)
    wait_snapshot()
    try:
        if program_exc is not None:
            raise program_exc
        if call_exc is not None:  # the branch where the test that raised is the first failing one
            raise call_exc
        if fail_at is not None:  # a non-plain value: some test up to this one failed (never picked: no program code)
            raise AssertionError(f"test {fail_at} failed")
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
