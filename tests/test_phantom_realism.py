"`segthor-phantom --realism hard` writes a tree that `segthor-validate` accepts"
import json, subprocess, sys
from pathlib import Path
import numpy as np
from segthor_nb.data_fix import load_volume, make_phantom

BIN = Path(sys.executable).parent

def run(*args):
    p = subprocess.run([str(BIN/args[0]), *map(str, args[1:])], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr

def test_hard_phantom_cli_writes_a_valid_tree(tmp_path):
    root = tmp_path/'hard'
    rc, out, err = run('segthor-phantom', '--dest', root, '--n-patients', 2, '--shape', 48, '--n-slices', 12,
                       '--seed', 4, '--n-test', 1, '--num-workers', 1, '--realism', 'hard')
    assert rc == 0, err
    assert 'hard' in out and json.loads((root/'phantom.json').read_text())['realism'] == 'hard'
    ct, _ = load_volume(root/'train/Patient_01/Patient_01.nii.gz', 'ct')
    np.testing.assert_array_equal(ct, make_phantom((48, 48), 12, 4001, 'hard')[0])      # the hard phantom, seeded as documented
    rc, out, err = run('segthor-validate', root)
    assert rc == 0, out + err

def test_unknown_realism_is_refused(tmp_path):
    rc, out, err = run('segthor-phantom', '--dest', tmp_path/'x', '--n-patients', 1, '--shape', 16, '--n-slices', 4, '--realism', 'real')
    assert rc != 0 and 'realism' in err and not (tmp_path/'x/train').exists()
