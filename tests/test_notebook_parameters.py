"""Every notebook papermill drives has one `parameters` cell, right after its imports, not exported, whose tag (and
only its tag) survives `nbdev-clean`, and a kernelspec papermill can start."""
import subprocess, sys
from pathlib import Path
import nbformat, pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PARAMS = {'04_train': {'dataset', 'data_root', 'dest', 'epochs', 'model', 'extra'},
          '05b_evaluate': {'run_dir', 'data_root', 'split', 'dest', 'source_dir', 'gt_name'},
          '06_interpretability': {'run_dir', 'weights', 'runs_dir', 'work', 'epochs', 'organ', 'k'},
          '07_pipeline': {'dest', 'n_patients', 'shape', 'n_slices', 'slice_size', 'epochs', 'seed'},
          '05_metrics3d': {'pred_dir', 'gt_dir', 'gt_name'}}

def tagged(nb): return [i for i, c in enumerate(nb.cells) if 'parameters' in c.metadata.get('tags', [])]

@pytest.mark.parametrize('name', sorted(PARAMS))
def test_parameters_cell(name, tmp_path):
    nb = nbformat.read(ROOT/'nbs'/f'{name}.ipynb', 4)
    assert len(tagged(nb)) == 1
    i = tagged(nb)[0]; cell = nb.cells[i]
    assert all(c.cell_type == 'code' and 'import' in c.source for c in nb.cells[1:i])   # right after the imports
    assert '#| export' not in cell.source
    assert PARAMS[name] <= {l.split('=')[0].strip() for l in cell.source.splitlines() if '=' in l and not l.startswith(' ')}
    assert nb.metadata.get('kernelspec', {}).get('name') == 'python3'
    cell.metadata.update(collapsed=True, scrolled=True, execution={'iopub.status.busy': '2024-01-01'})
    dirty = tmp_path/f'{name}.ipynb'; nbformat.write(nb, dirty)
    r = subprocess.run([str(BIN/'nbdev-clean'), '--fname', str(dirty)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    clean = nbformat.read(dirty, 4)
    assert tagged(clean) == [i] and dict(clean.cells[i].metadata) == {'tags': ['parameters']}
