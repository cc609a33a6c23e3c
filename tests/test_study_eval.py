"""The study's evaluation, reproduced: `segthor-test3d --grid study` and `segthor-test --preset study` (as subprocesses)
on a tiny phantom and a one-epoch ENet, checked against the study's formulas written out here independently (torch
one-hot arithmetic as in its metrics3d.py / metrics.py, medpy's Hausdorff algorithm, scipy's directed_hausdorff),
and its files (test_metrics.csv, csv2npy.py's arrays) in its layout."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from scipy import ndimage as ndi
from scipy.spatial.distance import directed_hausdorff
from segthor_nb.models import load_run
from segthor_nb.slicing import SliceDataset
from conftest import tiny_run

BIN = Path(sys.executable).parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}
NAMES = ['Background', 'Esophagus', 'Heart', 'Trachea', 'Aorta']


def run(cmd, *args):
    return subprocess.run([str(BIN/cmd), *map(str, args)], capture_output=True, text=True, env=ENV)


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    "A tiny sliced phantom (4 patients, 2 for validation) and a one-epoch ENet trained on it"
    return tiny_run(tmp_path_factory.mktemp('study_eval'), n_patients=4, retains=2)


def predicted(run_dir, batch_size=8):
    "(slice names, predicted one-hot, GT one-hot) of the validation split: (N, 5, H, W) uint8, the study's way"
    ds = SliceDataset(json.loads((run_dir/'config.json').read_text())['data_root'], 'val', 5)
    net, x = load_run(run_dir), torch.stack([ds[i]['images'] for i in range(len(ds))])
    with torch.no_grad():
        logits = torch.cat([net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    pred = torch.nn.functional.one_hot(logits.softmax(1).argmax(1), 5).permute(0, 3, 1, 2).to(torch.uint8)
    return ds.names, pred, torch.stack([ds[i]['gts'] for i in range(len(ds))]).to(torch.uint8)


def medpy_hd(p, g):
    "medpy.metric.binary.hd's algorithm (face-connected borders, EDT); NaN where medpy raises"
    if not (p.any() and g.any()): return np.nan
    cross = ndi.generate_binary_structure(p.ndim, 1)
    bp, bg = p ^ ndi.binary_erosion(p, cross), g ^ ndi.binary_erosion(g, cross)
    return max(ndi.distance_transform_edt(~bg)[bp].max(), ndi.distance_transform_edt(~bp)[bg].max())


def study_formulas(p, g, dims):
    "The study's eight metrics of one-hot uint8 tensors, summed over `dims` (its ε terms, float32)"
    inter, union = (p & g).sum(dims).float(), (p | g).sum(dims).float()
    tp, tn = (p*g).sum(dims), ((1 - p)*(1 - g)).sum(dims)
    fp, fn = (p*(1 - g)).sum(dims), ((1 - p)*g).sum(dims)
    vp, vg = p.sum(dims).float(), g.sum(dims).float()
    iou = (inter + 1e-8)/(union + 1e-8)
    return dict(Dice=(2*inter + 1e-8)/((p.sum(dims) + g.sum(dims)).float() + 1e-8), Sensitivity=tp/(tp + fn + 1e-10),
                Specificity=tn/(tn + fp + 1e-10), IoU=iou, Precision=(inter + 1e-8)/(vp + 1e-8),
                Volumetric=1 - (vg - vp).abs()/(vg + vp + 1e-6), VOE=1 - iou)


def test_test3d_study_grid_is_the_studys_test3d(run_dir):
    dest = run_dir.parent/'study3d'
    r = run('segthor-test3d', '--from_checkpoint', run_dir/'best.safetensors', '--split', 'val', '--grid', 'study',
            '--include_background', '--dest', dest)
    assert r.returncode == 0, r.stderr
    assert "the study's grid" in r.stdout and not (dest/'predictions').exists()       # nothing stitched
    csv = pd.read_csv(dest/'metrics3d'/'test_metrics.csv', index_col=0, dtype={'patient_id': str})
    assert list(csv.columns) == ['patient_id', 'slice_name', 'class', 'metric_type', 'metric_value']
    assert csv['slice_name'].isna().all() and list(csv['class'].unique()) == NAMES
    assert list(csv['metric_type'].unique()) == ['Dice', 'Sensitivity', 'Specificity', 'Hausdorff', 'IoU', 'Precision', 'Volumetric', 'VOE']
    names, pred, gt = predicted(run_dir)
    patients = sorted({n.rsplit('_', 1)[0] for n in names})
    assert list(csv['patient_id'].unique()) == [p.split('_')[1] for p in patients]
    for k, pid in enumerate(patients):
        rows = [i for i, n in enumerate(names) if n.startswith(pid)]
        p, g = pred[rows].permute(1, 0, 2, 3), gt[rows].permute(1, 0, 2, 3)      # (K, Z, H, W), as the study permuted
        ref = study_formulas(p, g, (1, 2, 3)) | {'Hausdorff': [medpy_hd(a, b) for a, b in zip(p.numpy().astype(bool), g.numpy().astype(bool))]}
        got = csv[csv['patient_id'] == pid.split('_')[1]].set_index(['metric_type', 'class'])['metric_value']
        for m, v in ref.items():
            np.testing.assert_allclose(got[m].loc[NAMES].to_numpy(float), np.asarray(v, float), rtol=2e-6, err_msg=f'{pid} {m}')
        npy = np.load(dest/'metrics3d'/'Dice.npy')
        assert npy.shape == (len(patients), 5, 1)
        np.testing.assert_allclose(npy[k, :, 0], np.asarray(ref['Dice'], float), rtol=1e-6)
    ours = pd.read_csv(dest/'results3d.csv')                                          # our long table, the same values
    assert set(ours['metric']) == {'dice', 'sensitivity', 'specificity', 'hd', 'iou', 'precision', 'vs', 'voe', 'n_gt', 'n_pred'}


def test_test_study_preset_is_the_studys_test(run_dir):
    dest = run_dir.parent/'study2d'
    r = run('segthor-test', '--weights', run_dir, '--split', 'val', '--preset', 'study', '--batch_size', 3, '--num_workers', 1, '--dest', dest)
    assert r.returncode == 0, r.stderr
    csv = pd.read_csv(dest/'metrics2d'/'test_metrics.csv', index_col=0, dtype={'patient_id': str, 'slice_name': str})
    names, pred, gt = predicted(run_dir, 3)
    assert len(csv) == len(names)*4*8 and list(csv['class'].unique()) == NAMES[1:]    # no background, as test.py
    # the study's order: batch by batch of 3 slices (in file order, across patients), then metric, slice, class
    first = csv.iloc[:12]
    assert (first['metric_type'] == 'Dice').all() and list(first['slice_name'][::4]) == [n.rsplit('_', 1)[1] for n in names[:3]]
    assert csv.iloc[12]['metric_type'] == 'Sensitivity' and csv.iloc[8*12]['slice_name'] == names[3].rsplit('_', 1)[1]
    ref = study_formulas(pred[:, 1:], gt[:, 1:], (2, 3))
    ref['Hausdorff'] = torch.tensor([[max(directed_hausdorff(np.argwhere(gi), np.argwhere(pi))[0], directed_hausdorff(np.argwhere(pi), np.argwhere(gi))[0])
                                      for pi, gi in zip(ps.numpy(), gs.numpy())] for ps, gs in zip(pred[:, 1:], gt[:, 1:])])
    got = csv.assign(stem=csv['patient_id'].radd('Patient_') + '_' + csv['slice_name']).set_index(['metric_type', 'stem', 'class'])['metric_value']
    for m, v in ref.items():
        np.testing.assert_allclose(got[m].unstack('class')[NAMES[1:]].loc[names].to_numpy(float), v.numpy().astype(float), rtol=2e-6, err_msg=m)
    assert np.isinf(got['Hausdorff']).any() or (got['Hausdorff'] == 0).any()          # empty slices: the study's 0 / inf
    hd = np.load(dest/'metrics2d'/'Hausdorff.npy')                                    # csv2npy: the mean over each patient's slices
    assert hd.shape == (2, 4, 1)


def test_a_study_preset_run_is_scored_as_the_study_scored(run_dir, tmp_path):
    study_run = tmp_path/'run'; shutil.copytree(run_dir, study_run)
    cfg = json.loads((study_run/'config.json').read_text()); (study_run/'config.json').write_text(json.dumps(cfg | {'preset': 'study'}))
    r = run('segthor-test3d', '--weights', study_run, '--split', 'val', '--dest', tmp_path/'e', '--num_workers', 0)
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'e'/'metrics3d'/'test_metrics.csv').exists() and (tmp_path/'e'/'violins_hd.png').exists()
    r = run('segthor-test3d', '--weights', study_run, '--split', 'val', '--dest', tmp_path/'n', '--preset', 'ours', '--num_workers', 0)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path/'n'/'metrics3d').exists() and (tmp_path/'n'/'violins_hd95.png').exists()
    r = run('segthor-test3d', '--weights', run_dir, '--split', 'val', '--dest', tmp_path/'d', '--debug')
    assert r.returncode == 1 and r.stderr.strip().endswith('add --grid study')
    r = run('segthor-test', '--weights', run_dir, '--split', 'val', '--dest', tmp_path/'p', '--mode', 'partial')
    assert r.returncode == 1 and "--mode 'partial'" in r.stderr
