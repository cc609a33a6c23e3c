"segthor-predict and segthor-test3d on 2D and 3D runs: unlabelled CTs in, label volumes on their own grids out"
import sys
import nibabel as nib, numpy as np, pytest, torch
from segthor_nb import cli
from segthor_nb.data_fix import write_phantom
from segthor_nb.slicing import slice_tree
from segthor_nb.train import train
from segthor_nb.train3d import train3d

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('pred')
    tree = write_phantom(root/'tree', n_patients=4, shape=(32, 32), n_slices=16, seed=0, n_test=1, progress=False)
    train3d(source_dir=str(tree), dest=str(root/'r3'), retains=1, model_cfg={'size': 'tiny'}, patch_size=[16, 16, 16], epochs=1,
            steps_per_epoch=2, num_workers=0, progress=False)
    slice_tree(tree, root/'sliced', (32, 32), retains=1, progress=False)
    train(dataset='PHANTOM', data_root=str(root/'sliced'), dest=str(root/'r2'), model='ENet', epochs=1, batch_size=8, num_workers=0, progress=False, seed=0)
    return root, tree


def predict_cli(monkeypatch, *args):
    "Run segthor-predict's command line in this process"
    monkeypatch.setattr(sys, 'argv', ['segthor-predict', *map(str, args), '--no-progress'])
    return cli.segthor_predict()


@pytest.mark.parametrize('kind', ['r2', 'r3', 'both'])
def test_predict_keeps_the_input_grid(runs, kind, tmp_path, monkeypatch):
    root, tree = runs
    weights = [root/'r2', root/'r3'] if kind == 'both' else [root/kind]
    predict_cli(monkeypatch, tree/'test', '--weights', *weights, '--out', tmp_path, '--probabilities', '--mirror')
    src, out = nib.load(tree/'test'/'Patient_41.nii.gz'), nib.load(tmp_path/'Patient_41.nii.gz')
    assert out.shape == src.shape and np.allclose(out.affine, src.affine)
    lab = np.asarray(out.dataobj); assert lab.dtype == np.uint8 and lab.max() <= 4
    p = np.load(tmp_path/'Patient_41.npz')['probabilities']
    assert p.shape == (5, *src.shape) and (p.argmax(0) == lab).mean() > .99


def test_an_ensemble_is_the_mean_of_its_runs_with_the_progress_bar_on(runs, tmp_path, monkeypatch):
    "Two runs, progress shown: the written probabilities are the mean of each run's (every run is called)"
    import segthor_nb.predict as P
    from segthor_nb.predict import load_predictor, predict
    class Refreshing(P.tqdm):                      # tqdm's update returns True whenever it redraws the bar
        def update(self, n=1): super().update(n); return True
    monkeypatch.setattr(P, 'tqdm', Refreshing)
    root, tree = runs
    ct = tree/'test'/'Patient_41.nii.gz'
    predict([ct], [root/'r2', root/'r3'], tmp_path, probabilities=True, progress=True)
    want = (load_predictor(root/'r2')(ct) + load_predictor(root/'r3')(ct)) / 2
    np.testing.assert_allclose(np.load(tmp_path/'Patient_41.npz')['probabilities'], want, atol=2e-3)


def test_bad_input_is_one_line_naming_the_file(runs, tmp_path, monkeypatch):
    root, _ = runs
    bad = tmp_path/'bad.nii.gz'; bad.write_bytes(b'not a volume')
    for arg, said in ((tmp_path/'missing.nii.gz', 'missing.nii.gz: no such file'), (bad, 'bad.nii.gz')):
        with pytest.raises(SystemExit) as e: predict_cli(monkeypatch, arg, '--weights', root/'r3', '--out', tmp_path/'o')
        assert str(e.value).startswith('segthor-predict: ') and '\n' not in str(e.value) and said in str(e.value), e.value


def test_segthor_test3d_scores_a_3d_run(runs, tmp_path, monkeypatch):
    root, tree = runs
    monkeypatch.setattr(sys, 'argv', ['segthor-test3d', '--weights', str(root/'r3'), '--split', 'val', '--source_dir', str(tree), '--dest', str(tmp_path), '--no-progress'])
    cli.segthor_test3d()
    assert (tmp_path/'results3d.csv').exists() and (tmp_path/'predictions'/'Patient_03.nii.gz').exists()
