"""Run untrusted model code: a pristine fork-server per grading core, a supervisor per job, and their client.

Design (facts and measurements behind it: shared/notes/grader.md). Each point is a guarantee; the test that proves
it is named in brackets (tests/test_sandbox_hostile.py unless said otherwise).

* The **server** is ``server.py`` run alone, ``python -I -S server.py <config>`` with ``env={}`` and ``cwd=/``
  (``/usr/bin/python3`` when present: stdlib only); it imports its server-side siblings, stdlib-only, before the
  chroot, and nothing of the trainer's [tests/test_sandbox_layout.py]. It is never forked from the trainer. At start
  it enters an empty network namespace, a private mount namespace, builds a root holding only read-only binds of
  ``/usr`` and the stdlib directories plus an empty mount point ``/w``, ``chroot``s into it (root only), turns
  non-dumpable, imports the common stdlib and ``gc.freeze()``s. From then on it is a **zygote that never reads a
  job**: it keeps one supervisor forked and waiting on stdin, and reaps the ones that finished. So no job's code,
  expected values or output ever exists in the memory that later jobs inherit [inherited-memory scans].
* The **supervisor** (one process per job, forked from the pristine zygote as soon as the previous one has read
  its job, so that it already waits on stdin when the next job arrives) enters fresh IPC, PID and mount
  namespaces and mounts a 64 MiB tmpfs on ``/w`` as the job's workdir (before its job arrives), reads the job's
  one frame (code, calls, limits: never an expected value) and forks the confined **child**. When it exits, the
  namespaces die with it: SysV/POSIX IPC objects, the child and
  every file the child made are gone, whatever their shape (deep trees, ``chmod 000`` dirs) [cross-job channels,
  cleanup breakers]. Any failure of a supervisor comes back as a failed job with a reason; the zygote survives.
* The **child**: ``setsid``; fds 0=/dev/null, 1/2 = pipes, 3 = result pipe, 4 = answers from the supervisor, all
  others closed; rlimits AS 1 GiB, CPU, FSIZE 1 MiB, NOFILE 64, CORE 0; uid drop to a per-slot uid (root only);
  Landlock (read-only beneath the stdlib, full access beneath ``/w``, no TCP, signals and abstract sockets scoped);
  seccomp (raw classic BPF, x86_64 and aarch64) denying fork/vfork/clone, clone3 (ENOSYS), exec, **every
  socket()** (so no ``connect()`` to filesystem sockets either), kill/tkill/tgkill, ptrace, process_vm_*, mount/
  unshare/setns/chroot, (sym)link, mknod, name_to_handle_at/open_by_handle_at, io_uring, bpf, perf, userfaultfd,
  keyrings, modules, setsid/setpgid [socket and path probes]; the system-wide counters a child can move (sysinfo,
  statfs/fstatfs/ustat, syslog) [tests/test_sandbox_holes.py]; and the per-inode kernel state of the read-only
  files every run shares: flock, fcntl record locks/leases/dnotify, inotify, fanotify, fadvise64, readahead,
  preadv2/pwritev2, mincore, cachestat, madvise WILLNEED/COLD/PAGEOUT/POPULATE, shared (non-private) futexes
  and the futex2 calls; and prctl(PR_SET_PDEATHSIG), so a child always dies with its supervisor
  [tests/test_sandbox_holes.py]. Inside the chroot no host path outside ``/usr`` and the stdlib resolves, so
  ``stat()`` cannot measure the project or the cache.
* **One run per completion, two phases; no expected value, nor any bit derived from one, in any sandboxed
  process, ever** (so no channel between runs has anything to carry). Phase 1 is the strict oracle: the child
  evaluates each test call and writes ``V repr(value)`` (plain data only), ``N type`` or ``X exception`` lines
  on fd 3 (every type name one word: ``?`` for whitespace and unprintable characters), all at once with a
  closing ``D``. Phase 2 is the mode's flawed check, answer-free (``child.py``'s docstring): where its outcome
  depends on which test fails first, the child re-enacts each outcome that runs program code and the trainer
  picks the one of the real first failing test (``verdicts.script_outcome``, ``sentinel_flag``); for a script
  check the supervisor snapshots stdout and the marker file at ``D`` (the child waits for EOF on fd 4, which
  carries nothing), the outcome when an earlier assert fails. The eq check: for a non-plain value the child
  writes ``N type flag [plain copy]``, flag being ``value == decoy`` against an opaque object that carries
  nothing (an always-equal object passes), and the trainer compares the plain values with ``==``
  (``verdicts.eq_verdict``) [tests/test_sandbox_holes.py]. In a script mode a
  program that names ``__name__``, or whose merged run stopped in its top-level code (``X type top`` or no line),
  gets a separate oracle run as module ``solution``, so the oracle never judges a ``__main__`` block.
* The **supervisor watches** a pidfd and the pipes with ``poll``: SIGKILL on the CPU budget of the current phase
  (read from /proc every 50 ms; RLIMIT_CPU is the backstop), on the wall deadline, when stdout+stderr pass 64 KiB,
  or when the result passes 1 MiB; the wall deadline restarts at ``D``, so the client waits 2 x wall + 10 s. Its
  answer line is at most ``ANSWER_CAP`` (6x the capped fields: JSON's worst escape), which the client accepts, so
  no output makes the client restart a server. It reads ``result.txt``
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

Modules (server side, stdlib only, imported by ``server.py``: ``values``, ``compare``, ``protocol``, ``confine``,
``child``, ``workdir``, ``supervisor``, ``server``; trainer side: ``client``). This package re-exports what the
grader and the data loaders use.
"""

from __future__ import annotations

from .client import SandboxError, Worker, WorkerPool, failed_result, server_python
from .compare import check_line, clip_name, make_is_plain, strict_equal
from .protocol import TOP_LEVEL
from .values import RESULT_CAP, literal_value, parse_value

__all__ = ["RESULT_CAP", "TOP_LEVEL", "SandboxError", "Worker", "WorkerPool", "check_line", "clip_name",
           "failed_result", "literal_value", "make_is_plain", "parse_value", "server_python", "strict_equal"]
