"""`segthor-nnunet-export` and `segthor-test3dnnunet` end to end, as subprocesses, on tiny phantoms in SEGTHOR layout."""
import json, os, re, subprocess, sys, threading, time
from pathlib import Path
import numpy as np, pandas as pd, pytest
from segthor_nb.data_fix import write_phantom, make_phantom, load_volume, save_volume
from segthor_nb.slicing import split_patients, slice_patient, SliceDataset
import torch
from segthor_nb.metrics import metrics3d
from segthor_nb.nnunet import NnunetError, export_nnunet, nnunet_gt_folder, run_nnunet

SHAPE, SLICES, SEED = (48, 48), 16, 7
BIN = Path(sys.executable).parent


def run(exe, *args, **env):
    "Run a console script as a subprocess, nnU-Net variables only as given"
    base = {k: v for k, v in os.environ.items() if not k.startswith('nnUNet_')}
    return subprocess.run([str(BIN/exe), *map(str, args)], capture_output=True, text=True, env=base | env)


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    "6 labelled phantom patients and one unlabelled test CT"
    return write_phantom(tmp_path_factory.mktemp('nnu')/'phantom', n_patients=6, shape=SHAPE, n_slices=SLICES, seed=SEED, n_test=1)


def test_export_holds_out_the_test_patients_and_passes_nnunets_check(tree, tmp_path):
    raw, pre = tmp_path/'raw', tmp_path/'pre'
    r = run('segthor-nnunet-export', tree, '--raw_root', raw, '--preprocessed_root', pre, '--retains', 3, '--retains_test', 1, '--num_workers', 1)
    assert r.returncode == 0, r.stderr
    assert 'nnU-Net integrity check passed' in r.stdout
    split = split_patients([f'Patient_{i:02d}' for i in range(1, 7)], retains=3, seed=0, create_test=True, retains_test=1)
    ds = raw/'Dataset055_SEGTHOR'
    cases = lambda sub, cut: sorted(f.name[:-cut] for f in (ds/sub).glob('*.nii.gz'))
    assert cases('imagesTr', 12) == cases('labelsTr', 7) == sorted(split['train'] + split['val'])
    assert cases('imagesTs', 12) == sorted(split['test'] + ['Patient_41']) and cases('labelsTs', 7) == split['test']
    assert json.loads((ds/'dataset.json').read_text())['numTraining'] == 5
    folds = [dict(train=split['train'], val=split['val'])]
    assert json.loads((ds/'splits_final.json').read_text()) == folds
    assert json.loads((pre/'Dataset055_SEGTHOR/splits_final.json').read_text()) == folds
    # voxels and geometry survive; labels are uint8
    p = split['test'][0]
    gt0, g0 = load_volume(tree/f'train/{p}/GT.nii.gz', 'gt')
    gt1, g1 = load_volume(ds/f'labelsTs/{p}.nii.gz')
    assert np.array_equal(gt1, gt0) and np.array_equal(g1.affine, g0.affine) and gt1.dtype == np.uint8
    # an existing export is not replaced without --overwrite, and is with it
    before = (ds/'dataset.json').read_bytes()
    r = run('segthor-nnunet-export', tree, '--raw-root', raw, '--retains', 3, '--retains-test', 1, '--no-verify')
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].endswith('pass overwrite=True (--overwrite) to replace it')
    assert (ds/'dataset.json').read_bytes() == before
    r = run('segthor-nnunet-export', tree, '--retains', 2, '--retains_test', 0, '--overwrite', '--no_verify', nnUNet_raw=str(raw))
    assert r.returncode == 0, r.stderr   # $nnUNet_raw is the default root; --retains_test 0 holds out no labelled patient
    assert cases('imagesTr', 12) == [f'Patient_{i:02d}' for i in range(1, 7)] and cases('imagesTs', 12) == ['Patient_41']
    assert not (ds/'labelsTs').exists()   # the previous export's held-out cases are gone
    with pytest.raises(NnunetError, match='held out no labelled patient'): nnunet_gt_folder(ds)


def test_export_errors_are_one_line(tree, tmp_path):
    r = run('segthor-nnunet-export', tree)
    assert r.returncode == 1 and r.stderr.strip() == 'segthor-nnunet-export: no nnU-Net raw root: pass --raw_root or set $nnUNet_raw'
    r = run('segthor-nnunet-export', tree, '--raw_root', tmp_path/'raw')  # the study's 12 + 4 split needs more than 6 patients
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and re.search(r'needs ≥ \d+ patients.*found 6', r.stderr)


def test_tampered_tree_is_refused_until_fixed(tmp_path):
    src = write_phantom(tmp_path/'tampered', n_patients=6, shape=SHAPE, n_slices=SLICES, seed=SEED, tamper=True)
    r = run('segthor-nnunet-export', src, '--raw_root', tmp_path/'raw', '--retains', 3, '--retains_test', 1, '--no_verify')
    assert r.returncode == 1 and "looks like the course's tampered labels" in r.stderr and 'segthor-fix' in r.stderr
    for i in range(1, 7):  # stand-in for segthor-fix: the clean labels as GT_fixed.nii.gz beside each tampered GT.nii.gz
        _, clean, geom = make_phantom(SHAPE, SLICES, SEED*1000 + i)
        save_volume(clean, geom, src/f'train/Patient_{i:02d}/GT_fixed.nii.gz')
    r = run('segthor-nnunet-export', src, '--raw_root', tmp_path/'raw', '--retains', 3, '--retains_test', 1, '--num_workers', 1, '--no_verify')
    assert r.returncode == 0, r.stderr
    ds = tmp_path/'raw/Dataset055_SEGTHOR'
    assert json.loads((ds/'segthor_export.json').read_text())['gt_name'] == 'GT_fixed.nii.gz'
    label = next((ds/'labelsTr').glob('*.nii.gz')); pid = label.name[:-7]
    exported, fixed, tampered = (load_volume(f, 'gt')[0] for f in (label, src/f'train/{pid}/GT_fixed.nii.gz', src/f'train/{pid}/GT.nii.gz'))
    assert np.array_equal(exported, fixed) and not np.array_equal(exported, tampered)


@pytest.fixture(scope='module')
def scored(tree, tmp_path_factory):
    "An export (3 held-out patients) and stand-in predictions: the first held-out patient exact, the second shifted, the third missing"
    tmp = tmp_path_factory.mktemp('score')
    split = split_patients([f'Patient_{i:02d}' for i in range(1, 7)], retains=4, seed=0, create_test=True, retains_test=3)
    ds = export_nnunet(tree, tmp/'raw', split=split)
    preds = tmp/'preds'
    for pid, shift in zip(split['test'][:2], (0, 1)):
        gt, geom = load_volume(ds/f'labelsTs/{pid}.nii.gz', 'gt')
        save_volume(np.roll(gt, shift, axis=0), geom, preds/f'{pid}.nii.gz')
    return tmp, ds, preds, split


def test_test3dnnunet_scores_the_held_out_patients(scored):
    tmp, ds, preds, split = scored
    out = tmp/'res.csv'
    r = run('segthor-test3dnnunet', '--pred_dir', preds, '--gt_dir', ds, '--out', out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"ground truth: the Patient_XX volumes in {ds/'labelsTs'}"
    df = pd.read_csv(out)
    assert list(df.columns) == ['patient', 'slice', 'class', 'metric', 'value'] and sorted(df.patient.unique()) == split['test']
    dice = df[df.metric == 'dice'].set_index(['patient', 'class'])['value']
    exact, shifted, missing = split['test']
    assert (dice[exact] == 1).all() and (dice[missing] == 0).all() and (dice[shifted] < 1).all()
    assert f'{missing}: no prediction' in r.stderr and 'misses' in r.stdout
    summary = pd.read_csv(tmp/'res_summary.csv')
    assert (summary.groupby('organ')['misses'].max() == 1).all()
    # the report beside it, as segthor-test3d writes one: summary.md with the per-organ means, the per-organ figures
    assert all((tmp/f'res_{n}').read_bytes()[:4] == b'\x89PNG' for n in ('organ_dice.png', 'violins_hd95.png'))
    md = (tmp/'res_summary.md').read_text()
    for organ, k in [('esophagus', 1), ('heart', 2), ('trachea', 3), ('aorta', 4)]:
        assert f"| {organ} | {dice.xs(k, level='class').mean():.3f} ± " in md
    assert 'scoring: 100%' in r.stderr and '3/3' in r.stderr       # a progress bar, one step per held-out patient
    # the values are metrics3d's on the same arrays, with the GT's spacing
    gt, geom = load_volume(ds/f'labelsTs/{shifted}.nii.gz', 'gt')
    ref = metrics3d(load_volume(preds/f'{shifted}.nii.gz', 'gt')[0], gt, geom.spacing)
    hd95 = df[(df.patient == shifted) & (df.metric == 'hd95')].set_index('class')['value']
    np.testing.assert_allclose(hd95.to_numpy(), ref['hd95'].to_numpy(), rtol=1e-12)
    # no silent overwrite
    before = out.read_bytes()
    r = run('segthor-test3dnnunet', '--pred-dir', preds, '--gt-dir', ds, '--out', out)
    assert r.returncode == 1 and r.stderr.strip().endswith('exists; pass --overwrite to replace it') and out.read_bytes() == before
    assert run('segthor-test3dnnunet', '--pred_dir', preds, '--gt_dir', ds, '--out', out, '--overwrite').returncode == 0


def test_test3dnnunet_against_a_segthor_tree_scores_every_patient(scored, tree):
    tmp, ds, preds, split = scored
    r = run('segthor-test3dnnunet', '--pred_dir', preds, '--gt_dir', tree, '--out', tmp/'all.csv')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"ground truth: GT.nii.gz of each Patient_XX folder in {tree/'train'}"
    df = pd.read_csv(tmp/'all.csv')
    assert df.patient.nunique() == 6   # every labelled patient; the 4 without a prediction are misses
    assert (df[(df.metric == 'dice') & ~df.patient.isin(split['test'][:2])]['value'] == 0).all()
    r = run('segthor-test3dnnunet', '--pred_dir', tmp/'nowhere', '--gt_dir', ds, '--out', tmp/'x.csv')
    assert r.returncode == 1 and r.stderr.strip().endswith('no such prediction folder')


def test_test3dnnunet_study_grid_is_the_studys_test3dnnunet(scored, tree):
    """--grid study with test3dnnunet.py's own flags: nnU-Net's volumes resized to the slice grid by torch's nearest, scored
    with the study's formulas, background included; its test_metrics.csv (IoU before Hausdorff) and arrays"""
    tmp, ds, preds, split = scored
    for pid in split['test']: slice_patient(pid, tree/f'train/{pid}/{pid}.nii.gz', tree/f'train/{pid}/GT.nii.gz', tmp/'sliced/test', (24, 24))
    r = run('segthor-test3dnnunet', '--folder', preds, '--grid', 'study', '--dataset', 'SEGTHOR', '--data_root', tmp/'sliced',
            '--out', tmp/'study.csv', '--dest', tmp/'study', '--gpu', '--crf', '--finetune_crf', '--normalize', '--num_workers', 2)
    assert r.returncode == 0, r.stderr
    exact, shifted, missing = split['test']
    assert f'{missing}: no prediction' in r.stderr and 'all background' in r.stderr
    csv = pd.read_csv(tmp/'study/metrics3d/test_metrics.csv', index_col=0, dtype={'patient_id': str})
    assert list(csv['class'].unique()) == ['Background', 'Esophagus', 'Heart', 'Trachea', 'Aorta']
    assert list(csv['metric_type'].unique()) == ['Dice', 'Sensitivity', 'Specificity', 'IoU', 'Hausdorff', 'Precision', 'Volumetric', 'VOE']
    assert list(csv['patient_id'].unique()) == [p.split('_')[1] for p in split['test']]
    # the reference: the study's resize (torch, nearest) of the one-hot prediction, its Dice against the GT slices
    gt = SliceDataset(tmp/'sliced', 'test', 5)
    for pid in (exact, shifted):
        lab = torch.from_numpy(load_volume(preds/f'{pid}.nii.gz', 'gt')[0].astype(np.int64))
        onehot = torch.nn.functional.one_hot(lab.permute(2, 0, 1), 5).permute(3, 0, 1, 2).float()       # (K, Z, X, Y)
        p = torch.nn.functional.interpolate(onehot, size=(24, 24), mode='nearest').to(torch.uint8)
        g = torch.stack([gt[i]['gts'] for i in range(len(gt)) if gt.names[i].startswith(pid)], 1).to(torch.uint8)
        dice = ((2*(p & g).sum((1, 2, 3)).float() + 1e-8)/((p.sum((1, 2, 3)) + g.sum((1, 2, 3))).float() + 1e-8)).numpy()
        got = csv[(csv.patient_id == pid.split('_')[1]) & (csv.metric_type == 'Dice')]['metric_value'].to_numpy()
        np.testing.assert_allclose(got, dice, rtol=1e-6)
        assert (got[1:] < 1).any()   # even the exact prediction: torch's nearest takes the left pixel, the slicing the centre
    assert np.load(tmp/'study/metrics3d/Hausdorff.npy').shape == (3, 5, 1)
    md = (tmp/'study_summary.md').read_text()                       # the report: the study's metrics, background included
    assert '| organ | dice | sensitivity | specificity | hd |' in md and '| background |' in md and (tmp/'study_violins_hd.png').exists()
    r = run('segthor-test3dnnunet', '--folder', preds, '--out', tmp/'n.csv')
    assert r.returncode == 1 and r.stderr.strip().endswith('--gt_dir is required with --grid native: the exported dataset, a SEGTHOR tree or a GT folder')


def test_run_nnunet_streams_each_line_to_stdout_and_the_log(tmp_path, capsys):
    "Each line reaches the terminal and the log while the command still runs; a failed rerun appends, never erases"
    log, seen = tmp_path/'logs'/'train.log', tmp_path/'seen'
    child = ("import os, sys, time\nprint('epoch 0')\nt = time.time()\n"          # no flush: the runner must unbuffer it
             "while not os.path.exists(sys.argv[1]) and time.time() - t < 30: time.sleep(.02)\n"
             "print('epoch 1' if os.path.exists(sys.argv[1]) else 'not streamed')")
    run = threading.Thread(target=run_nnunet, args=(['python', '-c', child, seen], dict(os.environ), log))
    run.start(); t = time.time()
    while 'epoch 0' not in (log.read_text() if log.exists() else '') and time.time() - t < 30: time.sleep(.02)
    seen.touch(); run.join()
    assert capsys.readouterr().out == 'epoch 0\nepoch 1\n'                # on stdout, as they came
    with pytest.raises(NnunetError, match=r"failed \(exit 3\):\nno such dataset"):
        run_nnunet(['python', '-c', 'import sys; print("no such dataset"); sys.exit(3)'], dict(os.environ), log, echo=False)
    assert capsys.readouterr().out == ''
    lines = log.read_text().splitlines()
    assert [l for l in lines if not l.startswith('#')] == ['epoch 0', 'epoch 1', 'no such dataset']
    heads = [l for l in lines if l.startswith('# 2')]
    assert len(heads) == 2 and 'import os, sys, time\\nprint(' in heads[0] and 'sys.exit(3)' in heads[1]   # the command, one line
    assert lines[3].startswith('# exit 0 after') and lines[-1].startswith('# exit 3 after')
