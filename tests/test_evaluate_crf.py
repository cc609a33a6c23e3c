"A CRF run's checkpoint holds only what the CRF run trained: evaluation must rebuild the frozen network from the run's starting weights"
import torch, pytest
from segthor_nb.train import train, tiny_phantom
from segthor_nb.models import read_state_dict
from segthor_nb.evaluate import run_settings, load_model, predict_split
from segthor_nb.interpret import load_run

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp('crf')
    root = tiny_phantom(tmp/'phantom', n_patients=3, size=48, n_slices=8)
    kw = dict(dataset='PHANTOM', data_root=str(root), epochs=1, batch_size=4, num_workers=0, deterministic=True, progress=False)
    train(dest=str(tmp/'enet'), model='ENet', **kw)
    train(dest=str(tmp/'crf'), model='ENet', crf=True, finetune_crf=True, from_checkpoint=str(tmp/'enet'/'best.safetensors'), **kw)
    return tmp, root

def test_crf_run_rebuilt_on_its_base(runs):
    tmp, root = runs
    s = run_settings(tmp/'crf')
    assert s['crf'] and s['finetune_crf'] and s['from_checkpoint'].endswith('best.safetensors')
    net = load_model(s['weights'], **{k: v for k, v in s.items() if k not in ('weights', 'data_root')})
    base, crf_file = read_state_dict(tmp/'enet'/'best.safetensors'), read_state_dict(s['weights'])
    sd = net.state_dict()
    assert len(crf_file) < len(sd)                                  # a partial checkpoint...
    for k, v in base.items():                                       # ...over the ENet it started from
        if f'model.{k}' not in crf_file: assert torch.equal(sd[f'model.{k}'], v), k
    for k, v in crf_file.items(): assert torch.equal(sd[k], v), k   # ...with what the CRF run trained
    model, _ = load_run(tmp/'crf')                                  # 06_interpretability rebuilds it the same way
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), sd.values()))

def test_crf_predictions_use_the_trained_base(runs):
    tmp, root = runs
    s = run_settings(tmp/'crf'); kw = {k: v for k, v in s.items() if k not in ('weights', 'data_root')}
    p_ok = dict(predict_split(s['weights'], root, 'val', **kw))
    p_random_base = dict(predict_split(s['weights'], root, 'val', **(kw | dict(from_checkpoint=None))))
    pid = next(iter(p_ok))
    assert not torch.allclose(torch.as_tensor(p_ok[pid]), torch.as_tensor(p_random_base[pid]))
