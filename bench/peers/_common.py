"""Shared timing helper for the peer benchmarks (stdlib only, imported by each *_bench.py)."""
import argparse, json, os, statistics, sys, time

N_TASKS = 100  # chain: t0..t99 ; fanout: start -> 98 middle -> end


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--shapes", default="chain,fanout")
    ap.add_argument("--pause", type=float, default=0.0,
                    help="seconds to sleep before each run, to let background work settle")
    return ap.parse_args()


def fsync_ms(n=20):
    """Mean fsync latency in the temp dir: the sqlite-backed peers are sensitive to it."""
    import tempfile
    with tempfile.NamedTemporaryFile() as f:
        t0 = time.perf_counter()
        for _ in range(n):
            f.write(b"x"); f.flush(); os.fsync(f.fileno())
        return (time.perf_counter() - t0) * 1000.0 / n


def cpu_jiffies():
    """(busy, total) jiffies of the whole machine from /proc/stat (Linux), else zeros."""
    try:
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(v) - v[3] - v[4], sum(v)  # minus idle and iowait
    except OSError:
        return 0, 0


def measure(peer, shape, run_once, runs, warmup=1, pause=0.0, **extra):
    """Call run_once() warmup+runs times; print one JSON line with the timed (non-warm-up) runs."""
    load, fsync = os.getloadavg()[0], fsync_ms()  # other work on the box skews timings: record it
    for _ in range(warmup):
        run_once()
    times, (b0, t0_) = [], cpu_jiffies()
    for _ in range(runs):
        time.sleep(pause)
        t0 = time.perf_counter()
        run_once()
        times.append((time.perf_counter() - t0) * 1000.0)
    b1, t1_ = cpu_jiffies()
    rec = {"peer": peer, "shape": shape, "runs_ms": [round(t, 1) for t in times],
           "median_ms": round(statistics.median(times), 1), "warmup_runs": warmup, "pause_s": pause,
           "loadavg_1m_before": round(load, 2), "fsync_ms_before": round(fsync, 3),
           # whole-machine CPU use during the timed runs (ours + anything else), 100 = all cores busy
           "machine_cpu_busy_pct": round(100.0 * (b1 - b0) / max(t1_ - t0_, 1), 1), **extra}
    print(json.dumps(rec), flush=True)


def error(peer, shape, exc):
    print(json.dumps({"peer": peer, "shape": shape, "error": f"{type(exc).__name__}: {exc}"}), flush=True)


def run_all(peer, runners, args, **extra):
    """runners: {shape: zero-arg callable doing one full run}. Errors become JSON lines."""
    for shape in args.shapes.split(","):
        try:
            measure(peer, shape, runners[shape], args.runs, pause=args.pause, **extra)
        except Exception as e:  # keep going with the next shape
            import traceback; traceback.print_exc(file=sys.stderr)
            error(peer, shape, e)
