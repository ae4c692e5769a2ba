"""A real single-node SLURM cluster on localhost, for the `slurm` tests (Debian, root).

`start()` installs slurm-wlm + munge with apt-get when they are missing, writes a slurm.conf for this
machine's real CPUs/memory under ROOT (clients find it through $SLURM_CONF; /etc/slurm is not touched),
starts munged (unless one already answers), slurmctld and slurmd as child processes in the foreground,
and waits until the node is idle. `stop()` stops exactly those processes, by pid.

There is no accounting storage, so the real `sacct` fails and submitit would wait forever on a job that
dies without writing its result pickle. `start()` therefore puts a `sacct` stand-in first on PATH that
answers submitit's `sacct -o JobID,State,NodeList --parsable2 -j ID ...` from `scontrol show job -o`
(`python tests/slurm_cluster.py sacct ...`, see `sacct_main`).

Facts behind the config (verified, /work/shared/notes/slurm/REPORT.md): cgroup plugins fail in this VM
(linuxproc + task/none); a requeued job may restart only after cred_expire (10 s here, default 120 s);
EnforcePartLimits=ALL rejects impossible requests instead of leaving them PENDING forever; the "urgent"
partition preempts the default one with USR2 (preempt_send_user_signal), like a real cluster.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(os.environ.get("PG_SLURM_ROOT", "/tmp/pg-slurm"))
PARTITION = "debug"
BINARIES = ["slurmctld", "slurmd", "sinfo", "sbatch", "srun", "scontrol", "scancel", "munged", "munge", "unmunge"]
os.environ["PATH"] += ":/usr/sbin:/sbin"  # the daemons live in sbin


class ClusterUnavailable(RuntimeError):
    """This machine cannot install or start SLURM (tests skip with this reason)."""


@dataclass
class Cluster:
    root: Path
    node: str
    cpus: int
    mem_mb: int
    partition: str = PARTITION
    procs: list = field(default_factory=list)  # (name, Popen) started by us, stopped in reverse order

    @property
    def env(self) -> dict:
        """Environment for sbatch/scontrol/submitit: our slurm.conf and the sacct stand-in first on PATH."""
        return {
            **os.environ,
            "SLURM_CONF": str(self.root / "slurm.conf"),
            "PATH": f"{self.root}/bin:{os.environ['PATH']}",
        }

    def run(self, *cmd: str, timeout: float = 30, check: bool = True) -> str:
        p = subprocess.run(cmd, env=self.env, check=False, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stdout}{p.stderr}")
        return p.stdout

    def jobs(self) -> list[dict]:
        """All jobs slurmctld knows (finished ones for MinJobAge), one dict per job/array task."""
        return [
            parse_job_line(line)
            for line in self.run("scontrol", "show", "job", "-o").splitlines()
            if line.startswith("JobId=")
        ]

    def cancel_all(self) -> None:
        ids = {
            j["JobId"]
            for j in self.jobs()
            if j["JobState"] in ("PENDING", "RUNNING", "REQUEUED", "SUSPENDED", "CONFIGURING")
        }
        if ids:
            self.run("scancel", *sorted(ids), check=False)

    def logs(self) -> str:
        """Tails of the daemon logs, for failure messages."""
        return "".join(
            f"\n--- {p}\n" + "".join(p.read_text(errors="replace").splitlines(True)[-30:])
            for p in sorted((self.root / "log").glob("*.log"))
        )


def unavailable_reason() -> str | None:
    if sys.platform != "linux":
        return "SLURM tests need Linux"
    if os.geteuid() != 0:
        return "SLURM tests need root (they install packages and start slurmctld/slurmd)"
    if not all(shutil.which(b) for b in BINARIES) and not shutil.which("apt-get"):
        return "slurm/munge are not installed and there is no apt-get to install them"
    return None


def _sh(*cmd: str, timeout: float = 60, **kw) -> str:
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, **kw)
    if p.returncode != 0:
        raise ClusterUnavailable(f"{' '.join(cmd)} exited {p.returncode}: {p.stdout[-2000:]}{p.stderr[-2000:]}")
    return p.stdout


def install() -> None:
    """apt-get install slurm-wlm munge (9 packages with --no-install-recommends), daemons not auto-started."""
    if all(shutil.which(b) for b in BINARIES):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")  # exit 101 = maintainer scripts must not start daemons
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        _sh("apt-get", "update", "-qq", timeout=300, env=env)
        _sh("apt-get", "install", "-y", "-qq", "--no-install-recommends", "slurm-wlm", "munge", timeout=600, env=env)
    finally:
        if ours:
            policy.unlink()
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing:
        raise ClusterUnavailable(f"apt-get install slurm-wlm munge did not provide {missing}")


def _munge_ok() -> bool:
    p = subprocess.run("munge -n </dev/null | unmunge", shell=True, check=False, capture_output=True, timeout=10)
    return p.returncode == 0


def _start_munged(c: Cluster) -> None:
    if _munge_ok():
        return  # someone else's munged: use it, never stop it
    for d, mode in (("/etc/munge", 0o700), ("/var/log/munge", 0o700), ("/var/lib/munge", 0o711), ("/run/munge", 0o755)):
        _sh("install", "-d", "-o", "munge", "-g", "munge", "-m", f"{mode:o}", d)
    key = Path("/etc/munge/munge.key")
    if not key.exists() or key.stat().st_size == 0:
        key.write_bytes(os.urandom(1024))
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)  # munged refuses a key readable by others
    for stale in ("munged.pid", "munge.socket.2", "munge.socket.2.lock"):
        Path("/run/munge", stale).unlink(missing_ok=True)
    log = open(c.root / "log" / "munged.out", "w")  # noqa: SIM115 - stays open for the child process
    c.procs.append(
        (
            "munged",
            subprocess.Popen(
                ["munged", "-F"],
                user="munge",
                group="munge",
                extra_groups=[],
                stdout=log,
                stderr=log,
                start_new_session=True,
            ),
        )
    )
    _wait(_munge_ok, 10, "munged did not answer", c)


def _hardware() -> dict:
    line = _sh("slurmd", "-C").splitlines()[0]
    hw = dict(re.findall(r"(\w+)=(\S+)", line))
    return hw


def write_conf(c: Cluster, hw: dict) -> None:
    topo = " ".join(
        f"{k}={hw[k]}" for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore") if k in hw
    )
    r = c.root
    (r / "slurm.conf").write_text(f"""# generated by tests/slurm_cluster.py
ClusterName=pgtest
SlurmctldHost={c.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=3600
AuthInfo=cred_expire=10
JobRequeue=1
EnforcePartLimits=ALL
MailProg=/bin/true
NodeName={c.node} NodeAddr=127.0.0.1 NodeHostname={c.node} {topo} RealMemory={c.mem_mb} State=UNKNOWN
PartitionName={c.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=10
PartitionName=urgent Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=100 PreemptMode=OFF
""")
    sacct = r / "bin" / "sacct"
    sacct.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" sacct "$@"\n')
    sacct.chmod(0o755)


def _port_busy(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(pred, timeout: float, what: str, c: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        for name, p in c.procs:
            if p.poll() is not None:
                raise ClusterUnavailable(f"{name} exited with {p.returncode}{c.logs()}")
        if time.monotonic() > deadline:
            raise ClusterUnavailable(f"{what} after {timeout:.0f}s{c.logs()}")
        time.sleep(0.3)


def start(root: Path = ROOT) -> Cluster:
    """Install if needed, start munged/slurmctld/slurmd, wait for an idle node and a working `srun`."""
    install()
    for port in (6817, 6818):
        if _port_busy(port):
            raise ClusterUnavailable(f"port {port} is in use: another slurmctld/slurmd runs on this machine")
    shutil.rmtree(root, ignore_errors=True)  # clean state: job ids restart at 1
    for d in ("state", "spool", "log", "run", "bin"):
        (root / d).mkdir(parents=True)
    hw = _hardware()
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    # RealMemory a bit below the detected figure, or slurmd drains the node ("Low RealMemory")
    c = Cluster(root, node, int(hw["CPUs"]), int(hw["RealMemory"]) * 9 // 10)
    write_conf(c, hw)
    try:
        _start_munged(c)
        env = c.env
        for name in ("slurmctld", "slurmd"):
            args = [name, "-D", "-f", str(root / "slurm.conf")] + (["-c"] if name == "slurmctld" else [])
            log = open(root / "log" / f"{name}.out", "w")  # noqa: SIM115 - stays open for the child process
            c.procs.append((name, subprocess.Popen(args, env=env, stdout=log, stderr=log, start_new_session=True)))
        _wait(
            lambda: c.run("sinfo", "-h", "-n", node, "-o", "%t", check=False).strip() in ("idle", "mix", "alloc"),
            60,
            "node not idle",
            c,
        )
        c.run("srun", "-N1", "-n1", "-t", "1", "-J", "pg-smoke", "true", timeout=60)
    except BaseException:
        stop(c)
        raise
    return c


def stop(c: Cluster) -> None:
    """Cancel jobs, then stop the daemons WE started, by pid (SIGTERM, SIGKILL after 15 s)."""
    if any(n == "slurmctld" and p.poll() is None for n, p in c.procs):
        try:
            c.cancel_all()
            # let slurmd reap the jobs' steps before it goes (else slurmstepd/job processes outlive it)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(j["JobState"] in ("RUNNING", "COMPLETING") for j in c.jobs()):
                time.sleep(0.5)
        except Exception as e:  # noqa: BLE001 - teardown goes on; the daemons must still be stopped
            print(f"slurm_cluster.stop: scancel failed: {e}", file=sys.stderr)
    for name, p in reversed(c.procs):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
    c.procs.clear()


# ---------------------------------------------------------------------------------------------------
# sacct stand-in


def parse_job_line(line: str) -> dict:
    """One `scontrol show job -o` line -> {key: value} (values with spaces are cut; we read none of them)."""
    return dict(tok.split("=", 1) for tok in line.split() if "=" in tok)


def sacct_rows(scontrol_output: str) -> list[tuple[str, str, str]]:
    """(JobID, State, NodeList) as sacct prints them: `A_i` for array tasks, `A_[2-4%2]` for pending ranges."""
    rows = []
    for line in scontrol_output.splitlines():
        if not line.startswith("JobId="):
            continue
        j = parse_job_line(line)
        jid = j["JobId"]
        if "ArrayJobId" in j and "ArrayTaskId" in j:
            t = j["ArrayTaskId"]
            jid = f"{j['ArrayJobId']}_{t}" if t.isdigit() else f"{j['ArrayJobId']}_[{t}]"
        nodes = j.get("NodeList", "")
        rows.append((jid, j["JobState"], "None assigned" if nodes in ("", "(null)") else nodes))
    return rows


def sacct_main(argv: list[str]) -> int:
    """Only what submitit calls: `sacct -o JobID,State,NodeList --parsable2 -j ID [-j ID ...]`."""
    ids, fields, i = [], "JobID,State,NodeList", 0
    while i < len(argv):
        a = argv[i]
        if a in ("-j", "--jobs"):
            ids += argv[i + 1].split(",")
            i += 2
        elif a in ("-o", "--format"):
            fields = argv[i + 1]
            i += 2
        elif a in ("-P", "--parsable2"):
            i += 1
        else:
            print(f"sacct stand-in: unsupported argument {a!r} (argv {argv})", file=sys.stderr)
            return 2
    if fields != "JobID,State,NodeList":
        print(f"sacct stand-in: only -o JobID,State,NodeList is supported, got {fields!r}", file=sys.stderr)
        return 2
    out = ""
    for jid in ids or [""]:
        # an unknown id (not yet known, or purged) prints nothing: submitit then reports UNKNOWN
        p = subprocess.run(
            ["scontrol", "show", "job", "-o", *([jid] if jid else [])],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        out += p.stdout if p.returncode == 0 else ""
    print("JobID|State|NodeList")
    for row in sacct_rows(out):
        print("|".join(row))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["sacct"]:
        sys.exit("usage: slurm_cluster.py sacct -o JobID,State,NodeList --parsable2 -j ID ...")
    sys.exit(sacct_main(sys.argv[2:]))
