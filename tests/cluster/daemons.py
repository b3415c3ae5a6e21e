"""Real schedulers for the cluster tests: SLURM (munge, MariaDB + slurmdbd for `sacct`,
slurmctld, two slurmd nodes on this host) and a two-node Ray cluster, each daemon started by
this script and stopped by its own PID.

    python tests/cluster/daemons.py install      # Debian packages, where missing (root)
    python tests/cluster/daemons.py up STATE      # start afresh; PIDs in STATE/pids.json
    python tests/cluster/daemons.py down STATE    # stop every PID recorded there

`make test-cluster` runs `install`, then pytest on tests/cluster, whose session fixture calls
`up` and, pass or fail, `down`. Nothing is written outside STATE except MariaDB's data dir
(the Debian one) and the slurm_acct_db database in it, which `up` starts afresh.

Layout: two slurmd nodes `n1`, `n2` with one CPU each on this host (own ports), partitions
`cpu` (default, low priority) and `high` (preempts `cpu` jobs: REQUEUE, with the job's own
signal first, `preempt_send_user_signal`); credentials expire in 10 s and the scheduler runs
every 2 s, so a requeue takes seconds, not minutes. Ray: a head and one worker node, one CPU
each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server"]
RAY_PORT = 6390
NODES = {"n1": 17001, "n2": 17002}
# RAY_worker_niceness: the runs are the work; at Ray's default niceness of 15 they starve
# beside anything else on the cores (conf/launcher/ray.yaml)
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0"}
# the head notices a lost node in a few seconds, not the default half minute
HEAD_ENV = {**ENV, "RAY_health_check_initial_delay_ms": "1000",
            "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def log(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def install() -> None:
    missing = [p for p in PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True)
               .returncode != 0]
    if not missing:
        return
    log(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                   check=True, env=env, stdout=subprocess.DEVNULL)


# -- pids ----------------------------------------------------------------------------------------
# pids.json: {name: [pid, start]}, where start is the process's start time (clock ticks after
# boot, /proc/PID/stat field 22): a PID the kernel has since given to another process is not
# ours, and nothing here ever signals it.
def _start_time(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _records(state: Path) -> dict[str, list]:
    try:
        records = json.loads((state / "pids.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {k: v for k, v in records.items() if isinstance(v, list) and len(v) == 2}


def _pids(state: Path) -> dict[str, int]:
    """The recorded daemons still running as the processes this script started (a zombie,
    stopped but not yet reaped, is not running)."""
    return {name: pid for name, (pid, start) in _records(state).items()
            if _start_time(pid) == start and _alive(pid)}


def _remember(state: Path, name: str, pid: int) -> None:
    records = _records(state)
    records[name] = [pid, _start_time(pid)]
    (state / "pids.json").write_text(json.dumps(records, indent=1))


def _start(state: Path, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
    out = open(state / f"{name}.out", "ab")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})})
    _remember(state, name, proc.pid)
    return proc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def stop(state: Path, name: str, timeout: float = 15) -> None:
    """Stop one daemon by its PID: SIGTERM to its process group, then SIGKILL."""
    pid = _pids(state).get(name)  # running, and the process this script started
    if not pid:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.time() + timeout
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.1)
        if not _alive(pid):
            return


def kill(state: Path, name: str) -> None:
    """SIGKILL a daemon's whole process group at once (a node that is lost, not stopped)."""
    pid = _pids(state).get(name)  # running, and the process this script started
    if pid:
        os.killpg(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.1)


def down(state: Path) -> list[str]:
    """Stop every daemon recorded in STATE that is still running, the last started first;
    returns their names."""
    running = list(_pids(state))
    for name in reversed(running):
        stop(state, name)
    return running


# the ports of the daemons that cannot share a host with another of their kind (a MariaDB
# already running on the host is not among them: slurmdbd can keep its database there)
PORTS = {16817: "slurmctld", 16819: "slurmdbd", **{p: f"slurmd {n}" for n, p in NODES.items()}}


def busy_ports(ports: dict[int, str]) -> list[str]:
    """The ports something already listens on, each with the daemon that wants it."""
    busy = []
    for port, what in ports.items():
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(f"{port} ({what})")
    return busy


def _wait(what: str, ready, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


# -- SLURM ---------------------------------------------------------------------------------------
def slurm_conf(state: Path) -> str:
    host = socket.gethostname().split(".")[0]
    nodes = "\n".join(f"NodeName={n} NodeHostname={host} Port={port} CPUs=1 RealMemory=16000 "
                      "State=UNKNOWN" for n, port in NODES.items())
    return f"""ClusterName=ganlab
SlurmctldHost={host}
SlurmctldPort=16817
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d/%n
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd-%n.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
JobRequeue=1
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=16819
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=10
MinJobAge=600
{nodes}
PartitionName=cpu Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=20
PartitionName=high Nodes={','.join(NODES)} MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
"""


def slurmdbd_conf(state: Path) -> str:
    return f"""AuthType=auth/munge
DbdHost=localhost
DbdPort=16819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=ganlab
StorageLoc=slurm_acct_db
PidFile={state}/slurmdbd.pid
LogFile={state}/slurmdbd.log
"""


def start_slurm(state: Path) -> dict[str, str]:
    """munge, MariaDB, slurmdbd, slurmctld and the two slurmd nodes; returns the env a
    client needs (SLURM_CONF)."""
    conf = state / "slurm.conf"
    conf.write_text(slurm_conf(state))
    dbd = state / "slurmdbd.conf"
    dbd.write_text(slurmdbd_conf(state))
    dbd.chmod(0o600)
    for sub in ("ctld", "d/n1", "d/n2"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    env = {"SLURM_CONF": str(conf)}

    Path("/run/munge").mkdir(exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    _start(state, "munged", ["runuser", "-u", "munge", "--", "/usr/sbin/munged",
                             "--foreground"])
    _wait("munge", lambda: _run(["munge", "-n"]).returncode == 0)

    Path("/run/mysqld").mkdir(exist_ok=True)
    shutil.chown("/run/mysqld", "mysql", "mysql")
    _start(state, "mariadb", ["/usr/sbin/mariadbd", "--user=mysql",
                              "--socket=/run/mysqld/mysqld.sock", "--skip-networking=0",
                              "--bind-address=127.0.0.1"])
    _wait("MariaDB", lambda: _run(["mariadb", "-e", "select 1"]).returncode == 0)
    # a fresh accounting database: slurmctld's state is new, so job ids start at 1 again,
    # and an old session's job 5 (COMPLETED) would answer `sacct -j 5` for this one's
    _run(["mariadb", "-e", "DROP DATABASE IF EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS "
          "'slurm'@'localhost' IDENTIFIED BY 'ganlab'; GRANT ALL ON slurm_acct_db.* TO "
          "'slurm'@'localhost'; FLUSH PRIVILEGES;"], check=True)

    _start(state, "slurmdbd", ["/usr/sbin/slurmdbd", "-D"], env)
    _wait("slurmdbd", lambda: _run(["sacctmgr", "-n", "list", "cluster"],
                                   env={**os.environ, **env}).returncode == 0)
    _run(["sacctmgr", "-i", "add", "cluster", "ganlab"], env={**os.environ, **env})

    _start(state, "slurmctld", ["/usr/sbin/slurmctld", "-D", "-i"], env)
    _wait("slurmctld", lambda: _run(["scontrol", "ping"], env={**os.environ, **env})
          .stdout.count("UP") > 0)
    for node in NODES:
        _start(state, f"slurmd-{node}", ["/usr/sbin/slurmd", "-D", "-N", node], env)

    def idle() -> bool:
        out = _run(["sinfo", "-h", "-N", "-o", "%N %t"], env={**os.environ, **env}).stdout
        return sum(state in ("idle", "mix", "alloc") for _, state in
                   (line.split() for line in out.splitlines() if line.strip())) >= len(NODES)

    _wait("both slurmd nodes", idle)
    log("SLURM up: partitions cpu (default) and high on nodes " + ", ".join(NODES))
    return env


# -- Ray -----------------------------------------------------------------------------------------
def ray_exe() -> str:
    return str(Path(sys.executable).parent / "ray")


def start_ray(state: Path) -> dict[str, str]:
    """A head node and one worker node (one CPU each; the head declares one logical GPU,
    which runs may share by fraction); returns RAY_ADDRESS."""
    address = f"127.0.0.1:{RAY_PORT}"
    _start(state, "ray-head", [ray_exe(), "start", "--head", f"--port={RAY_PORT}",
                               "--include-dashboard=false",
                               f"--temp-dir={state / 'ray'}", *RAY_NODE, "--num-gpus=1"],
           HEAD_ENV)
    _wait("the Ray head", lambda: _run([ray_exe(), "status", f"--address={address}"],
                                       env={**os.environ, **ENV}).returncode == 0)
    restart_ray_worker(state)
    log(f"Ray up: 2 nodes at {address}")
    return {"RAY_ADDRESS": address, **ENV}


RAY_NODE = ["--num-cpus=1", "--block", "--disable-usage-stats"]


def _ray_nodes(address: str) -> int:
    out = _run([ray_exe(), "status", f"--address={address}"], env={**os.environ, **ENV})
    return out.stdout.count("node_")


def restart_ray_worker(state: Path) -> None:
    """(Re)start the worker node and wait until the head counts two nodes alive."""
    address = f"127.0.0.1:{RAY_PORT}"
    stop(state, "ray-worker")
    _start(state, "ray-worker", [ray_exe(), "start", f"--address={address}", *RAY_NODE, "--num-gpus=0"],
           ENV)
    _wait("the Ray worker node", lambda: _ray_nodes(address) >= 2)


def up(state: Path) -> dict[str, str]:
    """Start everything afresh in STATE: daemons an interrupted earlier `up` left running there
    are stopped first; a port taken by anything else stops it with a message naming the port."""
    left = down(state)
    if left:
        log(f"stopped {', '.join(left)}, left running in {state} by an earlier run")
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True, exist_ok=True)
    busy = busy_ports({**PORTS, RAY_PORT: "the Ray head"})
    if busy:
        ports = "ports " + ", ".join(busy) + " are" if len(busy) > 1 else f"port {busy[0]} is"
        raise RuntimeError(
            f"{ports} already in use: a cluster from an earlier run that was not stopped? "
            "`python tests/cluster/daemons.py down STATE` stops the daemons recorded in that "
            "run's STATE folder; otherwise stop what holds the port")
    try:
        env = {**start_slurm(state), **start_ray(state)}
    except BaseException:
        down(state)
        raise
    (state / "env.json").write_text(json.dumps(env))
    return env


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("install", "up", "down"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "install":
        install()
        return 0
    state = Path(argv[1] if len(argv) > 1 else "/tmp/ganlab-cluster").absolute()
    if argv[0] == "up":
        try:
            print(json.dumps(up(state)))
        except RuntimeError as e:  # a daemon that did not come up, a port taken: one line
            log(f"up: {e}")
            return 1
    else:
        log(f"stopped {', '.join(down(state)) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
