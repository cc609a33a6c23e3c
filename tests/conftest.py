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


def tiny_run(tmp, n_patients:int, retains:int):
    "A tiny sliced phantom under `tmp`/data and a one-epoch ENet trained on it in `tmp`/run (one torch thread)"
    import torch
    from segthor_nb.train import tiny_phantom, train
    torch.set_num_threads(1)
    root = tiny_phantom(tmp/'data', n_patients=n_patients, size=32, n_slices=8, retains=retains)
    train(dataset='PHANTOM', data_root=str(root), dest=str(tmp/'run'), epochs=1, batch_size=4, num_workers=0, progress=False,
          deterministic=True)
    return tmp/'run'
