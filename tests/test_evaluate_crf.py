"A CRF run's checkpoint holds only what the CRF run trained: evaluation must rebuild the frozen network from the run's starting weights"
import torch, pytest
from segthor_nb.train import train, tiny_phantom
from segthor_nb.models import read_state_dict, load_run, run_config, get_model, save_weights
from segthor_nb.evaluate import evaluation_setup, predict_split

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp('crf')
    root = tiny_phantom(tmp/'phantom', n_patients=3, size=32, n_slices=8)
    kw = dict(dataset='PHANTOM', data_root=str(root), epochs=1, batch_size=4, num_workers=0, deterministic=True, progress=False)
    train(dest=str(tmp/'enet'), model='ENet', **kw)
    train(dest=str(tmp/'crf'), model='ENet', crf=True, finetune_crf=True, from_checkpoint=str(tmp/'enet'/'best.safetensors'), **kw)
    return tmp, root

def test_crf_run_rebuilt_on_its_base(runs):
    tmp, root = runs
    cfg = run_config(tmp/'crf')
    assert cfg.crf and cfg.finetune_crf and cfg.from_checkpoint.endswith('best.safetensors')
    s = evaluation_setup(tmp/'crf')
    net = s['model']
    base, crf_file = read_state_dict(tmp/'enet'/'best.safetensors'), read_state_dict(tmp/'crf'/'best.safetensors')
    sd = net.state_dict()
    assert len(crf_file) < len(sd)                                  # a partial checkpoint...
    for k, v in base.items():                                       # ...over the ENet it started from
        if f'model.{k}' not in crf_file: assert torch.equal(sd[f'model.{k}'], v), k
    for k, v in crf_file.items(): assert torch.equal(sd[k], v), k   # ...with what the CRF run trained

def test_crf_predictions_use_the_trained_base(runs):
    tmp, root = runs
    p_ok = dict(predict_split(load_run(tmp/'crf'), root, 'val'))
    torch.manual_seed(0); save_weights(get_model('ENet', 5), tmp/'random.safetensors')    # another base under the same CRF
    p_random_base = dict(predict_split(load_run(tmp/'crf', from_checkpoint=str(tmp/'random.safetensors')), root, 'val'))
    pid = next(iter(p_ok))
    assert not torch.allclose(torch.as_tensor(p_ok[pid]), torch.as_tensor(p_random_base[pid]))
