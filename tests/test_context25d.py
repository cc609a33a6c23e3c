"""A 2.5D run at CI size (`--context 2`: slices z−2..z+2 as five channels) through train → test3d → metrics, and
`segthor-predict`'s 2D path on the same run: the stack is rebuilt for every slice, at training and at inference."""
import numpy as np, pandas as pd, torch
from segthor_nb.data_fix import load_volume
from segthor_nb import evaluate
from segthor_nb.models import load_run, run_config
from segthor_nb.predict import predict
from segthor_nb.train import tiny_phantom, train


def test_25d_enet_trains_scores_and_predicts(tmp_path):
    torch.set_num_threads(1)
    root, run, ev = tiny_phantom(tmp_path/'data', n_patients=3, size=32, n_slices=8, retains=1), tmp_path/'run', tmp_path/'eval'
    train(dataset='PHANTOM', data_root=str(root), dest=str(run), epochs=1, batch_size=4, num_workers=0, progress=False,
          deterministic=True, augment=True, context=2)
    assert run_config(run).context == 2                                   # stored in config.json
    net = load_run(run)
    assert net.in_channels == 5 and net.initial.conv.in_channels == 5      # rebuilt for the 2k+1 slices
    evaluate.test3d(run, split='val', source_dir=str(root/'source'), dest=str(ev), num_workers=0, progress=False)
    res = pd.read_csv(ev/'results3d.csv')
    assert set(res.patient) == {'Patient_01'} and np.isfinite(res[res.metric == 'dice']['value']).all()
    out = predict([root/'source/train/Patient_01/Patient_01.nii.gz'], [run], tmp_path/'pred', progress=False)
    np.testing.assert_array_equal(load_volume(out[0], 'gt')[0], load_volume(ev/'predictions/Patient_01.nii.gz', 'gt')[0])
