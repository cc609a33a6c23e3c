"""Shared pytest setup: one torch thread per test process (the notebooks run beside pytest on 2 cores), and a per-file
time table at the end of the run, so the CI log shows where the test time goes."""
import os
from collections import defaultdict

os.environ.setdefault('OMP_NUM_THREADS', '1'); os.environ.setdefault('MKL_NUM_THREADS', '1')
_seconds = defaultdict(float)

def pytest_runtest_logreport(report):
    _seconds[report.nodeid.split('::')[0]] += report.duration

def pytest_terminal_summary(terminalreporter):
    if not _seconds: return
    terminalreporter.section('seconds per test file')
    for f, s in sorted(_seconds.items(), key=lambda kv: -kv[1]): terminalreporter.write_line(f'{s:7.1f} s  {f}')
    terminalreporter.write_line(f'{sum(_seconds.values()):7.1f} s  total')
