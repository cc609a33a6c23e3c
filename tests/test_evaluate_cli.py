"""`segthor-test3d` and `segthor-test` end to end, as subprocesses, on a tiny phantom and a one-epoch ENet: the study's
flag spellings, the printed summary, the files written and the one-line errors."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest
from segthor_nb.data_fix import load_volume
from segthor_nb.metrics import find_label_volumes, score_folders
from segthor_nb.models import save_weights
from segthor_nb.models import get_model
from segthor_nb.slicing import read_png
from conftest import tiny_run

BIN = Path(sys.executable).parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def run(cmd, *args):
    return subprocess.run([str(BIN/cmd), *map(str, args)], capture_output=True, text=True, env=ENV)


def one_line_error(r):
    "The command failed with exactly one line on stderr (warnings aside)"
    lines = [l for l in r.stderr.strip().splitlines() if 'Warning' not in l and not l.startswith(' ')]
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    "A tiny sliced phantom (3 patients, 1 for validation) and a one-epoch ENet trained on it"
    return tiny_run(tmp_path_factory.mktemp('evaluate'), n_patients=3, retains=1)


def test_test3d_predicts_on_the_native_grid_and_scores_like_score_folders(run_dir):
    root = Path(json.loads((run_dir/'config.json').read_text())['data_root'])
    dest = run_dir.parent/'eval3d'
    r = run('segthor-test3d', '--from_checkpoint', run_dir/'best.safetensors', '--split', 'val', '--source_dir', root/'source',
            '--dest', dest)
    assert r.returncode == 0, r.stderr
    assert 'misses' in r.stdout and 'heart' in r.stdout and 'scored in 3D' in r.stdout
    assert 'ground truth: GT.nii.gz in' in r.stdout                       # the label file label_name chose
    gts = find_label_volumes(root/'source', 'GT.nii.gz')
    preds = sorted((dest/'predictions').glob('*.nii.gz'))
    assert [p.name for p in preds] == ['Patient_01.nii.gz']                 # the validation patient of the split
    pred, p_geom = load_volume(preds[0], 'gt')
    gt, g_geom = load_volume(gts['Patient_01'], 'gt')
    assert pred.shape == gt.shape and np.allclose(p_geom.affine, g_geom.affine) and pred.max() <= 4
    res = pd.read_csv(dest/'results3d.csv')
    ref = score_folders(dest/'predictions', root/'source')                # every source patient, so restrict to the split's
    ref = ref[ref.patient == 'Patient_01'].reset_index(drop=True)
    pd.testing.assert_frame_equal(res, ref, check_dtype=False)
    assert np.isfinite(res[res.metric == 'dice']['value']).all()
    dice = np.load(dest/'course'/'dice.npy')
    assert dice.shape == (1, 5, 1) and np.isnan(dice[0, 0, 0])
    assert dice[0, 2, 0] == res.query("`class` == 2 and metric == 'dice'")['value'].item()
    assert {'summary.csv', 'summary.md', 'organ_dice.png', 'violins_hd95.png'} <= {p.name for p in dest.iterdir()}
    before = (dest/'results3d.csv').read_bytes()
    assert one_line_error(run('segthor-test3d', '--weights', run_dir, '--split', 'val', '--dest', dest)).endswith('pass --overwrite to replace it')
    assert (dest/'results3d.csv').read_bytes() == before
    r = run('segthor-test3d', '--model-path', run_dir, '--split', 'val', '--dest', dest, '--overwrite', '--lcc')  # GT slices stitched back
    assert r.returncode == 0, r.stderr
    assert np.isfinite(pd.read_csv(dest/'results3d.csv').query("metric == 'dice'")['value']).all()


def test_test_scores_slices_and_saves_pngs(run_dir):
    root = Path(json.loads((run_dir/'config.json').read_text())['data_root'])
    dest = run_dir.parent/'eval2d'
    r = run('segthor-test', '--weights', run_dir, '--split', 'val', '--dest', dest, '--save_png')
    assert r.returncode == 0, r.stderr
    res = pd.read_csv(dest/'results2d.csv')
    assert sorted(res['slice'].unique()) == list(range(8)) and set(res['class']) == {1, 2, 3, 4}
    assert res['metric'].nunique() == 10                                   # the study's eight, and the two counts
    pngs = sorted((dest/'png').glob('*.png'))
    assert [p.name for p in pngs] == sorted(p.name for p in (root/'val'/'gt').glob('*.png'))
    assert all(set(np.unique(read_png(p))) <= {0, 63, 126, 189, 252} for p in pngs)
    n_pred = res[(res.metric == 'n_pred') & (res['class'] == 2)].set_index('slice')['value']
    assert all(n_pred[z] == (read_png(dest/'png'/f'Patient_01_{z:04d}.png') == 126).sum() for z in range(8))
    dice = np.load(dest/'course'/'dice.npz')
    assert dice.files == ['Patient_01'] and dice['Patient_01'].shape == (5, 8)
    assert (dest/'dice_along_z.png').exists() and (dest/'summary2d.md').read_text().startswith('| organ |')


def test_one_line_errors(run_dir, tmp_path):
    root = Path(json.loads((run_dir/'config.json').read_text())['data_root'])
    for cmd in ('segthor-test', 'segthor-test3d'):
        msg = one_line_error(run(cmd, '--weights', tmp_path/'missing.safetensors', '--data_root', root, '--split', 'val', '--dest', tmp_path/'a'))
        assert msg.startswith(f'{cmd}: ') and 'missing.safetensors' in msg and 'no such checkpoint' in msg
    save_weights(get_model('ENet', 3), tmp_path/'k3.safetensors')           # a 3-class checkpoint for a 5-class dataset
    msg = one_line_error(run('segthor-test3d', '--weights', tmp_path/'k3.safetensors', '--data_root', root, '--split', 'val',
                             '--dataset', 'PHANTOM', '--model', 'ENet', '--dest', tmp_path/'b'))   # a bare checkpoint names its model
    assert 'k3.safetensors' in msg and 'shape' in msg
    msg = one_line_error(run('segthor-test', '--weights', run_dir, '--split', 'nosuchsplit', '--dest', tmp_path/'c'))
    assert 'nosuchsplit' in msg
    assert not (tmp_path/'b').exists() and not (tmp_path/'c').exists()


def test_ensemble_of_two_runs(run_dir, tmp_path):
    """`--model ensemble --ensemble A B`: per-class weights from the runs' validation 3D Dice, probabilities their weighted
    mean, scored through segthor-test3d's own steps"""
    import torch
    from segthor_nb.evaluate import ensemble_setup, predict_split, validation_dice
    from segthor_nb.models import load_run
    from segthor_nb.train import train
    root = Path(json.loads((run_dir/'config.json').read_text())['data_root'])
    other = tmp_path/'run_b'                                                 # a second run on the same data, 2 epochs
    torch.set_num_threads(1)
    train(dataset='PHANTOM', data_root=str(root), dest=str(other), epochs=2, batch_size=4, lr=5e-3, num_workers=0, progress=False,
          deterministic=True, seed=1)
    names = [f'dice3d_{n}' for n in ('background', 'esophagus', 'heart', 'trachea', 'aorta')]
    hist = pd.read_csv(other/'history.csv').set_index('epoch')
    scores = np.stack([validation_dice(run_dir), validation_dice(other)])
    np.testing.assert_allclose(scores[1], hist.loc[hist['dice3d_fg'].idxmax(), names].to_numpy(float), atol=1e-6)
    assert not np.allclose(scores[0], scores[1])                             # two different runs: weights not all equal
    dest = tmp_path/'ens'
    r = run('segthor-test3d', '--model', 'ensemble', '--ensemble', run_dir, other, '--split', 'val', '--source_dir', root/'source',
            '--dest', dest, '--num_workers', 0)
    assert r.returncode == 0, r.stderr
    assert 'predicting 1 patients' in r.stderr                               # the progress bar
    rec = json.loads((dest/'provenance3d.json').read_text())['ensemble']
    tot = scores.sum(0)
    w = np.where(tot > 0, scores/np.maximum(tot, 1e-12), .5)                 # a class neither run finds: equal weights
    np.testing.assert_allclose(rec['weights'], w, atol=1e-6); assert rec['members'] == [str(run_dir), str(other)]
    res = pd.read_csv(dest/'results3d.csv').query("metric == 'dice'")
    assert sorted(res['patient'].unique()) == ['Patient_01'] and set(res['class']) == {1, 2, 3, 4}
    s = ensemble_setup([run_dir, other], dest=str(dest))
    (_, p_e), = predict_split(s['model'], root, 'val', progress=False)
    p_m = [next(predict_split(load_run(m), root, 'val', progress=False))[1] for m in (run_dir, other)]
    mix = sum(wk[None, :, None, None]*p for wk, p in zip(w, p_m))
    np.testing.assert_allclose(p_e, mix/mix.sum(1, keepdims=True), atol=1e-5)
    pred, _ = load_volume(dest/'predictions'/'Patient_01.nii.gz', 'gt')     # the stitched labels of those probabilities
    assert pred.max() > 0
    from segthor_nb.core import SegthorError
    from segthor_nb.evaluate import config_setup, eval_config
    with pytest.raises(SegthorError, match='needs --ensemble'): eval_config(model='ensemble', dest=str(tmp_path/'x'))
    with pytest.raises(SegthorError, match='two or more'): config_setup(eval_config(ensemble=[str(run_dir)], dest=str(tmp_path/'x')))
