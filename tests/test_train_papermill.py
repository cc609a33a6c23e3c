"""nbs/04_train.ipynb as a papermill experiment: a headless run of a tiny configuration leaves the executed notebook
(with its curves) beside the checkpoints (the `parameters` cell itself: tests/test_notebook_parameters.py).

`slow`: it executes every cell of the notebook again, which `nbdev-test` already does; what only this test adds is
papermill's parameter injection and the executed copy written beside the results."""
import json, os, subprocess, sys
from pathlib import Path
import nbformat, pandas as pd, pytest

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT/'nbs'/'04_train.ipynb'
BIN = Path(sys.executable).parent
ENV = {**{k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", 'OMP_NUM_THREADS': '1'}


@pytest.mark.slow
def test_papermill_runs_a_tiny_experiment(tmp_path):
    dest = tmp_path/'runs'/'x'
    out = dest/'04_train.ipynb'; dest.mkdir(parents=True)        # papermill writes into an existing folder
    r = subprocess.run([str(BIN/'papermill'), str(NB), str(out), '--cwd', str(ROOT/'nbs'),
                        '-p', 'dataset', 'PHANTOM', '-p', 'epochs', '2', '-p', 'dest', str(dest),
                        '-y', 'phantom: {n_patients: 3, size: 32, n_slices: 8, retains: 1}'],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr[-4000:]
    ran = nbformat.read(out, 4)
    injected = [c for c in ran.cells if 'injected-parameters' in c.metadata.get('tags', [])]
    assert injected and "epochs = 2" in injected[0].source
    history = pd.read_csv(dest/'history.csv')
    assert len(history) == 2 and (history.train_loss > 0).all()
    assert {'best.safetensors', 'last.safetensors', 'last_state.pt', 'curves.png', 'overlays.png', 'config.json'} <= {p.name for p in dest.iterdir()}
    assert json.loads((dest/'config.json').read_text())['epochs'] == 2
    i = next(i for i, c in enumerate(ran.cells) if c.cell_type == 'markdown' and "experiment" in c.source and c.source.startswith('## '))
    assert any('image/png' in o.get('data', {}) for c in ran.cells[i:] for o in c.get('outputs', []))   # the curves, inline
