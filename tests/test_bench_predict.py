"bench/predict.py at a tiny size: both models predicted through segthor-predict's code, time split into forward and other"
import importlib.util, os, subprocess, sys
from pathlib import Path
import pytest, torch

torch.set_num_threads(1)
BENCH = Path(__file__).resolve().parents[1]/'bench'/'predict.py'
spec = importlib.util.spec_from_file_location('bench_predict', BENCH)
bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
TINY = ['--size', '32', '32', '16', '--slice', '32', '--patch', '16', '16', '16', '--unet_size', 'tiny']


def rows_of(out:str)->dict:
    "{model: cells} of the printed markdown table"
    return {c[0]: c[1:] for c in ([s.strip() for s in l.strip('|').split('|')] for l in out.splitlines() if l.startswith('| '))}


def check_table(out:str):
    rows = rows_of(out)
    for m in ('ENet 2D', '3D U-Net (tiny)'):
        total, fwd, other = map(float, rows[m][:3])
        assert fwd > 0 and other >= 0 and abs(total - fwd - other) <= .02, rows[m]
        assert float(rows[m][4]) > 0 and rows[m][6] in ('yes', 'NO'), rows[m]   # peak RSS, verdict
    assert rows['ENet 2.5D (k = 2)'][0].startswith('not measured: ') and rows['nnU-Net 3d_fullres'][0].startswith('not measured: ')


def test_bench_predict_splits_the_time(tmp_path, capsys):
    bench.main([*TINY, '--inprocess', '--keep', str(tmp_path)])
    check_table(capsys.readouterr().out)
    assert (tmp_path/'out'/'enet'/'Patient_01.nii.gz').exists() and (tmp_path/'out'/'unet3d'/'Patient_01.nii.gz').exists()
    import segthor_nb.predict as P
    assert P.load_run.__name__ == 'load_run'   # the timing hook is undone


@pytest.mark.slow
def test_bench_predict_one_process_per_model(tmp_path):
    r = subprocess.run([sys.executable, BENCH, *TINY, '--keep', tmp_path], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1'), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    check_table(r.stdout)
