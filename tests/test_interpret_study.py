"""The study's table and figures of nbs/06_interpretability.ipynb from a fabricated runs/ folder whose results are
real `metrics3d`/`metrics2d` scores of perturbed labels; plus the attributions' error paths on a loaded run."""
import dataclasses, json
import matplotlib
matplotlib.use('Agg')
import pandas as pd, pytest, torch
from segthor_nb.core import CLASSES, SegthorError, TrainConfig
from segthor_nb.metrics import synthetic_pair, metrics3d, metrics2d, long_format
from segthor_nb.models import ENet, save_weights, load_run, run_config
from segthor_nb.interpret import (InterpretError, collect_runs, runs_table, ablation_grid, write_runs_figures,
                                  attribute_organ, randomized_copy, gradcam_layer, write_explanations)

SPACING = (1.5, 1.5, 3.)
RUNS = {  # run: (config.json, jitter of the prediction in voxels)
    'enet_none': (dict(model='ENet', dataset='PHANTOM', augment=False, normalize=False, crf=False), 2.),
    'enet_aug': (dict(model='ENet', dataset='PHANTOM', augment=True, normalize=False, crf=False), 1.5),
    'enet_norm': (dict(model='ENet', dataset='PHANTOM', augment=False, normalize=True, crf=False), 1.),
    'enet_both': (dict(model='ENet', dataset='PHANTOM', augment=True, normalize=True, crf=False), .5),
    'enet_both_crf': (dict(model='ENet', dataset='PHANTOM', augment=True, normalize=True, crf=True), .25),
    'nnunet_2d': ({'model': 'nnU-Net 2d'}, .1),
}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('runs')
    for run, (cfg, jitter) in RUNS.items():
        d = root/run; (d/'eval').mkdir(parents=True)
        (d/'config.json').write_text(json.dumps(cfg))
        rows = []
        for p in range(3):
            pred, gt = synthetic_pair((40, 40, 12), seed=p, jitter=jitter)
            rows += [long_format(metrics3d(pred, gt, SPACING), f'Patient_0{p + 1}')]
            if run == 'enet_none': rows += [long_format(metrics2d(pred, gt, spacing=SPACING), f'Patient_0{p + 1}')]
        pd.concat(rows).to_csv(d/'eval'/'results3d.csv', index=False)
    (root/'still_training').mkdir(); (root/'still_training'/'config.json').write_text('{}')   # no eval/: skipped
    return root


def test_collect_runs_labels_rows_from_config(runs):
    df = collect_runs(runs)
    assert list(df.columns) == ['run', 'model', 'augment', 'normalize', 'crf', 'patient', 'slice', 'class', 'metric', 'value']
    assert sorted(df.run.unique()) == sorted(RUNS)
    flags = df.groupby('run')[['model', 'augment', 'normalize', 'crf']].first()
    assert flags.loc['nnunet_2d'].tolist() == ['nnU-Net 2d', False, False, False]
    assert flags.loc['enet_both_crf'].tolist() == ['ENet', True, True, True]
    assert flags.loc['enet_norm'].tolist() == ['ENet', False, True, False]
    assert df.query("run != 'enet_none'")['slice'].isna().all() and df.query("run == 'enet_none'")['slice'].notna().any()


def test_study_table_is_the_mean_dice_per_organ_sorted(runs):
    df = collect_runs(runs); tab = runs_table(df)
    assert list(tab.columns) == ['model', 'augment', 'normalize', 'crf', *CLASSES[1:], 'mean']
    assert tab['mean'].is_monotonic_decreasing and tab.index[0] == 'nnunet_2d' and tab.index[-1] == 'enet_none'
    d = df[df['slice'].isna() & (df.metric == 'dice') & (df.run == 'enet_aug') & (df['class'] == 4)]
    assert len(d) == 3 and tab.loc['enet_aug', 'aorta'] == pytest.approx(d.value.mean())
    assert tab.loc['enet_aug', 'mean'] == pytest.approx(tab.loc['enet_aug', CLASSES[1:]].mean())
    grid = ablation_grid(df)                                  # CRF runs left out, nnU-Net a single cell
    assert grid.loc[('ENet', True), True] == pytest.approx(tab.loc['enet_both', 'mean'])
    assert grid.loc[('ENet', False), False] == pytest.approx(tab.loc['enet_none', 'mean'])
    with pytest.raises(InterpretError, match="no 3D rows of metric 'dise'"): runs_table(df, 'dise')


def test_write_runs_figures_are_written_atomically_and_not_overwritten(runs, tmp_path):
    df = collect_runs(runs)
    paths = write_runs_figures(df, tmp_path/'fig')
    assert sorted(paths) == ['ablation', 'bars', 'dice_along_z', 'violins']
    assert all(p.read_bytes()[:4] == b'\x89PNG' for p in paths.values())
    assert sorted(f.name for f in (tmp_path/'fig').iterdir()) == sorted(f'{n}.png' for n in paths)   # no temporaries left
    before = {n: p.stat().st_mtime_ns for n, p in paths.items()}
    with pytest.raises(FileExistsError, match='pass --overwrite'): write_runs_figures(df, tmp_path/'fig')
    assert {n: p.stat().st_mtime_ns for n, p in paths.items()} == before
    assert sorted(write_runs_figures(df, tmp_path/'fig', overwrite=True)) == sorted(paths)
    three_d_only = write_runs_figures(df[df['slice'].isna() & (df.run == 'nnunet_2d')], tmp_path/'one')
    assert sorted(three_d_only) == ['bars', 'violins']        # no 2D rows, no ablation: those figures are skipped


def test_bad_run_folders_fail_with_the_file_named(runs, tmp_path):
    with pytest.raises(InterpretError, match=r'empty: no <run>/eval/results3d.csv'): collect_runs((tmp_path/'empty').mkdir() or tmp_path/'empty')
    bad = tmp_path/'bad'; (bad/'r1'/'eval').mkdir(parents=True)
    (bad/'r1'/'eval'/'results3d.csv').write_text('patient,class,value\nPatient_01,1,0.5\n')
    with pytest.raises(SegthorError, match=r'r1/config.json: missing'): collect_runs(bad)
    (bad/'r1'/'config.json').write_text('{"model": ')
    with pytest.raises(SegthorError, match=r'r1/config.json: not valid JSON'): collect_runs(bad)
    (bad/'r1'/'config.json').write_text('{"model": "ENet"}')
    with pytest.raises(InterpretError, match=r'results3d.csv: no column\(s\) slice, metric'): collect_runs(bad)


def test_load_run_and_attribution_errors(tmp_path):
    run = tmp_path/'run'; run.mkdir()
    (run/'config.json').write_text(json.dumps({'model': 'nnU-Net 2d'}))
    with pytest.raises(SegthorError, match="no 'dataset' field"): run_config(run)
    (run/'config.json').write_text(json.dumps(dataclasses.asdict(TrainConfig(dataset='PHANTOM', model='ENet'))))
    with pytest.raises(SegthorError, match=r'best.safetensors: no such checkpoint'): load_run(run)
    torch.manual_seed(1); net = ENet(1, 5)
    with torch.no_grad():
        for q in net.parameters(): q.add_(.1*torch.randn_like(q))            # "trained": no zero biases left
    save_weights(net, run/'best.safetensors')
    model = load_run(run)
    assert run_config(run).model == 'ENet' and not model.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), net.state_dict().values()))
    x, mask = torch.rand(1, 1, 32, 32), torch.zeros(1, 32, 32, dtype=torch.bool)
    with pytest.raises(InterpretError, match='no region to explain'): attribute_organ(model, x, 'heart', mask=mask)
    mask[0, 8:16, 8:16] = True
    with pytest.raises(InterpretError, match='unknown attribution method'): attribute_organ(model, x, 2, ('lime',), mask=mask)
    with pytest.raises(InterpretError, match='unknown organ'): attribute_organ(model, x, 'liver', mask=mask)
    a = attribute_organ(model, x, 2, ('gradcam', 'occlusion'), mask=mask)
    assert {k: v.shape for k, v in a.items()} == {'gradcam': (32, 32), 'occlusion': (32, 32)}
    assert gradcam_layer(model) == 'stage5'
    r = randomized_copy(model, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), net.state_dict().values()))   # original untouched
    assert not any(torch.equal(p, q) for p, q in zip(r.parameters(), model.parameters()) if p.numel() > 1)


def test_write_explanations_keeps_the_shown_figures_and_tables_beside_the_run(tmp_path):
    "The failure slices and attributions 06 shows, on disk in <run>/interpret: PNGs, CSVs and an index.csv describing them"
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(); ax.imshow([[0, 1], [1, 0]]); plt.close(fig)        # closed, as after plt.show() in a notebook
    worst = pd.DataFrame(dict(name=['Patient_01_0003', 'Patient_02_0001'], fg_loss=[2.5, 1.5]))
    dest = tmp_path/'run'/'interpret'
    index = write_explanations(dest, {'failures': (fig, 'worst slices')}, {'failures': (worst, 'their losses')})
    assert sorted(f.name for f in dest.iterdir()) == ['failures.csv', 'failures.png', 'index.csv']
    assert (dest/'failures.png').read_bytes()[:4] == b'\x89PNG' and (dest/'failures.png').stat().st_size > 1000
    pd.testing.assert_frame_equal(pd.read_csv(dest/'failures.csv'), worst)
    assert pd.read_csv(dest/'index.csv').values.tolist() == [['failures.png', 'figure', 'worst slices'], ['failures.csv', 'table', 'their losses']]
    assert index['file'].tolist() == ['failures.png', 'failures.csv']
    before = (dest/'index.csv').read_bytes()
    with pytest.raises(FileExistsError, match='pass --overwrite'): write_explanations(dest, {}, {'failures': (worst, 'again')})
    assert (dest/'index.csv').read_bytes() == before
