"""The sandbox server: a pristine zygote that probes its layers, then keeps one supervisor forked per job. The client
runs this file alone, ``python -I -S server.py <config>``; stdlib and its server-side siblings only."""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__" and not __package__:
    # Run alone (-I: this directory is not on sys.path). Load the siblings as the package `sandbox` without running
    # its __init__ (which holds the trainer's client), all of them now, by the imports below, before the chroot.
    import types

    _package = types.ModuleType("sandbox")
    _package.__path__ = [os.path.dirname(os.path.abspath(__file__))]
    sys.modules["sandbox"] = _package
    __package__ = "sandbox"

from .confine import (  # after the package is set up (above)
    _ARCH,
    CLONE_NEWIPC,
    CLONE_NEWNS,
    CLONE_NEWPID,
    WORKDIR,
    _check,
    _enter_namespaces,
    _libc,
    _readonly_dirs,
    landlock_abi,
    seccomp_program,
)
from .supervisor import _job_process, _send, _supervise
from .workdir import _enter_job_namespaces, _remove_tree

SLOT_UID_BASE = 61000
PRELOAD = ("collections", "heapq", "bisect", "itertools", "functools", "math", "string", "re", "typing", "random",
           "operator", "datetime", "copy", "json", "decimal", "fractions", "statistics", "array", "dataclasses",
           "enum", "traceback", "cmath", "numbers", "textwrap", "unicodedata", "sys", "shutil", "stat", "ctypes",
           "select", "resource", "signal", "sysconfig")


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
            return _supervise(c, probe)
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


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
