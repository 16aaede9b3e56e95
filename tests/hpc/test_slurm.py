"""evores.hpc.environment (job environment, GPU binding) and evores.hpc.sbatch (the batch scripts,
rendered and
stored); the batch scripts on real SLURM.

The `slurm`-marked tests bring up a single-node cluster (tests/slurm_cluster.py) and skip when
SLURM is not installed (.ci/install-slurm installs it). Regenerate the stored expected script
only deliberately: ``python tests/hpc/test_slurm.py --regenerate``.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_same_result

from evores import config as configuration
from evores.core.errors import ConfigError
from evores.core.exits import EXIT_CHECKPOINTED
from evores.hpc import environment as slurm
from evores.hpc import sbatch

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = ROOT / "tests" / "data" / "expected.sbatch"
SCRIPTS = {
    "single": "evores.sbatch",
    "multinode": "evores-multinode.sbatch",
    "cpu": "evores-cpu.sbatch",
}

# A config exercising every flag: quoting (a space), GPUs, extras with and without a value.
EXPECTED_CONFIG = {
    "slurm": {
        "partition": "gpu",
        "account": "proj one",
        "time": "02:00:00",
        "gpus_per_node": 4,
        "cpus_per_task": 8,
        "signal_seconds": 300,
        "extra": ["--qos=high", "--exclusive"],
    }
}


def render_expected() -> str:
    return sbatch.render_sbatch(
        EXPECTED_CONFIG, config_path="/data/my run.toml", run_dir="runs/exp 1"
    )


# --------------------------------------------------------------------------- environment

STEP = {  # task 3 of a 5-task step: 3 tasks on node 0, 2 on node 1
    "SLURM_JOB_ID": "42",
    "SLURM_RESTART_COUNT": "1",
    "SLURM_PROCID": "3",
    "SLURM_NTASKS": "5",
    "SLURM_NODEID": "1",
    "SLURM_LOCALID": "0",
    "SLURM_STEP_TASKS_PER_NODE": "3,2",
}


def test_environment_of_a_task():
    env = slurm.SlurmEnvironment.from_env(STEP)
    assert env.in_job and env.job_id == 42 and env.restart_count == 1
    assert (env.procid, env.ntasks, env.node_id, env.local_id, env.local_tasks) == (3, 5, 1, 0, 2)


def test_environment_outside_slurm():
    env = slurm.SlurmEnvironment.from_env({"PATH": "/bin"})
    assert not env.in_job and env.job_id is None
    assert (env.procid, env.ntasks, env.local_id, env.local_tasks, env.restart_count) == (
        0, 1, 0, 1, 0
    )  # fmt: skip


def test_job_id_alone_under_either_name():
    assert slurm.job_id({"SLURM_JOB_ID": "42", "SLURM_PROCID": "x"}) == 42
    assert slurm.job_id({"SLURM_JOBID": "9"}) == 9
    assert slurm.job_id({"PATH": "/bin"}) is None
    with pytest.raises(ConfigError, match="SLURM_JOB_ID='4 2'"):
        slurm.job_id({"SLURM_JOB_ID": "4 2"})


def test_tasks_per_node_repeat_syntax():
    env = {**STEP, "SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "3", "SLURM_NTASKS": "7"}
    assert slurm.SlurmEnvironment.from_env(env).local_tasks == 1


@pytest.mark.parametrize(
    "change, words",
    [
        ({"SLURM_LOCALID": "2"}, "SLURM_LOCALID=2"),
        ({"SLURM_PROCID": "5"}, "SLURM_PROCID=5"),
        ({"SLURM_PROCID": "x"}, "SLURM_PROCID='x'"),
        ({"SLURM_NTASKS": "0"}, "SLURM_NTASKS='0'"),
        ({"SLURM_JOB_ID": "12a"}, "SLURM_JOB_ID='12a'"),
        ({"SLURM_RESTART_COUNT": "-1"}, "SLURM_RESTART_COUNT='-1'"),
        ({"SLURM_NODEID": "2"}, "SLURM_NODEID=2"),
        ({"SLURM_STEP_TASKS_PER_NODE": "3;2"}, "'3;2'"),
        ({"SLURM_STEP_TASKS_PER_NODE": None, "SLURM_NTASKS_PER_NODE": "1", "SLURM_LOCALID": "1"},
         "SLURM_LOCALID=1"),
    ],
)  # fmt: skip
def test_inconsistent_environment_is_one_clear_line(change, words):
    env = {k: v for k, v in {**STEP, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        slurm.SlurmEnvironment.from_env(env)
    message = str(caught.value)
    assert words in message and "\n" not in message


# --------------------------------------------------------------------------- GPU of a rank


def task(procid: int, ntasks: int, node: int, local: int, per_node: str, **extra: str) -> dict:
    env = {
        "SLURM_JOB_ID": "7", "SLURM_PROCID": str(procid), "SLURM_NTASKS": str(ntasks),
        "SLURM_NODEID": str(node), "SLURM_LOCALID": str(local),
        "SLURM_STEP_TASKS_PER_NODE": per_node,
    }  # fmt: skip
    return {**env, **extra}


def test_gpu_of_each_rank_on_the_driver_node():
    gpus = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    found = [slurm.local_gpu_index(task(r, 5, 0, r, "5", **gpus)) for r in range(5)]
    assert found == [None, 0, 1, 2, 3]  # the driver takes none; every GPU gets one rank


def test_gpu_of_each_rank_on_another_node():
    gpus = {"CUDA_VISIBLE_DEVICES": "0,1"}
    found = [slurm.local_gpu_index(task(3 + r, 5, 1, r, "3,2", **gpus)) for r in range(2)]
    assert found == [0, 1]


def test_gpu_bound_per_task_is_device_zero():
    assert slurm.local_gpu_index(task(2, 3, 0, 2, "3", CUDA_VISIBLE_DEVICES="3")) == 0


def test_serial_run_uses_its_gpu():
    assert slurm.local_gpu_index(task(0, 1, 0, 0, "1", CUDA_VISIBLE_DEVICES="0,1")) == 0


@pytest.mark.parametrize("visible", ["", "NoDevFiles"])
def test_no_gpu_allocated(visible):
    assert slurm.local_gpu_index(task(1, 3, 0, 1, "3", CUDA_VISIBLE_DEVICES=visible)) is None


def test_outside_slurm_no_gpu_is_chosen():
    assert slurm.local_gpu_index({"CUDA_VISIBLE_DEVICES": "0,1"}) is None


def test_unchecked_without_visible_devices():
    assert slurm.local_gpu_index(task(2, 3, 0, 2, "3")) == 1


def test_more_ranks_than_gpus_is_an_error_not_a_modulo():
    with pytest.raises(ConfigError, match="needs GPU 2 but only 2 are visible"):
        slurm.local_gpu_index(task(3, 4, 0, 3, "4", CUDA_VISIBLE_DEVICES="0,1"))


def test_evaluations_per_gpu_stacks_ranks_k_at_a_time_on_the_driver_node():
    gpus = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    found = [
        slurm.local_gpu_index(task(r, 9, 0, r, "9", **gpus), evaluations_per_gpu=2)
        for r in range(9)
    ]
    assert found == [None, 0, 0, 1, 1, 2, 2, 3, 3]


def test_evaluations_per_gpu_on_another_node():
    gpus = {"CUDA_VISIBLE_DEVICES": "0,1"}
    found = [
        slurm.local_gpu_index(task(4 + r, 10, 1, r, "4,6", **gpus), evaluations_per_gpu=3)
        for r in range(6)
    ]
    assert found == [0, 0, 0, 1, 1, 1]


def test_more_ranks_than_k_per_gpu_is_an_error():
    env = task(5, 6, 0, 5, "6", CUDA_VISIBLE_DEVICES="0,1")
    assert slurm.local_gpu_index(env, evaluations_per_gpu=3) == 1
    with pytest.raises(ConfigError, match=r"needs GPU 2 .* 2 x GPUs \+ 1"):
        slurm.local_gpu_index(env, evaluations_per_gpu=2)


# --------------------------------------------------------------------------- rendering


def test_render_matches_the_stored_script():
    assert render_expected() == EXPECTED.read_text()


def test_render_multinode_places_the_driver_slot_per_node():
    script = sbatch.render_sbatch(
        {"slurm": {"nodes": 3, "gpus_per_node": 2}}, config_path="c.toml", run_dir=None
    )
    assert "#SBATCH --nodes=3\n" in script and "#SBATCH --ntasks-per-node=3\n" in script
    assert "--distribution=arbitrary" in script and "set -- c.toml '' \"$@\"" in script


def test_extra_flags_replace_generated_ones():
    script = sbatch.render_sbatch(
        {"slurm": {"extra": ["--output=logs/%j.txt"]}}, config_path="c.toml", run_dir="r"
    )
    assert "#SBATCH --output=logs/%j.txt\n" in script and "evores-%j.out" not in script


@pytest.mark.parametrize(("nodes", "flag"), [(1, "ntasks=9"), (2, "ntasks-per-node=9")])
def test_render_counts_k_ranks_per_gpu_plus_the_driver(nodes, flag):
    config = {"slurm": {"nodes": nodes, "gpus_per_node": 4}, "train": {"evaluations_per_gpu": 2}}
    script = sbatch.render_sbatch(config, config_path="c.toml", run_dir=None)
    assert f"#SBATCH --{flag}\n" in script and "#SBATCH --gpus-per-node=4\n" in script


def test_workers_per_node_may_fill_k_ranks_per_gpu_not_more():
    assert configuration.slurm_settings({"gpus_per_node": 2, "workers_per_node": 4}, 2)
    with pytest.raises(ConfigError, match="2 x 2"):
        configuration.slurm_settings({"gpus_per_node": 2, "workers_per_node": 5}, 2)
    with pytest.raises(ConfigError, match="train.evaluations_per_gpu must be >= 1"):
        configuration.load(overrides=["train.evaluations_per_gpu=0"])


# Records the MPS daemon's start (-d) and the command it is sent on stdin (quit).
MPS_CONTROL = """\
if [ "$1" = -d ]; then echo "mps start" >> "$LOG"; else echo "mps $(cat)" >> "$LOG"; fi
"""


def run_body(tmp_path: Path, mode: str, env: dict, with_mps: bool) -> tuple[str, str]:
    """Run the batch script of ``mode`` with srun, scontrol and (``with_mps``) the MPS control
    replaced by recorders; returns what they recorded and the script's stderr."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    fake_command(bin_dir, "srun", 'echo "srun pipe=${CUDA_MPS_PIPE_DIRECTORY:-}" >> "$LOG"\n')
    fake_command(bin_dir, "scontrol", "echo node-a; echo node-b\n")
    if with_mps:
        fake_command(bin_dir, "nvidia-cuda-mps-control", MPS_CONTROL)
    script = tmp_path / "job.sbatch"
    script.write_text(f"#!/bin/bash\npython=python\n{sbatch.script_body(mode)}")
    path = f"{bin_dir}:/usr/bin:/bin"
    base = {"PATH": path, "LOG": str(log), "TMPDIR": str(tmp_path), "SLURM_JOB_ID": "5"}
    result = subprocess.run(
        ["bash", str(script), "c.toml", str(tmp_path / "run")], env={**base, **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return log.read_text(), result.stderr


def test_script_runs_shared_gpus_under_mps_and_stops_it(tmp_path):
    env = {"SLURM_NTASKS": "9", "SLURM_GPUS_ON_NODE": "4"}
    calls, _ = run_body(tmp_path, "single", env, with_mps=True)
    pipe = tmp_path / "evores-mps.5" / "pipe"
    assert calls.splitlines() == ["mps start", f"srun pipe={pipe}", "mps quit"]


@pytest.mark.parametrize(
    ("mode", "env", "words"),
    [
        ("single", {"SLURM_NTASKS": "9", "SLURM_GPUS_ON_NODE": "4"}, "no nvidia-cuda-mps-control"),
        ("multinode", {"SLURM_NTASKS_PER_NODE": "5", "SLURM_GPUS_ON_NODE": "2",
                       "SLURM_JOB_NODELIST": "node-[a-b]"}, "not started on several nodes"),
    ],
)  # fmt: skip
def test_script_without_mps_says_the_ranks_time_share(tmp_path, mode, env, words):
    calls, stderr = run_body(tmp_path, mode, env, with_mps=mode != "single")
    assert calls.splitlines() == ["srun pipe="] and words in stderr


def test_script_starts_no_mps_for_one_rank_per_gpu(tmp_path):
    env = {"SLURM_NTASKS": "5", "SLURM_GPUS_ON_NODE": "4"}
    calls, stderr = run_body(tmp_path, "single", env, with_mps=True)
    assert calls.splitlines() == ["srun pipe="] and "MPS" not in stderr


FAKE_RUN = """\
# rank 0 as the signals find it: it checkpoints and exits 75 on USR1 or TERM
trap 'echo "srun got USR1" >> "$LOG"; exit 75' USR1
trap 'echo "srun got TERM" >> "$LOG"; exit 75' TERM
mkdir -p "$RUN_DIR"
if [ -n "$FINISH" ]; then echo '{}' > "$RUN_DIR/summary.json"; fi
echo "started $$" >> "$LOG"
for _ in $(seq 200); do [ -e "$LOG.signalled" ] && exit 0; sleep 0.1; done
"""
FAKE_SCONTROL = """\
if [ "$1" = show ]; then echo "JobId=5 JobState=COMPLETING Reason=$REASON"; exit 0; fi
echo "scontrol $*" >> "$LOG"
"""


def signal_the_job(tmp_path: Path, signum: int, finished: bool = False, reason: str = "None"):
    """Run the batch script over a fake srun (rank 0) and scontrol, send ``signum`` as SLURM
    would (USR1 to the shell; TERM to the shell and every rank); what the fakes recorded, and
    the script's stdout and stderr."""
    bin_dir, log, run_dir = tmp_path / "bin", tmp_path / "calls.log", tmp_path / "run"
    bin_dir.mkdir()
    fake_command(bin_dir, "srun", FAKE_RUN)
    fake_command(bin_dir, "scontrol", FAKE_SCONTROL)
    script = tmp_path / "job.sbatch"
    script.write_text(f"#!/bin/bash\npython=python\n{sbatch.script_body()}")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "RUN_DIR": str(run_dir),
           "SLURM_JOB_ID": "5", "FINISH": "1" if finished else "", "REASON": reason}  # fmt: skip
    job = subprocess.Popen(
        ["bash", str(script), "c.toml", str(run_dir)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not log.exists() or "started" not in log.read_text():
        assert time.monotonic() < deadline and job.poll() is None, "the fake srun never started"
        time.sleep(0.05)
    job.send_signal(signum)
    if signum == signal.SIGTERM:
        os.kill(int(log.read_text().split("started ")[1].split()[0]), signal.SIGTERM)
    Path(f"{log}.signalled").touch()  # the fake srun may end now
    stdout, stderr = job.communicate(timeout=60)
    assert job.returncode in (0, EXIT_CHECKPOINTED), stderr
    return log.read_text(), stdout, stderr


@pytest.mark.parametrize("finished", [True, False])
def test_a_warning_reaches_the_ranks_only_while_the_run_is_unfinished(tmp_path, finished):
    """A walltime warning after summary.json is written stays in the batch shell: the ranks are
    ending, and a rank it ended would hold the job until the time limit (TIMEOUT)."""
    calls, stdout, stderr = signal_the_job(tmp_path, signal.SIGUSR1, finished=finished)
    if finished:
        assert "not forwarded" in stderr and "run finished" in stdout
        assert "USR1" not in calls and "requeue" not in calls
    else:
        assert "asking the run to checkpoint" in stderr
        assert "srun got USR1" in calls and "scontrol requeue 5" in calls


@pytest.mark.parametrize(("reason", "requeued"), [("TimeLimit", True), ("None", False)])
def test_only_the_time_limit_requeues_a_job_its_sigterm_stopped(tmp_path, reason, requeued):
    """Rank 0 checkpoints on any SIGTERM; the script requeues only when SLURM's reason is the
    time limit, so that a scancel (Reason=None) ends the job."""
    calls, _, stderr = signal_the_job(tmp_path, signal.SIGTERM, reason=reason)
    assert "srun got TERM" in calls
    assert ("scontrol requeue 5" in calls) == requeued, stderr
    assert ("not requeueing" in stderr) != requeued, stderr


def test_body_requeues_on_the_drivers_exit_code():
    assert f"checkpointed={EXIT_CHECKPOINTED} " in sbatch.script_body()


@pytest.mark.parametrize("mode", sorted(SCRIPTS))
def test_script_files_share_the_body(mode):
    text = (ROOT / "slurm" / SCRIPTS[mode]).read_text()
    marker = sbatch.script_body(mode).splitlines()[0]
    assert marker in text, f"slurm/{SCRIPTS[mode]} lost the body marker line"
    assert text[text.index(marker) :] == sbatch.script_body(mode), (
        f"slurm/{SCRIPTS[mode]} differs from evores.hpc.sbatch.script_body({mode!r}): copy it over"
    )


@pytest.mark.parametrize("name", [*SCRIPTS.values(), "rendered"])
def test_scripts_are_valid_bash(name, tmp_path):
    path = ROOT / "slurm" / name
    if name == "rendered":
        path = tmp_path / "job.sbatch"
        path.write_text(render_expected())
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "evores.slurm", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_cli_prints_the_script(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("seed = 1\n[search]\npopulation = 4\n")
    result = run_cli("--config", str(config), "--out", "runs/a")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#!/bin/bash\n")
    assert f"set -- {config.resolve()} runs/a" in result.stdout


@pytest.mark.parametrize(
    "text, words",
    [("seed = -1\n", "seed must be >= 0"), ("[slurm]\nnodes = 0\n", "slurm.nodes must be >= 1")],
)
def test_cli_bad_config_is_exit_2_one_line(tmp_path, text, words):
    config = tmp_path / "run.toml"
    config.write_text(text)
    result = run_cli("--config", str(config))
    assert result.returncode == 2 and result.stdout == ""
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_prints_the_stored_script_for_its_config(tmp_path):
    """`python -m evores.slurm`, now rendered by evores.hpc.sbatch, writes what it always wrote."""
    config = tmp_path / "my run.toml"
    lines = ["[slurm]"] + [
        f"{key} = {configuration.to_toml_value(value)}"
        for key, value in EXPECTED_CONFIG["slurm"].items()
    ]
    config.write_text("\n".join(lines) + "\n")
    result = run_cli("--config", str(config), "--out", "runs/exp 1")
    assert result.returncode == 0, result.stderr
    expected = EXPECTED.read_text().replace(
        "set -- '/data/my run.toml' ", f"set -- {shlex.quote(str(config.resolve()))} "
    )
    assert result.stdout == expected


def imported_modules(statement: str) -> set[str]:
    """The evores modules a fresh interpreter has loaded after ``statement``."""
    loaded = "sorted(m for m in sys.modules if m.split('.')[0] == 'evores')"
    probe = f"import sys; {statement}; print({loaded})"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return set(ast.literal_eval(result.stdout))


def test_the_job_environment_and_the_batch_script_are_light_leaves():
    """Training reads the job environment (GPU binding) and configuration checks [slurm]:
    neither may pull in more than the core's errors."""
    leaves = {"evores", "evores.core", "evores.core.lazy", "evores.core.errors", "evores.hpc"}
    assert imported_modules("import evores.hpc.environment") == leaves | {"evores.hpc.environment"}
    assert imported_modules("import evores.hpc.sbatch") == leaves | {
        "evores.hpc.sbatch",
        "evores.core.typed",
    }
    assert "evores.hpc.environment" not in imported_modules("import evores.config")


def fake_command(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------- real SLURM

# Stands in for `python -m evores run` in the requeue test: the first start creates the run and
# waits for SIGUSR1, then exits like a checkpointing driver; a start that finds config.toml
# finishes the run.
FAKE_DRIVER = """\
log=$FAKE_LOG
echo "start restart=${SLURM_RESTART_COUNT:-0}: $*" >> "$log"
prev=
for arg in "$@"; do
    [ "$prev" = --out ] && out=$arg
    prev=$arg
done
mkdir -p "$out"
if [ -f "$out/config.toml" ]; then
    echo '{"test_accuracy": 0.5}' > "$out/summary.json"
    exit 0
fi
echo "seed = 0" > "$out/config.toml"
trap 'echo "SIGUSR1" >> "$log"; exit 75' USR1
touch "$out/waiting"
while :; do sleep 0.1; done
"""

# Prints what each rank sees, for the layout tests of the multinode and CPU scripts.
RANK_PROBE = """\
exec {python} -c '
import os
from mpi4py import MPI
from evores.hpc.environment import local_gpu_index
comm = MPI.COMM_WORLD
print("rank", comm.Get_rank(), "size", comm.Get_size(), "gpu", local_gpu_index(), flush=True)
'
"""


def wait_for_file(path: Path, timeout: float, cluster, job_id: int) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not created in {timeout} s: {cluster.job_info(job_id)}")
        time.sleep(0.2)


@pytest.mark.slurm
def test_harness_runs_a_3_rank_mpi_job(slurm_cluster, tmp_path):
    """The size check guards the trap of a wrong --mpi plugin: 3 worlds of size 1, all exit 0."""
    out = tmp_path / "job.out"
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\nsrun --mpi=pmi2 python -c "
        "'from mpi4py import MPI; print(MPI.COMM_WORLD.Get_size())'\n"
    )
    job = slurm_cluster.sbatch(["-n", "3", "-o", str(out), str(script)])
    assert slurm_cluster.wait(job, timeout=60) == "COMPLETED", out.read_text()
    assert out.read_text().split() == ["3", "3", "3"]


@pytest.mark.slurm
def test_walltime_warning_checkpoints_requeues_and_resumes(slurm_cluster, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_command(bin_dir, "python", FAKE_DRIVER)
    run_dir, log, out = tmp_path / "run", tmp_path / "starts.log", tmp_path / "job.out"
    env = {"PATH": f"{bin_dir}{os.pathsep}{slurm_cluster.env['PATH']}", "FAKE_LOG": str(log)}
    job = slurm_cluster.sbatch(
        ["-n", "1", "-o", str(out), str(ROOT / "slurm" / "evores.sbatch"), "my.toml",
         str(run_dir), "--quiet"], env=env,
    )  # fmt: skip
    wait_for_file(run_dir / "waiting", 30, slurm_cluster, job)
    # What SLURM does at --signal=B:USR1@N, delivered now: SIGUSR1 to the batch shell only.
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", str(job))
    assert slurm_cluster.wait(job, timeout=60) == "COMPLETED", out.read_text()
    info = slurm_cluster.job_info(job)
    assert info["Restarts"] == "1" and info["ExitCode"] == "0:0"
    starts = log.read_text().splitlines()
    assert starts == [
        f"start restart=0: -m evores run --config my.toml --out {run_dir} --quiet",
        "SIGUSR1",
        f"start restart=1: -m evores run --config my.toml --out {run_dir} --resume --quiet",
    ]
    assert json.loads((run_dir / "summary.json").read_text()) == {"test_accuracy": 0.5}
    output = out.read_text()  # --open-mode=append: both starts are in it
    assert "requeueing job" in output and "run finished" in output


@pytest.mark.slurm
def test_multinode_and_cpu_scripts_lay_out_the_ranks(slurm_cluster, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_command(bin_dir, "python", RANK_PROBE.format(python=sys.executable))
    env = {"PATH": f"{bin_dir}{os.pathsep}{slurm_cluster.env['PATH']}"}
    # One node standing in for the first of several: the driver plus 2 evaluators, 2 "GPUs".
    multi = slurm_cluster.sbatch(
        ["-N", "1", "--ntasks-per-node=3", "-o", str(tmp_path / "multi.out"),
         str(ROOT / "slurm" / "evores-multinode.sbatch"), "c.toml", str(tmp_path / "m")],
        env={**env, "CUDA_VISIBLE_DEVICES": "0,1"},
    )  # fmt: skip
    cpu = slurm_cluster.sbatch(
        ["-o", str(tmp_path / "cpu.out"), str(ROOT / "slurm" / "evores-cpu.sbatch"), "c.toml",
         str(tmp_path / "c")], env={**env, "EVORES_THREADS": "2"},
    )  # fmt: skip
    for job, name in ((multi, "multi.out"), (cpu, "cpu.out")):
        assert slurm_cluster.wait(job, timeout=60) == "COMPLETED", (tmp_path / name).read_text()
    multi_lines = sorted(line for line in (tmp_path / "multi.out").read_text().splitlines()
                         if line.startswith("rank"))  # fmt: skip
    assert multi_lines == ["rank 0 size 3 gpu None", "rank 1 size 3 gpu 0", "rank 2 size 3 gpu 1"]
    cpu_lines = (tmp_path / "cpu.out").read_text().splitlines()
    # 4 CPUs (the test node's) / 2 threads = 2 ranks; the index goes unused without CUDA
    assert sorted(line for line in cpu_lines if line.startswith("rank")) == [
        "rank 0 size 2 gpu None", "rank 1 size 2 gpu 0"
    ]  # fmt: skip


TINY_CONFIG = """\
seed = 0
[schedule]
resolutions = [8, 16]
evaluations = [6, 4]
elites = 2
[search]
population = 4
elitism = 1
[train]
max_epochs = 2
patience = 1
threads = 1
[space]
conv_filters = [8, 32]
fc_units = [16, 64]
"""


@pytest.mark.slurm
def test_evores_sbatch_runs_a_tiny_search(slurm_cluster, tmp_path, tmp_path_factory):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG)
    run_dir, out = tmp_path / "run", tmp_path / "job.out"
    env = {"EVORES_CACHE_DIR": str(tmp_path_factory.mktemp("slurm-cache"))}
    job = slurm_cluster.sbatch(
        ["-n", "3", "-o", str(out), f"--chdir={tmp_path}", str(ROOT / "slurm" / "evores.sbatch"),
         str(config), str(run_dir)], env=env,
    )  # fmt: skip
    assert slurm_cluster.wait(job, timeout=150) == "COMPLETED", out.read_text()[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 <= summary["test_accuracy"] <= 1.0


@pytest.mark.slurm
@pytest.mark.slow
def test_a_rendered_script_runs_the_search_on_slurm(
    slurm_cluster, tmp_path, tmp_path_factory, tiny_run
):
    """python -m evores.slurm writes the job from the config's [slurm] section; submitted as
    it is, it runs the same search as the uninterrupted serial run."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG + '[slurm]\ntime = "00:10:00"\nsignal_seconds = 90\n')
    run_dir, out, script = tmp_path / "run", tmp_path / "job.out", tmp_path / "job.sbatch"
    rendered = subprocess.run(
        [sys.executable, "-m", "evores.slurm", "--config", str(config), "--out", str(run_dir),
         "--python", sys.executable],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    script.write_text(rendered.stdout)
    assert "#SBATCH --ntasks=3" in rendered.stdout and "#SBATCH --time=00:10:00" in rendered.stdout
    env = {"EVORES_CACHE_DIR": str(tmp_path_factory.mktemp("slurm-cache"))}
    job = slurm_cluster.sbatch(["-o", str(out), f"--chdir={tmp_path}", str(script)], env=env)
    assert slurm_cluster.wait(job, timeout=150) == "COMPLETED", out.read_text()[-3000:]
    assert_same_result(run_dir, tiny_run[0])


class Timeline:
    """Moments of a job as the test saw them, printed for the record (pytest -s shows them)."""

    def __init__(self):
        self.start = time.monotonic()
        self.events: list[tuple[float, str]] = []

    def mark(self, what: str) -> None:
        self.events.append((time.monotonic() - self.start, what))

    def __str__(self) -> str:
        return "\n".join(f"  {seconds:6.1f} s  {what}" for seconds, what in self.events)


def watch_restarts(cluster, job: int, timeline: Timeline, timeout: float) -> str:
    """Poll the job to its end, marking each requeue; return the final state."""
    deadline, restarts = time.monotonic() + timeout, "0"
    while time.monotonic() < deadline:
        info = cluster.job_info(job)
        if info.get("Restarts", "0") != restarts:
            restarts = info["Restarts"]
            timeline.mark(f"requeued (Restarts={restarts}), state {info.get('JobState')}")
        if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            timeline.mark(f"job ended: {info['JobState']}")
            return info["JobState"]
        time.sleep(0.5)
    cluster.run("scancel", str(job), check=False)
    raise TimeoutError(f"job {job} not finished in {timeout} s:\n{timeline}")


def slow_job_env(tmp_path_factory, seconds: float) -> dict[str, str]:
    return {
        "EVORES_CACHE_DIR": str(tmp_path_factory.mktemp("slurm-cache")),
        "EVORES_TEST_SLEEP": str(seconds),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
    }


@pytest.mark.slurm
@pytest.mark.slow
def test_signal_checkpoints_requeues_and_ends_like_an_uninterrupted_run(
    slurm_cluster,
    tmp_path,
    tmp_path_factory,
    tiny_run,
):
    """The real run, not a stand-in: scancel --signal=USR1 --batch is the walltime warning."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG + '[fitness]\nfunction = "fitness_plugins:slow_evaluate"\n')
    run_dir, out = tmp_path / "run", tmp_path / "job.out"
    timeline = Timeline()
    job = slurm_cluster.sbatch(
        ["-n", "3", "-o", str(out), f"--chdir={tmp_path}", str(ROOT / "slurm" / "evores.sbatch"),
         str(config), str(run_dir)], env=slow_job_env(tmp_path_factory, 1.0),
    )  # fmt: skip
    timeline.mark(f"submitted job {job}")
    log = run_dir / "evaluations.jsonl"
    deadline = time.monotonic() + 120
    while not log.exists() or len(log.read_text().splitlines()) < 3:
        assert time.monotonic() < deadline, out.read_text()[-3000:] if out.exists() else "no output"
        time.sleep(0.2)
    done_before = len(log.read_text().splitlines())
    timeline.mark(f"{done_before} evaluations logged; sending USR1 to the batch shell")
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", str(job))
    state = watch_restarts(slurm_cluster, job, timeline, timeout=240)
    print(f"\nrequeue timeline (scancel --signal):\n{timeline}")
    output = out.read_text()
    assert state == "COMPLETED", output[-3000:]
    assert slurm_cluster.job_info(job)["Restarts"] == "1"
    assert "requeueing job" in output and "checkpoint written" in output and "resuming" in output
    assert_same_result(run_dir, tiny_run[0])


@pytest.mark.slurm
@pytest.mark.slow
def test_a_real_time_limit_checkpoints_requeues_and_finishes(
    slurm_cluster,
    tmp_path,
    tmp_path_factory,
    tiny_run,
):
    """--time=1 (SLURM's smallest) with the warning 15 s before it: the run needs more than one
    allocation, each start resumes where the last one stopped, and the end equals the
    uninterrupted run's."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG + '[fitness]\nfunction = "fitness_plugins:slow_evaluate"\n')
    run_dir, out = tmp_path / "run", tmp_path / "job.out"
    timeline = Timeline()
    job = slurm_cluster.sbatch(
        ["-n", "3", "--time=1", "--signal=B:USR1@15", "-o", str(out), f"--chdir={tmp_path}",
         str(ROOT / "slurm" / "evores.sbatch"), str(config), str(run_dir)],
        # 10 search evaluations of 10 s on 2 workers need more than the 45 s before the warning,
        # however fast the training itself: the warning always comes before the search ends.
        env=slow_job_env(tmp_path_factory, 10.0),
    )  # fmt: skip
    timeline.mark(f"submitted job {job} (--time=1, --signal=B:USR1@15, 10 s per evaluation)")
    state = watch_restarts(slurm_cluster, job, timeline, timeout=420)
    print(f"\nrequeue timeline (time limit):\n{timeline}")
    output = out.read_text()
    assert state == "COMPLETED", output[-3000:]
    assert int(slurm_cluster.job_info(job)["Restarts"]) >= 1
    assert "walltime warning" in output and "resuming" in output
    assert_same_result(run_dir, tiny_run[0])


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        EXPECTED.parent.mkdir(parents=True, exist_ok=True)
        EXPECTED.write_text(render_expected())
        print(f"wrote {EXPECTED}")
    else:
        sys.exit("usage: python tests/hpc/test_slurm.py --regenerate")


@pytest.mark.parametrize(
    "section",
    [
        {"partition": "gpu\ntouch /tmp/evores-injected"},
        {"account": "proj\r\nid"},
        {"time": "01:00:00\n"},
        {"extra": ["--qos=high\nrm -rf ~"]},
        {"extra": ["--comment=a\x1bb"]},
    ],
)
def test_a_control_character_never_reaches_the_batch_script(section):
    """A newline in an #SBATCH line would run the rest as a command (issue 23, class 3)."""
    with pytest.raises(ConfigError, match="control character"):
        sbatch.render_sbatch({"slurm": section}, config_path="c.toml", run_dir=None)
    with pytest.raises(ConfigError, match="control character"):
        configuration.load(values={"slurm": section})


@pytest.mark.parametrize("where", ["config_path", "run_dir", "python"])
def test_the_scripts_paths_and_python_refuse_control_characters_too(where):
    arguments = {"config_path": "c.toml", "run_dir": "runs/r", "python": "python"}
    arguments[where] += "\nid"
    with pytest.raises(ConfigError, match="control character"):
        sbatch.render_sbatch({}, **arguments)


def test_every_rendered_value_is_quoted_and_each_line_is_a_flag_or_the_body():
    script = sbatch.render_sbatch(
        {"slurm": {"partition": "a b;c", "account": "$(id)", "extra": ["--comment=`id`"]}},
        config_path="my config.toml", run_dir="runs/$HOME", python="py thon",
    )  # fmt: skip
    head = script[: script.index(sbatch.script_body().splitlines()[0])].splitlines()
    assert "#SBATCH --partition='a b;c'" in head and "#SBATCH --account='$(id)'" in head
    assert "#SBATCH --comment='`id`'" in head
    assert "set -- 'my config.toml' 'runs/$HOME' \"$@\"" in head and "python='py thon'" in head


def test_the_script_removes_stale_mpi_segments_and_keeps_mapped_ones(tmp_path):
    """A requeued job keeps its id, and MPICH names its segment after it: one left by killed
    ranks would hold the next start's ranks in MPI_Init. One that a process maps stays."""
    stale = Path(f"/dev/shm/mpich_shm_e5e5{os.getpid():x}_0")
    live = Path(f"/dev/shm/mpich_shm_e5e6{os.getpid():x}_0")
    for segment in (stale, live):
        segment.write_bytes(b"\0" * 4096)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import mmap, sys; f = open(sys.argv[1], 'r+b');"
         " m = mmap.mmap(f.fileno(), 4096); print('mapped', flush=True); sys.stdin.read()",
         str(live)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "mapped"
        _, _, stderr = signal_the_job(tmp_path, signal.SIGUSR1, finished=True)
        assert not stale.exists() and f"removed {stale}" in stderr
        assert live.exists()
    finally:
        holder.communicate("", timeout=30)
        for segment in (stale, live):
            segment.unlink(missing_ok=True)
