"""`segthor-slice`, `segthor-stitch` and `segthor-toy2` end to end as subprocesses, on tiny phantoms: the study's flags,
worker processes, a run killed mid-way and resumed, one-line errors; and a DataLoader with worker processes on the
decode-once cache. Data that is not under test is made in-process (`slice_tree`), once per session."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pytest, torch
from segthor_nb.data_fix import write_phantom, load_volume
from segthor_nb.slicing import SliceDataset, make_loader, read_png, slice_tree, write_toy2

BIN = Path(sys.executable).parent


def run(exe, *args, **kw):
    return subprocess.run([str(BIN/exe), *map(str, args)], capture_output=True, text=True, **kw)


def pngs(d):
    "{relative path: bytes} of every PNG under d"
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob('*.png'))}


@pytest.fixture(scope='session')
def tree(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp('slc')/'phantom', n_patients=6, shape=(48, 48), n_slices=8, seed=2, n_test=2)


@pytest.fixture(scope='session')
def sliced(tree, tmp_path_factory):
    "The tree sliced at its native size, in-process"
    dest = tmp_path_factory.mktemp('sliced')
    slice_tree(tree, dest, shape=(48, 48), retains=2, progress=False)
    return dest


def test_study_flags_processes_and_splits(tree, tmp_path):
    r = run('segthor-slice', '--source_dir', tree, '--dest_dir', tmp_path/'p2', '--shape', 32, 40, '--retains', 2, '-p', 2)
    assert r.returncode == 0, r.stderr
    assert 'train 4 / val 2 / test 2' in r.stdout and 'sliced 8' in r.stdout
    geo = {s: json.loads((tmp_path/'p2'/s/'geometry.json').read_text()) for s in ('train', 'val', 'test')}
    assert sorted(geo['test']) == ['Patient_41', 'Patient_42'] and all(g['gt'] is None for g in geo['test'].values())
    assert all(g['slice_shape'] == [32, 40] and g['shape'] == [48, 48, 8] for s in geo.values() for g in s.values())
    assert read_png(tmp_path/'p2/val/img'/f"{sorted(geo['val'])[0]}_0003.png").shape == (32, 40)
    # the hyphenated spelling, one process: the same bytes
    r = run('segthor-slice', '--source-dir', tree, '--dest-dir', tmp_path/'p1', '--shape', 32, 40, '--retains', 2)
    assert r.returncode == 0, r.stderr
    assert pngs(tmp_path/'p2') == pngs(tmp_path/'p1') and len(pngs(tmp_path/'p1')) == 2*8*8
    # a rerun skips everything
    r = run('segthor-slice', '--source_dir', tree, '--dest_dir', tmp_path/'p2', '--shape', 32, 40, '--retains', 2, '-p', 2)
    assert r.returncode == 0 and 'sliced 0, 8 already complete' in r.stdout


def test_retains_0_trains_on_every_patient(tree, tmp_path):
    r = run('segthor-slice', '--source_dir', tree, '--dest_dir', tmp_path, '--shape', 16, 16, '--retains', 0)
    assert r.returncode == 0, r.stderr
    assert 'train 6 / val 0 / test 2' in r.stdout
    assert len(json.loads((tmp_path/'train/geometry.json').read_text())) == 6


def test_manual_split_through_the_cli(tree, tmp_path):
    src = tmp_path/'forty'                       # 40 patients: hard links to one small phantom patient
    for i in range(1, 41):
        d = src/'train'/f'Patient_{i:02d}'; d.mkdir(parents=True)
        os.link(tree/'train/Patient_01/Patient_01.nii.gz', d/f'Patient_{i:02d}.nii.gz'); os.link(tree/'train/Patient_01/GT.nii.gz', d/'GT.nii.gz')
    r = run('segthor-slice', '--source_dir', src, '--dest_dir', tmp_path/'out', '--shape', 16, 16, '--retains', 12,
            '--create_test', '--retains_test', 4, '--seed', 0, '-p', 2)
    assert r.returncode == 0, r.stderr
    assert 'train 28 / val 8 / test 4' in r.stdout
    assert sorted(json.loads((tmp_path/'out/test/geometry.json').read_text())) == ['Patient_01', 'Patient_13', 'Patient_22', 'Patient_28']
    assert sorted(json.loads((tmp_path/'out/val/geometry.json').read_text())) == [f'Patient_{i:02d}' for i in (2, 6, 8, 16, 21, 30, 35, 39)]
    assert {p.name[:10] for p in (tmp_path/'out/test/gt').iterdir()} == {'Patient_01', 'Patient_13', 'Patient_22', 'Patient_28'}
    labels = np.stack([read_png(p) for p in sorted((tmp_path/'out/test/gt').glob('Patient_13_*.png'))])
    assert set(np.unique(labels)) <= {0, 63, 126, 189, 252} and labels.max() > 0             # labelled test


def test_killed_run_resumes_to_the_same_bytes(tmp_path):
    src = write_phantom(tmp_path/'big', n_patients=5, shape=(256, 256), n_slices=48, seed=4, workers=2)
    args = ['--source_dir', src, '--shape', 256, 256, '--retains', 1]
    slice_tree(src, tmp_path/'clean', shape=(256, 256), retains=1, progress=False)              # the reference, in-process
    killed = tmp_path/'killed'
    p = subprocess.Popen([str(BIN/'segthor-slice'), *map(str, args), '--dest_dir', str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    n_img = lambda: len(os.listdir(killed/'train/img')) if (killed/'train/img').is_dir() else 0
    while n_img() < 48 + 8 and p.poll() is None and time.time() - t0 < 60: time.sleep(0.002)   # the 2nd patient is being written
    os.kill(p.pid, signal.SIGKILL); p.wait()
    done = json.loads((killed/'train/geometry.json').read_text())
    assert 1 <= len(done) < 4, 'the kill should land before the run finished'
    started = {f.name[:10] for f in (killed/'train/img').iterdir()} - set(done)
    assert started, 'a patient was being written when killed'
    r = run('segthor-slice', *args, '--dest_dir', killed)
    assert r.returncode == 0, r.stderr
    assert f'{len(done)} already complete' in r.stdout
    assert pngs(killed) == pngs(tmp_path/'clean')
    assert not [f for f in killed.rglob('.*') if '.tmp' in f.name]


def test_errors_are_one_line(tree, tmp_path):
    r = run('segthor-slice', '--source_dir', tmp_path/'nowhere', '--dest_dir', tmp_path/'x')
    assert r.returncode == 1 and r.stderr.strip().count('\n') == 0 and 'nowhere: no train/ folder' in r.stderr
    r = run('segthor-slice', '--source_dir', tree, '--dest_dir', tmp_path/'x', '--retains', 2, '--gt_name', 'GT_fixed.nii.gz')
    assert r.returncode == 1 and 'GT_fixed.nii.gz: not found (--gt_name GT_fixed.nii.gz)' in r.stderr
    r = run('segthor-stitch', '--data_folder', tmp_path, '--dest_folder', tmp_path/'y')
    assert r.returncode == 1 and 'no PNG slices' in r.stderr


def test_stitch_cli(tree, sliced, tmp_path):
    pattern = str(tree/'train/{id_}/GT.nii.gz')
    r = run('segthor-stitch', '--data_folder', sliced/'val/gt', '--dest_folder', tmp_path/'vol', '--num_classes', 5,
            '--grp_regex', r'(Patient_\d\d)_\d\d\d\d', '--source_scan_pattern', pattern)
    assert r.returncode == 0, r.stderr
    vols = sorted((tmp_path/'vol').iterdir())
    assert len(vols) == 2
    for f in vols:
        st, g = load_volume(f, 'gt'); gt, h = load_volume(pattern.format(id_=f.name[:10]), 'gt')
        np.testing.assert_allclose(g.affine, h.affine)
        assert (st == gt).all()                                   # native slice size: the identity


def test_toy2_cli(tmp_path):
    r = run('segthor-toy2', '--dest', tmp_path/'cli', '--n_train', 6, '--n_val', 2)
    assert r.returncode == 0, r.stderr
    assert pngs(tmp_path/'cli') == pngs(write_toy2(tmp_path/'api', 6, 2)) and len(pngs(tmp_path/'cli')) == 16
    g = read_png(tmp_path/'cli/val/gt/00001.png'); assert set(np.unique(g)) == {0, 255}


def test_loader_workers_share_the_cache(sliced):
    ds = SliceDataset(sliced, 'train', 5)
    one = {s: g for b in make_loader(ds, 4) for s, g in zip(b['stems'], b['gts'])}
    two = {s: g for b in make_loader(ds, 4, shuffle=True, num_workers=2) for s, g in zip(b['stems'], b['gts'])}
    assert sorted(one) == sorted(two) == ds.names
    assert all(torch.equal(one[s], two[s]) for s in one)
    assert len(list((sliced/'train').glob('.slices-*.npy'))) == 1



@pytest.fixture(scope='module')
def fixed_tree(tmp_path_factory):
    "A tampered phantom tree after `segthor-fix`; then no phantom.json or GT2: only the fix's report tells the GTs apart"
    root = write_phantom(tmp_path_factory.mktemp('fix')/'tampered', n_patients=2, shape=(48, 48), n_slices=8, seed=3, tamper=True)
    r = run('segthor-fix', root, '--method', 'known')
    assert r.returncode == 0, r.stderr
    (root/'phantom.json').unlink()
    for f in (root/'train').glob('*/GT2.nii.gz'): f.unlink()
    return root


def heart_slice(root):
    "(z, GT's heart, GT_fixed's heart) in the slice of Patient_01 where the fix moved the heart most"
    gt, fixed = (load_volume(root/'train/Patient_01'/f, 'gt')[0] == 2 for f in ('GT.nii.gz', 'GT_fixed.nii.gz'))
    z = int(np.argmax([(gt[:, :, k] != fixed[:, :, k]).sum() for k in range(gt.shape[2])]))
    assert (gt[:, :, z] != fixed[:, :, z]).sum() > 10
    return z, gt[:, :, z], fixed[:, :, z]


def test_label_rule_reads_the_fix_and_says_so(fixed_tree, tmp_path):
    z, gt_heart, fixed_heart = heart_slice(fixed_tree)
    r = run('segthor-slice', '--source_dir', fixed_tree, '--dest_dir', tmp_path/'a', '--shape', 48, 48, '--retains', 0)
    assert r.returncode == 0, r.stderr
    assert 'train 2 / val 0' in r.stdout and r.stdout.strip().endswith('labels from GT_fixed.nii.gz') and 'warning' not in r.stderr
    heart = read_png(tmp_path/f'a/train/gt/Patient_01_{z:04d}.png') == 2*63
    np.testing.assert_array_equal(heart, fixed_heart)                                     # the fixed heart, not GT's
    assert json.loads((tmp_path/'a/train/geometry.json').read_text())['Patient_01']['gt'] == 'GT_fixed.nii.gz'
    # asked for GT.nii.gz by name: read, said, and warned once, in one line
    r = run('segthor-slice', '--source_dir', fixed_tree, '--dest_dir', tmp_path/'b', '--shape', 48, 48, '--retains', 0, '--gt_name', 'GT.nii.gz')
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith('labels from GT.nii.gz')
    lines = [l for l in r.stderr.splitlines() if l.strip() and 'slicing:' not in l]        # (tqdm's bar aside)
    assert len(lines) == 1 and lines[0].startswith('warning: ') and "GT.nii.gz, which looks like the course's displaced hearts" in lines[0], r.stderr
    np.testing.assert_array_equal(read_png(tmp_path/f'b/train/gt/Patient_01_{z:04d}.png') == 2*63, gt_heart)
