"""Run untrusted model code: a pre-warmed fork-server per grading core, and its client.

Design (facts and measurements behind it: shared/notes/grader.md):

* The **server** is this very file, started as ``python -I -S sandbox.py <config>`` with ``env={}`` and
  ``cwd=/`` (``/usr/bin/python3`` when present: stdlib only, readable after the uid drop). It is never forked
  from the trainer, so the trainer's memory, CUDA state and secrets are never inherited. At start it enters an
  empty network namespace (``CLONE_NEWNET``; ``CLONE_NEWUSER|CLONE_NEWNET`` without root), a private mount
  namespace with a 64 MiB tmpfs as its work root (root only), turns itself non-dumpable, imports the common stdlib
  and ``gc.freeze()``s. It then serves one JSON job per line on stdin and answers one JSON line on stdout.
* **Per job it forks** (about 1 ms). The child: ``setsid``; fds 0=/dev/null, 1/2 = pipes, 3 = result pipe, all
  others closed; rlimits AS 1 GiB, CPU limit+1 s, FSIZE 1 MiB, NOFILE 64, CORE 0; ``chdir`` to a fresh 0700 workdir;
  uid drop to a per-slot uid (root only, then NPROC 16); Landlock (read-only beneath the stdlib and the shared
  libraries, full access beneath the workdir, no TCP, signals and abstract sockets scoped); seccomp (raw classic BPF,
  x86_64 and aarch64) denying fork/vfork/clone, clone3 (ENOSYS), exec, sockets other than AF_UNIX, kill/tkill/tgkill,
  ptrace, process_vm_*, mount/unshare/setns/chroot, (sym)link, mknod, io_uring, bpf, perf, userfaultfd, keyrings,
  modules, setsid/setpgid. Then it runs the job and always leaves through ``os._exit``.
* The **server watches** a pidfd and the pipes with ``poll``: SIGKILL to the child's process group on the CPU limit
  (read from /proc every 50 ms; RLIMIT_CPU is the backstop), on the wall deadline, when stdout+stderr pass 64 KiB,
  or when the result pipe passes 8 MiB. It reaps the child (``wait4``: exit status and CPU time come from the
  kernel), reads ``result.txt`` safely if asked (O_NOFOLLOW|O_NONBLOCK under a dir fd, S_ISREG, 4 KiB), removes
  the workdir.
* A layer the machine lacks is reported once, loudly, by the client (``logging.warning``), never skipped silently.
  A layer the start-up probe found working that then fails in a child makes that child exit 125 (fail closed).
* The **client** (``Worker``, ``WorkerPool``) owns the servers: it restarts a server that died or hung, and turns
  that into a failed job, so nothing a program does can take the trainer down. Dispatch is by threads: they only
  block on pipes.

Verdicts are never taken from what the program says about itself, except where a job kind reads the result fd on
purpose (see ``projected_grpo.env.grader``). Only the stdlib is imported here: the server runs this file alone.
"""

from __future__ import annotations

import ast
import json
import math
import os
import sys

# ----------------------------------------------------------------------------------------------- shared: values

_PLAIN_SCALARS = (int, float, str, bool, type(None))
_LITERAL_NAMES = {"inf": math.inf, "nan": math.nan, "True": True, "False": False, "None": None}


def literal_value(src: str):
    """Evaluate a data literal without running code: numbers, strings, None/bools, inf/nan, float('inf'),
    list/tuple/dict/set/frozenset (nested), unary +/-, and + - * ** // % on numbers. Raises ValueError otherwise."""
    return _literal(ast.parse(src.strip(), mode="eval").body)


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
        if type(a) in (int, float) and type(b) in (int, float) and not (isinstance(node.op, ast.Pow) and abs(b) > 256):
            return {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b, ast.Pow: lambda: a**b,
                    ast.FloorDiv: lambda: a // b, ast.Mod: lambda: a % b}[type(node.op)]()
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        name, args = node.func.id, [_literal(a) for a in node.args]
        if name == "float" and len(args) == 1 and type(args[0]) in (str, int, float):
            return float(args[0])
        if name in ("set", "frozenset", "tuple", "list") and len(args) <= 1:
            return {"set": set, "frozenset": frozenset, "tuple": tuple, "list": list}[name](*args)
    raise ValueError(f"not a plain data literal: {ast.dump(node)[:200]}")


def make_checks():
    """(is_plain, plain_equal), with every builtin they use bound now, so code run later cannot rebind them.

    is_plain: exact builtin data types, recursively (no subclasses, so no custom __eq__ can take part).
    plain_equal: == on two plain values, except that nan equals nan."""
    _type, _len, _float, _int, _bool, _str, _none = type, len, float, int, bool, str, type(None)
    _list, _tuple, _dict, _set, _frozenset = list, tuple, dict, set, frozenset
    _isnan = math.isnan

    def is_plain(v, depth=0):
        if depth > 200:
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

    def plain_equal(a, b):
        ta, tb = _type(a), _type(b)
        if ta is _float and tb is _float and _isnan(a) and _isnan(b):
            return True
        if (ta is _list and tb is _list) or (ta is _tuple and tb is _tuple):
            if _len(a) != _len(b):
                return False
            for i in range(_len(a)):
                if not plain_equal(a[i], b[i]):
                    return False
            return True
        if ta is _dict and tb is _dict:
            if a.keys() != b.keys():
                return False
            for k in a:
                if not plain_equal(a[k], b[k]):
                    return False
            return True
        return a == b

    return is_plain, plain_equal


# ------------------------------------------------------------------------------------------- server: constants

STDOUT_CAP = 64 * 1024
RESULT_CAP = 8 * 1024 * 1024
FILE_READ_CAP = 4096
TMPFS_SIZE = "64m"
SLOT_UID_BASE = 61000
PRELOAD = ("collections", "heapq", "bisect", "itertools", "functools", "math", "string", "re", "typing", "random",
           "operator", "datetime", "copy", "json", "decimal", "fractions", "statistics", "array", "dataclasses",
           "enum", "traceback", "cmath", "numbers", "textwrap", "unicodedata", "sys", "shutil", "stat", "ctypes",
           "select", "resource", "signal")

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
    "process_madvise": (440, 440),
}
_ARCH = {"x86_64": (0, 0xC000003E, 435, 41), "aarch64": (1, 0xC00000B7, 435, 198)}  # col, AUDIT_ARCH, clone3, socket


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
    """Classic BPF: kill on a foreign arch (or x32), EPERM for the denied syscalls, ENOSYS for clone3,
    EPERM for socket() other than AF_UNIX, allow the rest."""
    import struct

    col, audit_arch, nr_clone3, nr_socket = _ARCH[machine]
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, kill, eperm, enosys = 0x7FFF0000, 0x80000000, 0x00050000 | 1, 0x00050000 | 38
    ins = [(ld, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, kill), (ld, 0, 0, 0)]
    if machine == "x86_64":
        ins += [(jge, 0, 1, 0x40000000), (ret, 0, 0, kill)]
    for nrs in _DENY.values():
        if nrs[col] is not None:
            ins += [(jeq, 0, 1, nrs[col]), (ret, 0, 0, eperm)]
    ins += [(jeq, 0, 1, nr_clone3), (ret, 0, 0, enosys)]
    ins += [(jeq, 0, 3, nr_socket), (ld, 0, 0, 16), (jeq, 1, 0, 1), (ret, 0, 0, eperm), (ret, 0, 0, allow)]
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


def _enter_namespaces(libc, root_dir: str, is_root: bool) -> dict:
    layers = {}
    flags = 0x40000000 if is_root else 0x40000000 | 0x10000000  # CLONE_NEWNET (| CLONE_NEWUSER)
    try:
        _check(libc.unshare(flags), "unshare(NEWNET)")
        layers["netns"] = "ok"
    except OSError as e:
        layers["netns"] = f"unavailable ({e}): the program can reach the network (loopback listeners included)"
    if not is_root:
        layers["tmpfs"] = "unavailable (not root): files go to the real disk, bounded only by FSIZE per file"
        return layers
    try:
        _check(libc.unshare(0x00020000), "unshare(NEWNS)")
        _check(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None), "mount(/, MS_REC|MS_PRIVATE)")
        opts = f"size={TMPFS_SIZE},nr_inodes=4096,mode=0711".encode()
        _check(libc.mount(b"tmpfs", root_dir.encode(), b"tmpfs", 2 | 4 | 8, opts), f"mount(tmpfs, {root_dir})")
        layers["tmpfs"] = "ok"
    except OSError as e:
        layers["tmpfs"] = f"unavailable ({e}): files go to the real disk, bounded only by FSIZE per file"
    return layers


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
    return sorted(d for d in dirs if d and os.path.isdir(d))


# --------------------------------------------------------------------------------------------- server: child

def _child(job, fds, workdir, ctx):
    """In the forked child: confine, run the job, never return."""
    code = 125
    try:
        os.setsid()
        null = os.open("/dev/null", os.O_RDONLY)
        for target, fd in ((0, null), (1, fds[0]), (2, fds[1]), (3, fds[2])):
            os.dup2(fd, target)
        os.closerange(4, 1 << 16)
        os.chdir(workdir)
        _confine(job, workdir, ctx)
        code = _run_kind(job, ctx)
    except BaseException as e:  # noqa: BLE001 - a confinement failure must fail closed
        try:
            os.write(2, f"sandbox: child setup failed: {type(e).__name__}: {e}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _confine(job, workdir, ctx):
    import resource as r

    cpu = math.ceil(job["cpu_s"]) + 1
    for lim, val in ((r.RLIMIT_AS, 1 << 30), (r.RLIMIT_CPU, cpu), (r.RLIMIT_FSIZE, 1 << 20),
                     (r.RLIMIT_NOFILE, 64), (r.RLIMIT_CORE, 0)):
        r.setrlimit(lim, (val, val))
    if ctx["uid"] is not None:
        os.setgroups([])
        os.setresgid(ctx["uid"], ctx["uid"], ctx["uid"])
        os.setresuid(ctx["uid"], ctx["uid"], ctx["uid"])
        r.setrlimit(r.RLIMIT_NPROC, (16, 16))
    ctx["libc"].prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG SIGKILL: die with the server (set after the uid change)
    if os.getppid() != ctx["server_pid"]:
        raise RuntimeError("the server died while this child started")
    if ctx["landlock"]:
        install_landlock(ctx["libc"], ctx["landlock"], ctx["ro_dirs"], [workdir])
    if ctx["seccomp"]:
        install_seccomp(ctx["libc"], ctx["seccomp"])


def _run_kind(job, ctx) -> int:
    """Run one job kind; returns the exit status. Every helper is bound before the program runs."""
    import builtins
    import traceback
    import types

    _write, _exit_flush, stdout, stderr = os.write, None, sys.stdout, sys.stderr
    is_plain, plain_equal = make_checks()
    _repr, _type, _eval, _exec, _getattr = repr, type, eval, exec, getattr

    def _compile(src, name, mode):  # never inherit this file's `from __future__ import annotations`
        return compile(src, name, mode, dont_inherit=True)
    _print_exc = traceback.print_exception
    kind, calls = job["kind"], job.get("calls", [])
    expected = [literal_value(e) for e in job.get("expected", [])] if kind in ("plain", "sentinel") else []

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

    def harness(ns):
        for i, call in enumerate(calls):
            value = _eval(_compile(call, f"<test {i}>", "eval"), ns)
            if not (is_plain(value) and plain_equal(value, expected[i])):
                raise AssertionError(f"test {i} failed: {call}")

    # The program runs in a real module registered in sys.modules (dataclasses, pickle and typing look it up).
    module = types.ModuleType("__main__" if kind == "plain" else "solution")
    sys.modules[module.__name__] = module
    ns = module.__dict__
    ns["__builtins__"] = builtins
    run_program = lambda: (_exec(_compile(job["setup"], "<setup>", "exec"), ns),
                           _exec(_compile(job["code"], "solution.py", "exec"), ns))

    if kind == "probe":
        report("ok")
        return 0
    if kind == "plain":
        try:
            run_program()
            harness(ns)
            finish = job.get("finish", "exit")
            if finish == "stdout":
                flush()
                _write(1, (job["marker"] + "\n").encode())
            elif finish == "file":
                fd = os.open(job["result_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                _write(fd, job["file_marker"].encode())
                os.close(fd)
            code = 0
        except SystemExit as e:
            c = e.code
            code = 0 if c is None else (c & 0xFF) if _type(c) is int else 1
            if _type(c) not in (int, _type(None)):
                stderr.write(f"{c}\n")
        except BaseException as e:  # noqa: BLE001
            try:
                _print_exc(e, file=stderr)
            except BaseException:  # noqa: BLE001, S110
                pass
            code = 1
        flush()
        return code
    try:
        run_program()
        if kind == "oracle":
            for call in calls:
                value = _eval(_compile(call, "<call>", "eval"), ns)
                if not is_plain(value):
                    report(f"N {_type(value).__name__}")
                    return 0
                report("V " + _repr(value))
        elif kind == "run_tests":
            fn = ns.get(job["test_func"])
            cls = ns.get("Solution")
            if callable(fn):
                fn()
            elif cls is not None and _getattr(cls, job["test_func"], None) is not None:
                _getattr(cls(), job["test_func"])()
            else:
                report("M")
                return 0
            report("R")
        elif kind == "eq":
            for i, (call, exp) in enumerate(zip(calls, job["expected"])):
                if not _eval(_compile(f"({call}) == ({exp})", f"<assert {i}>", "eval"), ns):
                    report(f"F {i}")
                    return 0
            report("T")
        elif kind == "sentinel":
            try:
                harness(ns)
                setattr(ns["Solution"], job["sentinel_attr"], True)
            except BaseException:  # noqa: BLE001, S110 - tests failed: the sentinel is just not set
                pass
    except BaseException as e:  # noqa: BLE001
        if kind != "sentinel":
            report(f"X {_type(e).__name__}")
            return 0
    if kind == "sentinel":
        try:
            ok = _getattr(ns["Solution"](), job["sentinel_attr"], False) is True
        except BaseException:  # noqa: BLE001
            ok = False
        report("S 1" if ok else "S 0")
    flush()
    return 0


# -------------------------------------------------------------------------------------------- server: parent

def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _kill(pid: int):
    for fn in (os.killpg, os.kill):
        try:
            fn(pid, 9)
        except OSError:
            pass


def run_job(job, ctx) -> dict:
    """Fork one confined child for `job`, watch it, reap it, and describe what the kernel saw."""
    import select
    import shutil
    import time

    ctx["counter"] += 1
    workdir = os.path.join(ctx["root"], f"w{ctx['counter']}")
    os.mkdir(workdir, 0o700)
    if ctx["uid"] is not None:
        os.chown(workdir, ctx["uid"], ctx["uid"])
    pipes = [os.pipe() for _ in range(3)]
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(job, [w for _, w in pipes], workdir, ctx)
    for _, w in pipes:
        os.close(w)
    reads = [r for r, _ in pipes]
    for r in reads:
        os.set_blocking(r, False)
    bufs = {r: bytearray() for r in reads}
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    for fd in reads + [pidfd]:
        poller.register(fd, select.POLLIN | select.POLLHUP)
    open_fds, killed = set(reads), None
    deadline = t0 + job["wall_s"]
    while True:
        now = time.monotonic()
        if now >= deadline:
            killed = "timeout"
        elif _proc_cpu(pid) > job["cpu_s"]:
            killed = "cpu_limit"
        if killed:
            _kill(pid)
            break
        events = poller.poll(max(1, min(50, int((deadline - now) * 1000) + 1)))
        exited = False
        for fd, _ in events:
            if fd == pidfd:
                exited = True
            elif fd in open_fds:
                _drain(fd, bufs[fd], open_fds, poller)
        if len(bufs[reads[0]]) + len(bufs[reads[1]]) > STDOUT_CAP:
            killed = "output_limit"
        elif len(bufs[reads[2]]) > RESULT_CAP:
            killed = "result_limit"
        if killed:
            _kill(pid)
            break
        if exited:
            break
    _, status, ru = os.wait4(pid, 0)
    wall = time.monotonic() - t0
    for fd in list(open_fds):
        _drain(fd, bufs[fd], open_fds, None, until_eof=True)
    for fd in reads + [pidfd]:
        os.close(fd)
    out = {
        "status": killed or ("exited" if os.WIFEXITED(status) else "signaled"),
        "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status),
        "stdout": bytes(bufs[reads[0]][:STDOUT_CAP]).decode("utf-8", "replace"),
        "stderr": bytes(bufs[reads[1]][-2048:]).decode("utf-8", "replace"),
        "result": bytes(bufs[reads[2]][:RESULT_CAP]).decode("utf-8", "replace"),
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "wall_s": wall,
    }
    if out["status"] == "signaled" and out["code"] in (-9, -24) and out["cpu_s"] >= job["cpu_s"]:
        out["status"] = "cpu_limit"
    if job.get("read_file"):
        out["file"] = _read_marker_file(workdir, job["read_file"])
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def _drain(fd, buf, open_fds, poller, until_eof=False):
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            chunk = b""
        if not chunk:
            open_fds.discard(fd)
            if poller is not None:
                poller.unregister(fd)
            return False
        if len(buf) <= RESULT_CAP:
            buf += chunk
        if not until_eof and len(buf) > STDOUT_CAP:
            return True


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


def _preimport(setup: str, seen: set):
    """Import (in the server, once per distinct setup string) the modules a dataset's setup_code imports."""
    if setup in seen:
        return
    seen.add(setup)
    try:
        tree = ast.parse(setup)
    except SyntaxError:
        return
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            try:
                exec(compile(ast.Module([node], []), "<preimport>", "exec"), {})  # noqa: S102 - dataset imports
            except Exception:  # noqa: BLE001, S110 - a missing module fails later, inside the child
                pass


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
    layers = _enter_namespaces(libc, config["root"], is_root)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    machine = os.uname().machine
    ctx = {"libc": libc, "root": config["root"], "counter": 0, "server_pid": os.getpid(), "ro_dirs": _readonly_dirs(),
           "uid": SLOT_UID_BASE + config["slot"] if is_root else None,
           "landlock": landlock_abi(libc), "seccomp": seccomp_program(machine) if machine in _ARCH else b""}
    layers["uid_drop"] = "ok" if is_root else "unavailable (not root): the program runs as the trainer's uid"
    layers["landlock"] = f"ok (ABI {ctx['landlock']})" if ctx["landlock"] else \
        "unavailable: the program can read and write every file the server's uid can"
    layers["seccomp"] = "ok" if ctx["seccomp"] else f"unavailable (arch {machine}): fork/exec/sockets not denied"
    _probe(ctx, layers)
    gc.freeze()
    _send({"hello": True, "layers": layers, "python": sys.version.split()[0], "pid": os.getpid()})
    seen, buf = set(), b""
    while True:
        while b"\n" not in buf:
            chunk = os.read(0, 1 << 20)
            if not chunk:
                return
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        job = json.loads(line)
        _preimport(job.get("setup", ""), seen)
        _send(run_job(job, ctx))


def _probe(ctx, layers):
    """Check that the layers really apply in a child; a layer that fails here is reported and not used."""
    for layer in ("seccomp", "landlock"):
        if not ctx[layer]:
            continue
        saved = {k: ctx[k] for k in ("seccomp", "landlock")}
        ctx.update({k: (v if k == layer else (b"" if k == "seccomp" else 0)) for k, v in saved.items()})
        res = run_job({"kind": "probe", "setup": "", "code": "", "cpu_s": 5.0, "wall_s": 10.0}, ctx)
        ctx.update(saved)
        if res["result"] != "ok\n":
            layers[layer] = f"unavailable (probe failed: {res['stderr'].strip()[-300:]})"
            ctx[layer] = b"" if layer == "seccomp" else 0


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


_WARNED: set = set()


class Worker:
    """One fork-server. `run(job)` never raises for anything the program does: a dead or hung server is
    killed, restarted on the next call, and the job comes back with status 'worker_died'."""

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

    def run(self, job: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.stop()
            self.start()
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
            res = self._read(job["wall_s"] + 10.0)
        except (OSError, ValueError):
            res = None
        if res is None:
            self.stop()
            return {"status": "worker_died", "code": -1, "stdout": "", "stderr": "", "result": "", "cpu_s": 0.0,
                    "wall_s": 0.0}
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
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


class WorkerPool:
    """`n_workers` servers; `run_many(jobs)` runs them in parallel, one job per server at a time, in order."""

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

    def _run_one(self, job):
        w = self._idle.get()
        try:
            return w.run(job)
        finally:
            self._idle.put(w)

    def run_many(self, jobs: list[dict]) -> list[dict]:
        return list(self._exec.map(self._run_one, jobs))

    def close(self):
        self._exec.shutdown(wait=True)
        for w in self.workers:
            w.stop()


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
