"""Prefect 3 peer: 100 no-op tasks in a local flow. Chain = 100 sequential direct task
calls; fan-out = task.submit() 1 -> 98 -> 1 with wait_for.
PREFECT_HOME is a fresh temp dir, so Prefect starts its local ephemeral server on SQLite;
the first (warm-up) run of each shape pays server/DB startup and is not counted.
Rerun: bash bench/peers/run_peers.sh --only prefect   (or: <venv>/bin/python prefect_bench.py --runs 5)
"""
import atexit, os, shutil, sys, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-home-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)
from _common import N_TASKS, parse_args, run_all
from prefect import flow, task


@task
def noop():
    return None


@flow
def chain():
    for _ in range(N_TASKS):  # direct calls run in order: t(i+1) starts after t(i) finished
        noop()


@flow
def fanout():
    start = noop.submit()
    mids = [noop.submit(wait_for=[start]) for _ in range(N_TASKS - 2)]
    noop.submit(wait_for=mids).wait()


def main():
    args = parse_args()
    run_all("prefect", {"chain": chain, "fanout": fanout}, args,
            mode="local flow, ephemeral server, sqlite in PREFECT_HOME")


if __name__ == "__main__":
    main()
