#!/usr/bin/env python
"""Run every notebook (nbdev-test, one process each) and the pytest suite; end with `N passed, N failed`.

Usage: python tools/run_tests.py [--flags "slow cuda"] [--workers 2] [--only 00_data_fix] [--no-pytest]
"""
import argparse, re, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
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

def run_pytest(args):
    "Run pytest over tests/; return (passed, failed)"
    if not any((root/'tests').glob('test_*.py')): return 0, 0
    cmd = [sys.executable, '-m', 'pytest', 'tests', '-q', '-p', 'no:cacheprovider', '--durations=15', '-rs', '-n', '2', *args]
    p = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    out = p.stdout + p.stderr
    print(out[-12000:])
    n = lambda w: sum(int(m) for m in re.findall(rf'(\d+) {w}', out.splitlines()[-1] if out.strip() else ''))
    passed, failed = n('passed'), n('failed') + n('errors?')
    if p.returncode not in (0, 5) and failed == 0: failed = 1  # collection error or crash
    return passed, failed

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--flags', default='', help='test flags to run that are normally skipped, e.g. "slow"')
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--only', default='', help='regex: only notebooks whose name matches')
    ap.add_argument('--no-pytest', action='store_true')
    a = ap.parse_args()
    t0 = time.time()
    nbs = [p for p in sorted((root/'nbs').glob('*.ipynb')) if not p.name.startswith('_') and re.search(a.only, p.name)]
    with ThreadPoolExecutor(a.workers) as ex:
        results = list(ex.map(lambda nb: run_nb(nb, a.flags), nbs))
    for name, ok, secs, out in results:
        print(f"{'PASS' if ok else 'FAIL'} {name} ({secs:.0f} s)")
        if not ok: print(out[-8000:])
    passed, failed = sum(r[1] for r in results), sum(not r[1] for r in results)
    if not a.no_pytest:
        p, f = run_pytest(['-m', 'not slow'] if 'slow' not in a.flags else [])
        passed, failed = passed+p, failed+f
    print(f"test time: {time.time()-t0:.0f} s")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)

if __name__ == '__main__': main()
