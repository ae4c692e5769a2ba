"""The trainer's side of the sandbox: a pool of fork-servers (each runs ``server.py`` alone), restarted when one dies
or hangs, so that a job always comes back as a result."""

from __future__ import annotations

import json
import os
import sys

from .protocol import ANSWER_CAP

SERVER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "server.py")  # each server runs this file alone
# The supervisor restarts a job's wall deadline at 'D' (phase 2 gets its own), so a run may last 2 x wall_s (a
# program that writes 'D' itself just before the first deadline, then runs on): the client waits that plus this.
WAIT_MARGIN_S = 10.0


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
    """One fork-server. `run(job)` never raises: a dead or hung server is killed, restarted on the next
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
        self.proc = subprocess.Popen([server_python(), "-I", "-S", SERVER_FILE, cfg], env={}, cwd="/",
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self._buf, self.restarts = b"", self.restarts + 1
        hello = self._read(30.0)
        if not hello or not hello.get("hello"):
            self.stop()
            raise SandboxError(f"sandbox server {self.slot} did not start (got {hello!r}); run "
                               f"`{server_python()} -I -S {SERVER_FILE} '{cfg}'` by hand to see why")
        self.layers = hello["layers"]
        for layer, state in self.layers.items():
            if state != "ok" and not state.startswith("ok ") and layer not in _WARNED:
                _WARNED.add(layer)
                logging.getLogger(__name__).warning("SANDBOX LAYER MISSING: %s %s", layer, state)

    def run(self, job: dict) -> dict:
        """Run one job: one frame, the public job (code, calls, limits); no expected value is ever sent."""
        try:
            if self.proc is None or self.proc.poll() is not None:
                self.stop()
                self.start()
            frame = json.dumps(job).encode()
            self.proc.stdin.write(f"{len(frame)}\n".encode() + frame)
            self.proc.stdin.flush()
            res = self._read(2 * job["wall_s"] + WAIT_MARGIN_S)
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
    """`n_workers` servers; `run_many(jobs)` runs jobs in parallel, one job per server at a time, results in the
    input order."""

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
