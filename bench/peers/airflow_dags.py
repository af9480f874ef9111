"""Airflow 3 DAGs for airflow_bench.py (copied into $AIRFLOW_HOME/dags, because dag.test()
re-parses the DAG from the dags folder on every call)."""
from airflow.sdk import DAG, task

N_TASKS = 100


@task
def noop():
    return None


with DAG("bench_chain", schedule=None, catchup=False) as chain:
    prev = noop.override(task_id="t0")()
    for i in range(1, N_TASKS):
        cur = noop.override(task_id=f"t{i}")()
        prev >> cur
        prev = cur

with DAG("bench_fanout", schedule=None, catchup=False) as fanout:
    start = noop.override(task_id="start")()
    mids = [noop.override(task_id=f"m{i}")() for i in range(N_TASKS - 2)]
    start >> mids >> noop.override(task_id="end")()
