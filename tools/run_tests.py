#!/usr/bin/env python
"""Run every notebook (nbdev-test, one process each) and the pytest suite; end with `N passed, N failed`.

Notebooks run on `--workers` processes, slowest first; pytest (`-n 2`, one module per xdist worker so module fixtures
are built once) starts as soon as the last notebook is running alone, so no core idles between the two phases.

Usage: python tools/run_tests.py [--flags "slow cuda"] [--workers 2] [--only 00_data_fix] [--no-pytest]
"""
import argparse, re, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

root = Path(__file__).resolve().parents[1]

def run_nb(nb:Path, flags:str):
    "Test one notebook with nbdev-test; return (name, ok, seconds, output)"
    t0 = time.time()
    cmd = [str(Path(sys.executable).parent/'nbdev-test'), str(nb)]
    if flags: cmd += ['--flags', flags]
    p = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    ok = p.returncode == 0
    return nb.name, ok, time.time()-t0, (p.stdout + p.stderr)

# seconds per notebook on 2 cores (a CI run), for the slowest-first order; a notebook not listed goes first
NB_SECONDS = {'04_train': 64, '00_data_fix': 61, '06_interpretability': 58, '01_slicing': 57, '05b_evaluate': 57,
              '07a_tune': 40, '04a_train3d': 30, '05d_predict': 20, '05c_compare': 15, '02a_sam': 35, '05a_nnunet': 30, '02_models': 25, '05_metrics3d': 25, '07_pipeline': 25,
              '02b_study_import': 20, '03_losses': 15, '08_cli': 15, '00_core': 10, 'index': 5}

def slowest_first(nbs:list)->list: return sorted(nbs, key=lambda p: -NB_SECONDS.get(p.stem, 1e9))

def run_pytest(args):
    "Run pytest over tests/; return (passed, failed)"
    if not any((root/'tests').glob('test_*.py')): return 0, 0
    cmd = [sys.executable, '-m', 'pytest', 'tests', '-q', '-p', 'no:cacheprovider', '--durations=15', '-rs', '-n', '2', '--dist', 'loadscope', *args]
    p = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    out = p.stdout + p.stderr
    n = lambda w: sum(int(m) for m in re.findall(rf'(\d+) {w}', out.splitlines()[-1] if out.strip() else ''))
    passed, failed = n('passed'), n('failed') + n('errors?')
    if p.returncode not in (0, 5) and failed == 0: failed = 1  # collection error or crash
    return passed, failed, out[-12000:]

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--flags', default='', help='test flags to run that are normally skipped, e.g. "slow"')
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--only', default='', help='regex: only notebooks whose name matches')
    ap.add_argument('--no-pytest', action='store_true')
    a = ap.parse_args()
    t0 = time.time()
    nbs = [p for p in sorted((root/'nbs').glob('*.ipynb')) if not p.name.startswith('_') and re.search(a.only, p.name)]
    pyres, pyargs = {}, (['-m', 'not slow'] if 'slow' not in a.flags else [])
    py = threading.Thread(target=lambda: pyres.update(r=run_pytest(pyargs)))
    results, started = [], False
    def start_pytest():
        nonlocal started
        if not (a.no_pytest or started): started = True; py.start()
    with ThreadPoolExecutor(a.workers) as ex:
        futs = [ex.submit(run_nb, nb, a.flags) for nb in slowest_first(nbs)]
        if len(futs) <= 1: start_pytest()
        for f in as_completed(futs):
            results.append(f.result())
            if len(results) >= len(futs) - 1: start_pytest()
    start_pytest()
    for name, ok, secs, out in sorted(results):
        print(f"{'PASS' if ok else 'FAIL'} {name} ({secs:.0f} s)")
        if not ok: print(out[-8000:])
    passed, failed = sum(r[1] for r in results), sum(not r[1] for r in results)
    if not a.no_pytest:
        py.join(); p, f, out = pyres['r']; print(out)
        passed, failed = passed+p, failed+f
    print(f"test time: {time.time()-t0:.0f} s")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)

if __name__ == '__main__': main()
