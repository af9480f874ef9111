"""Dagster peer: 100 no-op ops as a chain and as a 1 -> 98 -> 1 fan-out, run with
job.execute_in_process() against DagsterInstance.local_temp() (sqlite in a temp dir; peer
"dagster") and, for comparison, DagsterInstance.ephemeral() (in memory; "dagster-ephemeral").
Rerun: bash bench/peers/run_peers.sh --only dagster   (or: <venv>/bin/python dagster_bench.py --runs 5)
"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import N_TASKS, parse_args, run_all
from dagster import DagsterInstance, In, Nothing, job, op


@op(ins={"after": In(Nothing)})
def noop():
    return None


@job
def chain():
    prev = noop.alias("t0")()
    for i in range(1, N_TASKS):
        prev = noop.alias(f"t{i}")(after=prev)


@job
def fanout():
    start = noop.alias("start")()
    mids = [noop.alias(f"m{i}")(after=start) for i in range(N_TASKS - 2)]
    noop.alias("end")(after=mids)


def builder(j, instance):
    def run_once():
        assert j.execute_in_process(instance=instance).success
    return run_once


def main():
    args = parse_args()
    # "dagster" = DagsterInstance.local_temp() (sqlite files in a temp dir: durable state);
    # "dagster-ephemeral" = in-memory instance, for comparison. Choose with DAGSTER_BENCH_INSTANCES.
    for kind in os.environ.get("DAGSTER_BENCH_INSTANCES", "local_temp,ephemeral").split(","):
        peer = "dagster" if kind == "local_temp" else "dagster-ephemeral"
        try:
            instance = getattr(DagsterInstance, kind)()
        except Exception as e:  # local_temp failed: fall back to ephemeral, and say so
            print(f"{kind} failed ({e}); using ephemeral", file=sys.stderr)
            instance, kind = DagsterInstance.ephemeral(), "ephemeral (local_temp failed)"
        with instance:
            run_all(peer, {"chain": builder(chain, instance), "fanout": builder(fanout, instance)},
                    args, mode=f"execute_in_process, instance={kind}")


if __name__ == "__main__":
    main()
