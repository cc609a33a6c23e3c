"""`segthor-metrics3d` end to end, as a subprocess, on a tiny phantom in SEGTHOR layout; and nbs/05_metrics3d.ipynb under
papermill, scoring two given folders."""
import os, shutil, subprocess, sys
from pathlib import Path
import nbformat, numpy as np, pandas as pd, pytest
from segthor_nb.data_fix import write_phantom, load_volume, save_volume, Geometry
from segthor_nb.metrics import metrics3d, keep_largest_cc, score_folders

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXE = str(BIN / 'segthor-metrics3d')


def run(*args):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "GT for 3 phantom patients; predictions: 01 exact, 02 shifted + a stray blob, 03 missing, 99 without GT"
    tmp = tmp_path_factory.mktemp('m3d')
    root = write_phantom(tmp / 'phantom', n_patients=3, shape=(48, 48), n_slices=20, seed=5)
    preds = tmp / 'preds'
    for pid in ('Patient_01', 'Patient_02'):
        g, geom = load_volume(root / f'train/{pid}/GT.nii.gz', 'gt')
        p = g.copy()
        if pid == 'Patient_02':
            p = np.roll(g, 1, axis=1)
            p[2:5, 2:5, 2:5] = 2  # a stray heart blob in the corner
        save_volume(p, geom, preds / f'pred_{pid}.nii.gz')
    save_volume(p, geom, preds / 'Patient_99.nii.gz')
    return tmp, root, preds


def test_scores_every_gt_patient_and_refuses_overwrite(data):
    tmp, root, preds = data
    out = tmp / 'res.csv'
    r = run('--pred_dir', preds, '--gt_dir', root, '--out', out)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out)
    assert list(df.columns) == ['patient', 'slice', 'class', 'metric', 'value'] and df['slice'].isna().all()
    assert sorted(df['patient'].unique()) == ['Patient_01', 'Patient_02', 'Patient_03']
    dice = df[df.metric == 'dice'].set_index(['patient', 'class'])['value']
    assert (dice['Patient_01'] == 1).all() and (dice['Patient_03'] == 0).all() and (dice['Patient_02'] < 1).all()
    assert 'Patient_03: no prediction' in r.stderr and 'Patient_99' in r.stderr
    assert 'misses' in r.stdout and 'esophagus' in r.stdout  # the summary table
    # the values are metrics3d's on the same arrays, with the GT header's spacing
    g, geom = load_volume(root / 'train/Patient_02/GT.nii.gz', 'gt')
    p, _ = load_volume(preds / 'pred_Patient_02.nii.gz', 'gt')
    ref = metrics3d(p, g, geom.spacing)
    hd95 = df[(df.patient == 'Patient_02') & (df.metric == 'hd95')].set_index('class')['value']
    np.testing.assert_allclose(hd95.to_numpy(), ref['hd95'].to_numpy(), rtol=1e-12)
    before = out.read_bytes()
    r = run('--pred-dir', preds, '--gt-dir', root, '--out', out)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].endswith('exists; pass --overwrite to replace it')
    assert out.read_bytes() == before
    assert run('--pred_dir', preds, '--gt_dir', root, '--out', out, '--overwrite').returncode == 0


def test_writes_summary_md_and_figures_beside_the_csv(data):
    "The report a reader looks at: <out>_summary.md with the per-organ means, the two per-organ figures; a progress bar"
    tmp, root, preds = data
    out = tmp / 'rep' / 'scores.csv'
    r = run('--pred_dir', preds, '--gt_dir', root, '--out', out)
    assert r.returncode == 0, r.stderr
    assert 'scoring: 100%' in r.stderr and '3/3' in r.stderr           # one step per GT patient, on stderr
    assert sorted(f.name for f in out.parent.iterdir()) == ['scores.csv', 'scores_organ_dice.png', 'scores_summary.md', 'scores_violins_hd95.png']
    assert all((out.parent / n).read_bytes()[:4] == b'\x89PNG' for n in ('scores_organ_dice.png', 'scores_violins_hd95.png'))
    md = (out.parent / 'scores_summary.md').read_text().splitlines()
    df = pd.read_csv(out)
    for organ, k in [('esophagus', 1), ('heart', 2), ('trachea', 3), ('aorta', 4)]:
        row = next(l for l in md if l.startswith(f'| {organ} |')).split(' | ')
        dice = df[(df.metric == 'dice') & (df['class'] == k)]['value']
        assert row[1] == f'{dice.mean():.3f} ± {dice.std():.3f}'       # mean ± sd over the 3 patients (the missed one: 0)
        assert row[-1].strip(' |') == '1'                              # Patient_03: a miss
    (out.parent / 'scores.csv').unlink()                               # an earlier report is not replaced silently either
    r = run('--pred_dir', preds, '--gt_dir', root, '--out', out)
    assert r.returncode != 0 and 'scores_summary.md exists; pass --overwrite' in r.stderr and not out.exists()


def test_lcc_and_spacing_options(data):
    tmp, root, preds = data
    r = run('--pred_dir', preds, '--gt_dir', root, '--out', tmp / 'lcc.csv', '--lcc', '--spacing-from', '1,1,1', '--nsd-tol', '1')
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp / 'lcc.csv')
    g, _ = load_volume(root / 'train/Patient_02/GT.nii.gz', 'gt')
    p, _ = load_volume(preds / 'pred_Patient_02.nii.gz', 'gt')
    ref = metrics3d(keep_largest_cc(p), g, (1, 1, 1), nsd_tol=1)
    got = df[(df.patient == 'Patient_02') & (df.metric == 'hd')].set_index('class')['value']
    np.testing.assert_allclose(got.to_numpy(), ref['hd'].to_numpy())
    assert ref.loc[2, 'hd'] < metrics3d(p, g, (1, 1, 1)).loc[2, 'hd']  # the stray blob was removed


def test_grid_mismatch_is_one_line_naming_both_files_unless_resampled(data):
    tmp, root, _ = data
    g, geom = load_volume(root / 'train/Patient_01/GT.nii.gz', 'gt')
    flip = np.diag([-1., 1, 1, 1]); flip[0, 3] = g.shape[0] - 1
    preds = tmp / 'flipped'
    save_volume(g[::-1].copy(), Geometry.from_affine(geom.affine @ flip, g.shape), preds / 'Patient_01.nii.gz')
    gt_dir = tmp / 'gt1'
    save_volume(g, geom, gt_dir / 'Patient_01_GT.nii.gz')  # flat GT folder
    r = run('--pred_dir', preds, '--gt_dir', gt_dir, '--out', tmp / 'flip.csv')
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and 'different grids' in last and 'Patient_01.nii.gz' in last and 'Patient_01_GT.nii.gz' in last
    r = run('--pred_dir', preds, '--gt_dir', gt_dir, '--out', tmp / 'flip.csv', '--resample')
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp / 'flip.csv')
    assert (df[df.metric == 'dice']['value'] == 1).all()


def test_label_file_follows_the_core_rule_and_is_named(data):
    "GT_fixed.nii.gz wherever every patient has one (here: the labels shifted by a voxel), and the command says so"
    tmp, root, preds = data
    fixed = tmp / 'fixed'
    shutil.copytree(root, fixed)
    for d in (fixed / 'train').iterdir():
        g, geom = load_volume(d / 'GT.nii.gz', 'gt')
        save_volume(np.roll(g, 1, axis=1), geom, d / 'GT_fixed.nii.gz')
    r = run('--pred_dir', preds, '--gt_dir', fixed, '--out', tmp / 'fixed.csv')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f'ground truth: GT_fixed.nii.gz of each Patient_XX folder in {fixed}'
    got = pd.read_csv(tmp / 'fixed.csv')
    pd.testing.assert_frame_equal(got, score_folders(preds, fixed, gt_name='GT_fixed.nii.gz'), check_dtype=False)
    dice = got.query("metric == 'dice'").set_index(['patient', 'class'])['value']
    assert (dice['Patient_01'] < 1).all() and dice['Patient_02'][[1, 3, 4]].eq(1).all()  # Patient_02's prediction: the shifted GT
    r = run('--pred_dir', preds, '--gt_dir', fixed, '--out', tmp / 'gt.csv', '--gt_name', 'GT.nii.gz')
    assert r.returncode == 0 and r.stdout.startswith('ground truth: GT.nii.gz of each Patient_XX folder')
    assert (pd.read_csv(tmp / 'gt.csv').query("patient == 'Patient_01' and metric == 'dice'")['value'] == 1).all()


def test_papermill_scores_two_folders_like_score_folders(data, tmp_path):
    "nbs/05_metrics3d.ipynb with -p pred_dir -p gt_dir: score_folders' scores, and the figures, in the executed notebook"
    tmp, root, preds = data
    nb_out, csv = tmp_path / 'metrics3d.ipynb', tmp_path / 'scores.csv'
    r = subprocess.run([str(BIN / 'papermill'), str(ROOT / 'nbs' / '05_metrics3d.ipynb'), str(nb_out), '--cwd', str(ROOT / 'nbs'),
                        '-p', 'pred_dir', str(preds), '-p', 'gt_dir', str(root), '-p', 'out', str(csv)],
                       capture_output=True, text=True, env={**{k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}, 'OMP_NUM_THREADS': '1',   # figures inline, as a user's papermill shows them
                            'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert r.returncode == 0, r.stderr[-4000:]
    pd.testing.assert_frame_equal(pd.read_csv(csv), score_folders(preds, root), check_dtype=False)
    ran = nbformat.read(nb_out, 4)
    text = lambda c: ''.join(o.get('text', '') + str(o.get('data', {}).get('text/plain', '')) for o in c.get('outputs', []))
    said = next(text(c) for c in ran.cells if c.cell_type == 'code' and 'res = score_folders(pred_dir' in c.source)
    assert f'ground truth: GT.nii.gz in {root}' in said and 'Patient_03' in said and 'misses' in said  # the summary of these folders
    last = next(c for c in reversed(ran.cells) if c.cell_type == 'code')
    assert 'plot_organ_bars(res' in last.source and any('image/png' in o.get('data', {}) for o in last.outputs)
    assert 'esophagus' in text(last)   # the summary table of the folders, under the figures
