"""bench/rehearsal.py: its time and memory measurement checked on child processes of known size, its ceiling, and (slow)
the whole rehearsal at reduced size."""
import csv, importlib.util, subprocess, sys, textwrap
from pathlib import Path
import pytest

BENCH = Path(__file__).parents[1]/'bench'/'rehearsal.py'
spec = importlib.util.spec_from_file_location('rehearsal', BENCH)
rehearsal = importlib.util.module_from_spec(spec); spec.loader.exec_module(rehearsal)
MB = 1e6


def holder(mb:int, seconds:float, child_mb:int=0)->list:
    "A python command that holds `mb` MB of touched memory for `seconds`, with a child holding `child_mb` meanwhile"
    code = f"""
        import subprocess, sys, time, numpy as np
        kid = subprocess.Popen([sys.executable, '-c', 'import time, numpy as np; a = np.ones({child_mb}*125000); time.sleep({seconds} + 1)']) if {child_mb} else None
        a = np.ones({mb}*125000)   # float64: 8 bytes each, {mb} MB
        time.sleep({seconds} + (1 if kid else 0))
        if kid: kid.wait()
    """
    return [sys.executable, '-c', textwrap.dedent(code)]


def test_measure_one_process():
    m = rehearsal.measure(holder(200, .5))
    assert m['rc'] == 0 and m['seconds'] >= .5
    assert 200*MB <= m['peak'] < 320*MB, m          # the array plus the interpreter and numpy
    assert 200*MB <= m['max_process_rss'] < 320*MB, m


def test_measure_process_tree():
    "A parent holding 150 MB while its child holds 150 MB: the tree's peak is their sum, the largest process one of them"
    m = rehearsal.measure(holder(150, 1., child_mb=150))
    assert m['rc'] == 0 and m['seconds'] >= 1
    assert 300*MB <= m['tree_pss'] < 480*MB, m
    assert 150*MB <= m['max_process_rss'] < 260*MB, m


def test_ceiling_names_the_stage(tmp_path):
    "A stage above the ceiling: exit 1 and the stage named (the phantom stage alone, one tiny patient, a 10 MB ceiling)"
    skip = ['validate', 'fix', 'slice', 'train', 'test3d', 'metrics3d', 'nnunet_export']
    r = subprocess.run([sys.executable, str(BENCH), '--dest', str(tmp_path), '--n_patients', '1', '--shape', '32', '32',
                        '--slices', '8', '8', '--workers', '1', '--ceiling_gb', '.01', '--skip', *skip], capture_output=True, text=True)
    assert r.returncode == 1 and 'stage phantom: peak' in r.stderr and 'above the 0.01 GB ceiling' in r.stderr, r.stderr
    rows = list(csv.DictReader(open(tmp_path/'rehearsal.csv')))
    assert [row['stage'] for row in rows] == ['phantom'] and float(rows[0]['peak_gb']) > .01


@pytest.mark.slow
def test_rehearsal_reduced(tmp_path):
    "Every README stage on 3 small patients: each in the table with a positive time and a peak under the ceiling"
    r = subprocess.run([sys.executable, str(BENCH), '--dest', str(tmp_path), '--n_patients', '3', '--shape', '64', '64',
                        '--slices', '24', '32', '--patch', '32', '--no_study'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = {row['stage']: row for row in csv.DictReader(open(tmp_path/'rehearsal.csv'))}
    assert list(rows) == ['phantom', 'validate', 'fix', 'slice', 'train', 'test3d', 'metrics3d', 'nnunet_export']
    for name, row in rows.items():
        assert row['rc'] == '0' and float(row['seconds']) > 0, row
        assert 0 < float(row['peak_gb']) < rehearsal.CEILING_GB, row
    assert '| train |' in (tmp_path/'rehearsal.md').read_text()
    assert not (tmp_path/'segthor_train').exists()   # the data is removed without --keep
