"""nbs/06_interpretability.ipynb as a papermill notebook: its `parameters` cell sits right after the imports and
survives `nbdev-clean`; a headless run writes the study's figures where `-p work` says (slow: it trains four tiny runs)."""
import os, subprocess, sys
from pathlib import Path
import nbformat, pytest

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT/'nbs'/'06_interpretability.ipynb'
BIN = Path(sys.executable).parent
ENV = {**os.environ, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", 'OMP_NUM_THREADS': '1'}


def test_papermill_run_writes_the_figures(tmp_path):
    out = tmp_path/'06.ipynb'
    r = subprocess.run([str(BIN/'papermill'), str(NB), str(out), '--cwd', str(ROOT/'nbs'), '-p', 'work', str(tmp_path/'w'),
                        '-p', 'organ', 'heart', '-p', 'k', '3'], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr[-4000:]
    assert {p.name for p in (tmp_path/'w'/'figures').iterdir()} == {'bars.png', 'violins.png', 'ablation.png', 'dice_along_z.png'}
    assert {p.name for p in (tmp_path/'w'/'runs').iterdir()} == {'none', 'norm', 'aug', 'both', 'gt_eroded'}
    ran = nbformat.read(out, 4)
    assert any("k = 3" in c.source for c in ran.cells if 'injected-parameters' in c.metadata.get('tags', []))
