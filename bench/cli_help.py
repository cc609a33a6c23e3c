#!/usr/bin/env python
"""How long each console script takes to print its `--help`, as a user waits for it: the installed script run as a
subprocess, best of `--repeats` wall times, one thread (OMP_NUM_THREADS=1).

The commands all live in `segthor_nb.cli`, which imports only `segthor_nb.core`; each command imports its chapter inside
its body, so `--help` never loads torch or MONAI. The `--help` of the commands before they moved there (defined in their
chapters, importing torch and MONAI first) cannot be run from this tree any more, so the references are the two costs
it paid: `python -c 'import torch'` and `python -c 'import segthor_nb.train'` (the old home of `segthor-train`). A
ratio below 1 is the fraction of the reference a `--help` now takes. Target: every `--help` at most 1.5 s.

Usage: python bench/cli_help.py [--repeats 3]
"""
import argparse, os, subprocess, sys, time, tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_S = 1.5


def best_wall(argv:list, repeats:int)->float:
    "Best wall time (s) of running `argv` `repeats` times (NaN, with its error, if it fails)"
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t0)
        if r.returncode: print(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[-300:]}", file=sys.stderr); return float('nan')
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    scripts = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['scripts']
    refs = {"import torch": best_wall([sys.executable, '-c', 'import torch'], a.repeats),
            "import segthor_nb.train": best_wall([sys.executable, '-c', 'import segthor_nb.train'], a.repeats)}
    core = best_wall([sys.executable, '-c', 'import segthor_nb.core'], a.repeats)
    rows = [(s, best_wall([str(BIN/s), '--help'], a.repeats)) for s in sorted(scripts)]
    (r1, t1), (r2, t2) = refs.items()
    print(f"best of {a.repeats}, OMP_NUM_THREADS=1, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; references: `{r1}` {t1:.2f} s, `{r2}` {t2:.2f} s; "
          f"`import segthor_nb.core` {core:.2f} s\n")
    print(f"| command | --help (s) | / {r1} | / {r2} | ≤ {TARGET_S} s |")
    print("|---|---|---|---|---|")
    for s, t in rows: print(f"| {s} | {t:.2f} | {t/t1:.2f} | {t/t2:.2f} | {'yes' if t <= TARGET_S else 'NO'} |")
    worst = max(t for _, t in rows if t == t)
    print(f"\nslowest --help {worst:.2f} s: {t1/worst:.1f}× faster than `{r1}`, {t2/worst:.1f}× faster than `{r2}`")


if __name__ == '__main__': main()
