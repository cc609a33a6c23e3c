"""`import_study` on every study network: a seeded random network in the study's module layout (tests/study_ref.py),
saved as the study's main.py saves it (plain, or with torch.compile's `_orig_mod.` prefixes), imported, rebuilt by
`load_run`, must give the study network's logits on the same batch; and every file that does not fit is refused."""
import json
import pytest, torch
from torch import nn
from segthor_nb.models import CheckpointError, load_run, run_config
from segthor_nb.study_import import import_study, convert_study, study_key, STUDY_RULES
from study_ref import (RefENet, RefShallowCNN, RefCRF, RefCRFAugmented, RefLoRASam, RefSAM2UNet, ref_sam, randomize_)

torch.set_num_threads(1)

CASES = {  # id: (study --model, the study's network, input shape, import_study options)
    'ENet': ('ENet', lambda: RefENet(1, 5), (2, 1, 64, 64), {}),
    'shallow_TOY2': ('shallow', lambda: RefShallowCNN(1, 2), (2, 1, 32, 32), {}),
    'samed': ('samed', lambda: RefLoRASam(ref_sam(5, canvas=512), r=4), (2, 1, 256, 256), dict(r=4)),
    'samed_fast': ('samed_fast', lambda: RefLoRASam(ref_sam(5, canvas=256), fast=True), (2, 1, 256, 256), {}),
    'SAM2UNet': ('SAM2UNet', lambda: RefSAM2UNet(), (2, 1, 64, 64), {}),
    'ENet_crf': ('ENet', lambda: nn.Sequential(RefENet(1, 5), RefCRF()), (2, 1, 64, 64), dict(crf=True)),
    'samed_fast_crf': ('samed_fast', lambda: RefCRFAugmented(RefLoRASam(ref_sam(5, canvas=256), fast=True)), (2, 1, 256, 256), dict(crf=True)),
}


def logits(out):
    "The study networks' main logits: SAMed's 'masks', SAM2-UNet's first output, else the tensor"
    return out['masks'] if isinstance(out, dict) else out[0] if isinstance(out, tuple) else out


def save_study(net, path, compiled):
    sd = net.state_dict()
    torch.save({f'_orig_mod.{k}': v for k, v in sd.items()} if compiled else sd, path)
    return path


@pytest.mark.parametrize('compiled', [False, True], ids=['plain', 'compiled'])
@pytest.mark.parametrize('case', CASES)
def test_imported_run_gives_the_study_logits(case, compiled, tmp_path):
    model, make, shape, kw = CASES[case]
    torch.manual_seed(0)
    net = randomize_(make(), seed=len(case)).eval()
    run = import_study(save_study(net, tmp_path/'bestweights.pt', compiled), model, tmp_path/'run', **kw)
    ours = load_run(run)
    assert not ours.training
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(): want, got = logits(net(x)), ours(x)
    assert want.std() > 0.05                        # logits that vary, so equality means something
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    cfg = run_config(run)
    assert (cfg.preset, cfg.crf, cfg.dataset) == ('study', kw.get('crf', False), 'TOY2' if case == 'shallow_TOY2' else 'SEGTHOR_MANUAL_SPLIT')


def test_every_study_key_has_exactly_one_of_ours():
    "The rules are one-to-one on each study network: no two study keys land on the same key of ours"
    for case in ('ENet', 'samed_fast', 'SAM2UNet'):
        model, make, _, _ = CASES[case]
        sd = make().state_dict()
        mapped = [k for k in (study_key(k, model) for k in sd) if k is not None]
        assert len(set(mapped)) == len(mapped), case
    assert set(STUDY_RULES) == {'enet', 'shallow', 'samed', 'samed_fast', 'sam2unet'}


def test_settings_read_off_the_shapes(tmp_path):
    _, make, _, kw = CASES['samed']
    run = import_study(save_study(make(), tmp_path/'w.pt', False), 'samed', tmp_path/'run', **kw)
    cfg = json.loads((run/'config.json').read_text())
    assert (cfg['model'], cfg['r'], cfg['model_cfg']) == ('samed', 4, dict(size='tiny', canvas=512))
    K, opts, _ = convert_study('SAM2UNet', RefSAM2UNet().state_dict())
    assert (K, opts) == (5, dict(size='tiny'))


def test_refusals(tmp_path):
    enet = RefENet(1, 5)
    w = save_study(enet, tmp_path/'bestweights.pt', False)
    torch.save(enet, tmp_path/'bestmodel.pkl')                                   # main.py's other file: the pickled net
    with pytest.raises(CheckpointError, match=r'bestmodel\.pkl: a pickled .*pass the bestweights\.pt'):
        import_study(tmp_path/'bestmodel.pkl', 'ENet', tmp_path/'a')
    with pytest.raises(CheckpointError, match="not the study's samed; its keys are the study's ENet"):
        import_study(w, 'samed', tmp_path/'b')
    with pytest.raises(CheckpointError, match='LoRA rank 6, not r=4'):
        import_study(save_study(CASES['samed_fast'][1](), tmp_path/'f.pt', False), 'samed_fast', tmp_path/'c', r=4)
    crf = save_study(nn.Sequential(enet, RefCRF()), tmp_path/'crf.pt', True)
    with pytest.raises(CheckpointError, match=r"holds the study's CRF .*pass crf=True"):
        import_study(crf, 'ENet', tmp_path/'d')
    with pytest.raises(CheckpointError, match='holds no CRF'):
        import_study(w, 'ENet', tmp_path/'e', crf=True)
    sd = dict(enet.state_dict()); sd['bottleneck9.weight'] = sd.pop('bottleneck3.2.block1.1.weight')
    torch.save(sd, tmp_path/'renamed.pt')
    with pytest.raises(CheckpointError, match=r'1 missing \[stage3\.2\.branch\.1\.1\.weight\]; 1 unexpected \[bottleneck9\.weight\]'):
        import_study(tmp_path/'renamed.pt', 'ENet', tmp_path/'f')
    assert not any((tmp_path/d).exists() for d in 'abcdef')                     # nothing written on a refusal
    import_study(w, 'ENet', tmp_path/'run')
    with pytest.raises(FileExistsError, match='pass --overwrite'): import_study(w, 'ENet', tmp_path/'run')
    import_study(w, 'ENet', tmp_path/'run', overwrite=True)


def test_imported_run_through_the_commands(tmp_path):
    "The study's ENet file, through `segthor-import-study`, then scored by `segthor-test3d` on a phantom's validation patient"
    import os, subprocess, sys
    from pathlib import Path
    from segthor_nb.train import tiny_phantom
    bin_, env = Path(sys.executable).parent, {**os.environ, 'OMP_NUM_THREADS': '1'}
    data = tiny_phantom(tmp_path/'phantom', n_patients=2, size=32, n_slices=8)
    torch.save(randomize_(RefENet(1, 5), seed=3).state_dict(), tmp_path/'bestweights.pt')
    r = subprocess.run([bin_/'segthor-import-study', tmp_path/'bestweights.pt', '--model', 'ENet', '--dest', tmp_path/'run'],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and 'preset study' in r.stdout, r.stderr
    r = subprocess.run([bin_/'segthor-test3d', '--weights', tmp_path/'run', '--data_root', data, '--split', 'val',
                        '--source_dir', data/'source', '--dest', tmp_path/'eval', '--num_workers', '0'], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert run_config(tmp_path/'run').preset == 'study' and (tmp_path/'eval'/'results3d.csv').is_file()
    r = subprocess.run([bin_/'segthor-test', '--from_checkpoint', tmp_path/'run', '--data_root', data, '--split', 'val',
                        '--dest', tmp_path/'eval2d', '--num_workers', '0'], capture_output=True, text=True, env=env)   # the study's flag name
    assert r.returncode == 0, r.stderr
    again = subprocess.run([bin_/'segthor-import-study', tmp_path/'bestweights.pt', '--model', 'ENet', '--dest', tmp_path/'run'],
                           capture_output=True, text=True, env=env)
    assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1   # an existing run is never overwritten


def test_load_run_warns_of_a_random_encoder_only_when_the_file_lacks_it(tmp_path):
    "A run file that holds the frozen trunk (as an imported one does) loads silently; one without it says the trunk is random"
    import dataclasses, warnings
    from segthor_nb.core import TrainConfig, write_json
    from segthor_nb.models import get_model, save_weights, checkpoint_keys
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); net = get_model('SAM2UNet', 5, size='hiera_t')
    write_json(dataclasses.asdict(TrainConfig(model='SAM2UNet', model_cfg={'size': 'hiera_t'})), tmp_path/'config.json')
    for name, keys, warned in (('best', None, False), ('last', checkpoint_keys(net), True)):   # last: what training saves
        save_weights(net, tmp_path/f'{name}.safetensors', keys=keys)
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter('always'); load_run(tmp_path, name)
        assert any('trunk is random' in str(w.message) for w in said) == warned, (name, [str(w.message) for w in said])
