"""A real single-node SLURM cluster on localhost for the `slurm`-marked tests.

`slurm_cluster` (session scope) writes a slurm.conf into a fresh scratch directory, starts
munged (only if no munge daemon answers), slurmctld and slurmd, waits until the node is idle,
and at teardown cancels the cluster's jobs and stops exactly the daemons it started, by the pids
in their pid files. The configuration follows /work/shared/slurm/NOTES.md: 4 advertised CPUs on
2 real cores so 3-rank jobs fit, PMI-2 for the mpich wheel, short credential expiry so a
requeued job restarts in seconds, and finished jobs kept visible to `scontrol show job`.

Use it from a test module with ``from slurm_cluster import slurm_cluster  # noqa: F401``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Daemons live in sbin, which a CI user's PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

TERMINAL_STATES = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT",
}  # fmt: skip

SLURM_CONF = """\
ClusterName=evores-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
NodeName={host} NodeAddr=127.0.0.1 CPUs=4 RealMemory=4096 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: a requeued job restarts after ~12 s instead of ~3 min
AuthInfo=cred_expire=10
# no cgroups in the test container
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# CPUs=4 on 2 real cores: 3-rank jobs fit (with CPUs=2, sbatch -n 3 pends forever)
SlurmdParameters=config_overrides
# the mpich wheel speaks PMI-2; a wrong plugin silently gives n single-rank worlds
MpiDefault=pmi2
SchedulerParameters=sched_interval=2,bf_interval=5
KillWait=5
# finished jobs stay visible to scontrol (there is no sacct without slurmdbd)
MinJobAge=3600
ReturnToService=2
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={scratch}/jobcomp.log
StateSaveLocation={scratch}/state
SlurmdSpoolDir={scratch}/spool
SlurmctldPidFile={scratch}/slurmctld.pid
SlurmdPidFile={scratch}/slurmd.pid
SlurmctldLogFile={scratch}/slurmctld.log
SlurmdLogFile={scratch}/slurmd.log
"""


@dataclass
class SlurmCluster:
    """Handle on the running test cluster; every command runs with ``env`` (SLURM_CONF set)."""

    scratch: Path
    conf: Path
    env: dict[str, str]
    started: list[tuple[str, Path]] = field(default_factory=list)  # (daemon name, pid file)
    bring_up_seconds: float = 0.0

    def run(self, *command: str, timeout: float = 30, check: bool = True) -> str:
        result = subprocess.run(
            command, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
        return result.stdout

    def sbatch(self, args: list[str], env: dict[str, str] | None = None) -> int:
        """Submit a job (never --wait) and return its id."""
        environment = {**self.env, **(env or {})}
        result = subprocess.run(
            ["sbatch", "--parsable", *args],
            capture_output=True, text=True, env=environment, timeout=30, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} failed: {result.stderr.strip()}")
        return int(result.stdout.strip().split(";")[0])

    def job_info(self, job_id: int) -> dict[str, str]:
        """`scontrol show job -o` as a dict (JobState, ExitCode, Restarts, ...)."""
        return parse_job_record(self.run("scontrol", "show", "job", "-o", str(job_id)))

    def wait(self, job_id: int, timeout: float) -> str:
        """Poll until the job reaches a final state and return it; cancel it on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.job_info(job_id).get("JobState", "")
            if state in TERMINAL_STATES:
                return state
            time.sleep(0.5)
        info = self.job_info(job_id)
        self.run("scancel", str(job_id), check=False)
        raise TimeoutError(f"job {job_id} not finished after {timeout} s: {info}")

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.scratch / name
            text = path.read_text(errors="replace") if path.exists() else "(none)"
            parts.append(f"--- {name} (last 40 lines)\n" + "\n".join(text.splitlines()[-40:]))
        return "\n".join(parts)


def parse_job_record(line: str) -> dict[str, str]:
    """``Key=Value Key=Value ...`` -> dict; a token without ``=`` continues the last value."""
    info: dict[str, str] = {}
    key = None
    for token in line.split():
        name, sep, value = token.partition("=")
        if sep and name.replace("/", "").replace(":", "").isalnum():
            key, info[name] = name, value
        elif key is not None:
            info[key] += " " + token
    return info


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _job_environment(conf: Path) -> dict[str, str]:
    """This environment minus any outer SLURM/MPI launcher variables, plus our SLURM_CONF.

    sbatch exports it to the jobs, so the venv's python and the checkout are found there.
    """
    stale = ("SLURM_", "PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCAL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(stale)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), SEARCH_PATH])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["SLURM_CONF"] = str(conf)
    return env


def _munge_works(env: dict[str, str]) -> bool:
    result = subprocess.run(
        "munge -n | unmunge", shell=True, capture_output=True, env=env, timeout=10, check=False
    )
    return result.returncode == 0


def _start_munge(cluster: SlurmCluster) -> None:
    """Start munged unless one already answers (the pid file is /run/munge/munged.pid)."""
    if _munge_works(cluster.env):
        return
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    subprocess.run(
        ["runuser", "-u", "munge", "--", shutil.which("munged", path=SEARCH_PATH), "--force"],
        check=True, timeout=10, env=cluster.env,
    )  # fmt: skip
    cluster.started.append(("munged", run_dir / "munged.pid"))
    _wait_for(lambda: _munge_works(cluster.env), 10, "munged to answer", cluster)


def _wait_for(predicate, timeout: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{cluster.logs()}")
        time.sleep(0.1)


def _node_idle(cluster: SlurmCluster) -> bool:
    states = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).split()
    return states == ["idle"]


def _start_daemons(cluster: SlurmCluster, host: str) -> None:
    conf = str(cluster.conf)
    for name, command in (
        ("slurmctld", ["slurmctld", "-f", conf, "-c"]),
        ("slurmd", ["slurmd", "-f", conf, "-N", host]),
    ):
        command[0] = shutil.which(command[0], path=SEARCH_PATH)
        # Each daemonizes and writes its pid file; remember it before it could fail later.
        cluster.started.append((name, cluster.scratch / f"{name}.pid"))
        result = subprocess.run(command, capture_output=True, text=True, timeout=30,
                                env=cluster.env, check=False)  # fmt: skip
        if result.returncode != 0:
            pytest.fail(f"{name} did not start: {result.stderr.strip()}\n{cluster.logs()}")
    _wait_for(lambda: _node_idle(cluster), 30, "the node to become idle", cluster)


def _stop(name: str, pid_file: Path, timeout: float = 10) -> None:
    """SIGTERM the daemon named in ``pid_file`` if that pid still is ``name``; wait for it."""
    try:
        pid = int(pid_file.read_text().split()[0])
        if Path(f"/proc/{pid}/comm").read_text().strip() != name:
            return  # gone, and the pid reused by something else: not ours to signal
    except (OSError, ValueError, IndexError):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state == "Z":  # exited; its parent (init) reaps it a moment later
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _cancel_jobs(cluster: SlurmCluster) -> None:
    """Cancel what is left so no slurmstepd outlives its slurmd (bounded wait)."""
    jobs = cluster.run("squeue", "-h", "-o", "%i", check=False).split()
    if not jobs:
        return
    cluster.run("scancel", *jobs, check=False)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and cluster.run("squeue", "-h", check=False).strip():
        time.sleep(0.5)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """Bring up a single-node SLURM cluster for the session; yield a :class:`SlurmCluster`."""
    missing = [c for c in ("slurmctld", "slurmd", "sbatch", "munge") if not shutil.which(
        c, path=SEARCH_PATH)]  # fmt: skip
    if missing:
        pytest.skip(f"SLURM is not installed (no {', '.join(missing)}); run .ci/install-slurm")
    if os.geteuid() != 0:
        pytest.skip("the test SLURM cluster runs its daemons as root; run the tests as root")
    scratch = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (scratch / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    conf = scratch / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            host=host, scratch=scratch, ctld_port=_free_port(), slurmd_port=_free_port()
        )
    )
    cluster = SlurmCluster(scratch=scratch, conf=conf, env=_job_environment(conf))
    try:
        started = time.monotonic()
        _start_munge(cluster)
        _start_daemons(cluster, host)
        cluster.bring_up_seconds = time.monotonic() - started
        yield cluster
    finally:
        if any(name == "slurmctld" for name, _ in cluster.started):
            _cancel_jobs(cluster)
        for name, pid_file in reversed(cluster.started):
            _stop(name, pid_file)
