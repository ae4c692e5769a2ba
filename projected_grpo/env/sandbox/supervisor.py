"""The supervisor of one job: reads the job's one frame, forks the confined child, watches it, snapshots a script
check's phase 1, and sends the server's one answer line. Stdlib only (server side). It never receives an expected
value: the trainer computes everything that depends on one, after the run."""

from __future__ import annotations

import json
import os

from .child import _child
from .protocol import PHASE2_CAP, PHASE2_KEEP, SCRIPT_CHECKS, STDERR_KEEP, STDOUT_CAP
from .values import RESULT_CAP
from .workdir import _enter_job_namespaces, _read_marker_file, _remove_tree


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


def _supervise(ctx, job) -> dict:
    """Fork the confined child for `job`, watch it (per-phase CPU budget, wall deadline, output caps), at its 'D'
    snapshot a script check's stdout and marker file and close fd 4 (the child's go: EOF, nothing written), reap
    it, and describe what the kernel saw."""
    import select
    import time

    pipes = [os.pipe() for _ in range(4)]  # stdout, stderr, result (child -> here), go (EOF, here -> child)
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(job, [pipes[0][1], pipes[1][1], pipes[2][1], pipes[3][0]], ctx)
    for fd in (pipes[0][1], pipes[1][1], pipes[2][1], pipes[3][0]):
        os.close(fd)
    snapshots = job.get("kind") == "graded" and job.get("check") in SCRIPT_CHECKS
    out_fd, err_fd, res_fd, ans_fd = pipes[0][0], pipes[1][0], pipes[2][0], pipes[3][1]
    for fd in (out_fd, err_fd, res_fd):
        os.set_blocking(fd, False)
    bufs = {out_fd: bytearray(), err_fd: bytearray(), res_fd: bytearray()}
    caps = {out_fd: STDOUT_CAP + 1, err_fd: STDOUT_CAP + 1, res_fd: RESULT_CAP + 1}
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    for fd in (out_fd, err_fd, res_fd, pidfd):
        poller.register(fd, select.POLLIN | select.POLLHUP)
    open_fds, killed, ans_open, snap = {out_fd, err_fd, res_fd}, None, True, {}
    scan, p1_end, p2_start, cpu1 = 0, None, None, None
    budget, cpu0, deadline = job["cpu_s"], 0.0, t0 + job["wall_s"]

    def pull(fd, max_chunks=16):
        if fd in open_fds and not _drain(fd, bufs[fd], caps[fd], max_chunks):
            open_fds.discard(fd)
            poller.unregister(fd)

    def on_result():
        """Find the line 'D' (end of phase 1; linear: each byte is scanned once); snapshot, then let the child go."""
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
            if snapshots:  # the child waits on fd 4: all it printed in phase 1 is in the pipes now
                for fd in (out_fd, err_fd):
                    pull(fd, max_chunks=64)  # bounded even if a program that forged 'D' keeps writing
                snap["stdout1"] = bytes(bufs[out_fd][:STDOUT_CAP]).decode("utf-8", "replace")
                if job.get("read_file"):
                    snap["file1"] = _read_marker_file(ctx["workdir"], job["read_file"])
            if ans_open:  # the go: EOF, the same for every run (it carries nothing)
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
            else:
                pull(fd)
        on_result()
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
    out.update(snap)
    return out


def _read_exact(fd: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError(f"stdin closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def _job_process(ctx, release_fd: int) -> int:
    """The supervisor's whole life: read one job (header `<bytes>\\n`, then the job's JSON) from stdin without
    reading past it, isolate, run, answer one JSON line, then tell the zygote (one byte on `release_fd`) to fork
    the next supervisor. Returns its exit status: 0 answered, 3 stdin closed (the zygote then exits)."""
    ctx["libc"].prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG SIGKILL: die with the zygote
    # With a private tmpfs per supervisor, its namespaces are made before the job arrives (off the job's path),
    # and the next supervisor is forked as soon as this one has read its frame (it then prepares while this job
    # runs). With a shared workdir (no job tmpfs) both wait: one workdir at a time.
    early, setup_error = bool(ctx["jobfs"]), None
    if early:
        try:
            _enter_job_namespaces(ctx)
        except Exception as e:  # noqa: BLE001 - reported as this job's answer, once the job is read
            setup_error = e
    header = b""
    while not header.endswith(b"\n"):
        c = os.read(0, 1)
        if not c:
            return 3
        header += c
        if len(header) > 40:
            raise ValueError(f"bad frame header {header[:40]!r}")
    job = json.loads(_read_exact(0, int(header)))
    if early:
        os.write(release_fd, b"r")
        if setup_error is not None:
            raise setup_error
    else:
        _enter_job_namespaces(ctx)
    try:
        res = _supervise(ctx, job)
    finally:
        if not ctx["jobfs"]:
            _remove_tree(ctx["workdir"])
    _send(res)
    if not early:
        os.write(release_fd, b"r")
    return 0


def _send(obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(1, data):]
