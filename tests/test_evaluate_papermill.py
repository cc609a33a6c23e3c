"""nbs/05b_evaluate.ipynb under papermill: `-p run_dir` evaluates an existing training run headless, in 2D and 3D."""
import os, subprocess, sys
from pathlib import Path
import nbformat, numpy as np, pandas as pd, torch
from segthor_nb.train import tiny_phantom, train

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT/'nbs'/'05b_evaluate.ipynb'
BIN = Path(sys.executable).parent
ENV = {**{k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", 'OMP_NUM_THREADS': '1'}


def test_papermill_evaluates_a_run(tmp_path):
    torch.set_num_threads(1)
    root = tiny_phantom(tmp_path/'data', n_patients=3, size=32, n_slices=8, retains=1)
    run_dir = tmp_path/'run'
    train(dataset='PHANTOM', data_root=str(root), dest=str(run_dir), epochs=1, batch_size=4, num_workers=0, progress=False)
    out = run_dir/'05b_evaluate.ipynb'
    r = subprocess.run([str(BIN/'papermill'), str(NB), str(out), '--cwd', str(ROOT/'nbs'), '-p', 'run_dir', str(run_dir),
                        '-p', 'source_dir', str(root/'source')], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr[-4000:]
    ran = nbformat.read(out, 4)
    injected = [c for c in ran.cells if 'injected-parameters' in c.metadata.get('tags', [])]
    assert injected and str(run_dir) in injected[0].source
    dest = run_dir/'eval'                                                   # the default dest
    res3d, res2d = pd.read_csv(dest/'results3d.csv'), pd.read_csv(dest/'results2d.csv')
    assert list(res3d['patient'].unique()) == ['Patient_01'] and res3d['slice'].isna().all()
    assert np.isfinite(res3d.query("metric == 'dice'")['value']).all()
    assert sorted(res2d['slice'].unique()) == list(range(8))
    assert len(list((dest/'png').glob('*.png'))) == 8
    i = next(i for i, c in enumerate(ran.cells) if c.cell_type == 'markdown' and c.source.startswith("## This run's evaluation"))
    assert sum('image/png' in o.get('data', {}) for c in ran.cells[i:] for o in c.get('outputs', [])) == 3   # the figures, inline
