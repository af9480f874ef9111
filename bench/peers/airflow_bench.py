"""Airflow 3 peer: 100 no-op @task functions as a chain and as a 1 -> 98 -> 1 fan-out
(defined in airflow_dags.py), each run with dag.test() (in-process, no scheduler).
AIRFLOW_HOME is a fresh temp dir with the default SQLite metadata DB; `airflow db migrate`
runs before any timing, and one warm-up dag.test() per shape is not counted.
Rerun: bash bench/peers/run_peers.sh --only airflow   (or: <venv>/bin/python airflow_bench.py --runs 5)
"""
import atexit, os, shutil, subprocess, sys, tempfile
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
home = tempfile.mkdtemp(prefix="airflow-home-")
atexit.register(shutil.rmtree, home, ignore_errors=True)
dags = os.path.join(home, "dags")
os.makedirs(dags)
shutil.copy(os.path.join(here, "airflow_dags.py"), dags)
os.environ.update(AIRFLOW_HOME=home, AIRFLOW__CORE__LOAD_EXAMPLES="False",
                  AIRFLOW__CORE__DAGS_FOLDER=dags)
subprocess.run([os.path.join(os.path.dirname(sys.executable), "airflow"), "db", "migrate"],
               check=True, stdout=sys.stderr, stderr=sys.stderr)

from _common import parse_args, run_all
sys.path.insert(0, dags)
import airflow_dags


def builder(dag):
    def run_once():
        dr = dag.test()
        assert str(dr.state).endswith("success"), dr.state
    return run_once


def main():
    args = parse_args()
    run_all("airflow", {"chain": builder(airflow_dags.chain), "fanout": builder(airflow_dags.fanout)},
            args, mode="dag.test(), sqlite in AIRFLOW_HOME")


if __name__ == "__main__":
    main()
