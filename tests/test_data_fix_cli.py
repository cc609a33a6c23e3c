"End-to-end runs of the data CLIs (segthor-phantom, segthor-validate, segthor-fix) as installed console scripts"
import json, shutil, subprocess, sys, warnings
from pathlib import Path
import numpy as np, nibabel as nib, pytest
from segthor_nb.core import label_name, looks_tampered
from segthor_nb.data_fix import course_affine, course_params, load_volume, move_heart

BIN = Path(sys.executable).parent

def run(*args, cwd=None):
    "Run a console script; return (exit code, stdout lines)"
    p = subprocess.run([str(BIN/args[0]), *map(str, args[1:])], capture_output=True, text=True, cwd=cwd, timeout=600)
    return p.returncode, p.stdout.strip().splitlines(), p.stderr

@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    "A small tampered phantom tree written by the CLI: 3 labelled patients (Patient_03 with GT2) and 1 test CT"
    root = tmp_path_factory.mktemp('phantom')/'tree'
    rc, out, err = run('segthor-phantom', '--dest', root, '--n-patients', 3, '--shape', 128, 128, '--n-slices', 48,
                       '--seed', 5, '--tamper', '--n-test', 1, '--num-workers', 2)
    assert rc == 0, err
    (root.parent/'phantom.err').write_text(err)                                          # its progress bar, for the test below
    return root

def copy(tree, tmp_path, name='copy'):
    dst = tmp_path/name; shutil.copytree(tree, dst); return dst

def dice(a, b): return 2*(a & b).sum()/(a.sum() + b.sum())

def test_phantom_layout_and_matrix(tree):
    meta = json.loads((tree/'phantom.json').read_text())
    assert sorted(p.name for p in (tree/'train').iterdir()) == ['Patient_01', 'Patient_02', 'Patient_03']
    assert (tree/'train/Patient_03/GT2.nii.gz').exists() and not (tree/'train/Patient_01/GT2.nii.gz').exists()
    assert [p.name for p in (tree/'test').iterdir()] == ['Patient_41.nii.gz']
    ct, geom = load_volume(tree/'train/Patient_01/Patient_01.nii.gz', 'ct')
    assert ct.shape == (128, 128, 48) and ct.dtype == np.int16
    sc = (128/512, 128/512, 48/160)          # the course's T4 scaled to the grid, z in whole slices: round(15·48/160) = 4
    np.testing.assert_allclose(meta['matrix'], course_affine(sc, shift=(50, 40, round(15*sc[2])/sc[2])))
    np.testing.assert_allclose(course_params(meta['matrix'], sc)[1], (12.5, 10, 4))

def test_long_loops_show_a_progress_bar(tree, tmp_path):
    "phantom generation, validation and the fix each report progress on stderr, one step per patient; stdout stays clean"
    assert 'phantom: 100%' in (tree.parent/'phantom.err').read_text() and '4/4' in (tree.parent/'phantom.err').read_text()
    rc, out, err = run('segthor-validate', tree)
    assert rc == 0 and len(out) == 1 and 'validate: 100%' in err and '4/4' in err
    rc, out, err = run('segthor-fix', copy(tree, tmp_path), '--method', 'pair')
    assert rc == 0 and 'register: 100%' in err and 'fix: 100%' in err and '3/3' in err
    assert not any('%|' in l for l in out)

def test_fix_writes_a_before_after_heart_figure(tree, tmp_path):
    "segthor-fix's report folder holds fix_heart.png: tampered | fixed labels over the CT, where the fixed heart is largest"
    import matplotlib.image as mpimg
    src = copy(tree, tmp_path)
    rc, out, _ = run('segthor-fix', src)
    png = src/'fix_heart.png'
    assert rc == 0 and f"before/after heart figure: {png}" in out
    assert json.loads((src/'fix_report.json').read_text())['figure'] == str(png)
    img = mpimg.imread(png)[..., :3]
    left, right = img[:, :img.shape[1]//2], img[:, img.shape[1]//2:]
    green = lambda a: (a[..., 1] - a[..., 0] > .3) & (a[..., 1] - a[..., 2] > .3)     # the heart's label colour (ORGAN_RGBA)
    on_air = lambda a: (green(a) & (a[..., 1] < .6)).sum()                              # ... over dark CT: lung or outside
    assert green(left).sum() > 0 and green(right).sum() > 0
    assert on_air(left) > 10*on_air(right)                   # before: the heart label lies on lung; after: on the CT's heart
    assert run('segthor-validate', src)[0] == 0                                          # the PNG is no stray file of the tree

def test_validate_clean_tree(tree):
    rc, out, _ = run('segthor-validate', tree)
    assert rc == 0 and len(out) == 1
    assert '3 training + 1 test patients' in out[0] and '8 volumes' in out[0] and 'no problems' in out[0]

def test_validate_strict_reports_acquisition_facts(tree):
    rc, out, _ = run('segthor-validate', tree, '--strict')
    assert rc == 1
    assert sum('in-plane size 128×128 (expected 512×512)' in l for l in out) == 4     # every CT, one line each
    assert all('expected' in l for l in out)

def test_validate_broken_tree(tree, tmp_path):
    bad = copy(tree, tmp_path)
    (bad/'train/Patient_02/GT.nii.gz').unlink()                                          # missing GT
    gt_img = nib.load(str(bad/'train/Patient_01/GT.nii.gz'))
    gt = np.asarray(gt_img.dataobj).copy(); gt[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(gt, gt_img.affine, gt_img.header), str(bad/'train/Patient_01/GT.nii.gz'))   # label 7
    raw = (bad/'test/Patient_41.nii.gz').read_bytes()
    (bad/'test/Patient_41.nii.gz').write_bytes(raw[:len(raw)//3])                        # truncated CT
    shifted = nib.load(str(bad/'train/Patient_03/GT2.nii.gz'))
    aff = shifted.affine.copy(); aff[0, 3] += 1.5
    nib.save(nib.Nifti1Image(np.asarray(shifted.dataobj), aff), str(bad/'train/Patient_03/GT2.nii.gz'))  # off the CT grid
    rc, out, _ = run('segthor-validate', bad)
    assert rc == 1 and len(out) == 4, out
    text = '\n'.join(out)
    assert 'Patient_02: missing GT.nii.gz' in text
    assert 'Patient_01/GT.nii.gz: labels [7] outside 0..4' in text
    assert 'Patient_41.nii.gz: truncated' in text
    assert 'Patient_03/GT2.nii.gz: affine differs from the CT\'s by up to 1.5 mm' in text

def test_fix_known_in_place(tree, tmp_path):
    src = copy(tree, tmp_path)
    rc, out, err = run('segthor-fix', src, '--method', 'known')
    assert rc == 0, err
    report = json.loads((src/'fix_report.json').read_text())
    tamper = np.array(json.loads((src/'phantom.json').read_text())['matrix'])
    np.testing.assert_allclose(report['matrix'], np.linalg.inv(tamper))
    np.testing.assert_allclose(report['phi_deg'], -27)
    np.testing.assert_allclose(report["translation_vox"], (50*128/512, 40*128/512, round(15*48/160)))   # z: whole slices
    for pid in ('Patient_01', 'Patient_02', 'Patient_03'):
        d = src/'train'/pid
        gt, g0 = load_volume(d/'GT.nii.gz', 'gt'); fixed, g1 = load_volume(d/'GT_fixed.nii.gz', 'gt')
        np.testing.assert_array_equal(g1.affine, g0.affine)
        assert g1.header.get_best_affine().tolist() == g0.header.get_best_affine().tolist() and g1.header['pixdim'].tolist() == g0.header['pixdim'].tolist()
        others = (gt != 0) & (gt != 2)
        np.testing.assert_array_equal(fixed[others], gt[others])                          # other organs never change
        np.testing.assert_array_equal(fixed, move_heart(gt, np.linalg.inv(tamper), keep_others=True))
        assert report['patients'][pid]['heart_before'] == (gt == 2).sum() and report['patients'][pid]['heart_after'] == (fixed == 2).sum()
    clean = load_volume(src/'train/Patient_03/GT2.nii.gz', 'gt')[0] == 2
    fixed = load_volume(src/'train/Patient_03/GT_fixed.nii.gz', 'gt')[0] == 2
    np.testing.assert_allclose(report['patients']['Patient_03']['dice_vs_clean'], dice(fixed, clean))
    assert dice(fixed, clean) > 0.98 > 0.5 > report['patients']['Patient_03']['dice_vs_clean_before']
    assert any('Patient_03: heart Dice vs GT2' in l for l in out)
    # the labels every command reads now: GT_fixed.nii.gz; GT.nii.gz stays tampered by the report, even without phantom.json or GT2
    assert label_name(src) == 'GT_fixed.nii.gz'
    (src/'phantom.json').unlink(); (src/'train/Patient_03/GT2.nii.gz').unlink()
    assert looks_tampered(src)
    with pytest.warns(UserWarning, match='displaced hearts; GT_fixed.nii.gz holds them fixed'): assert label_name(src, 'GT.nii.gz') == 'GT.nii.gz'

def test_fix_pair_to_a_fixed_copy(tree, tmp_path):
    src, dest = copy(tree, tmp_path), tmp_path/'fixed'
    before = {p: p.read_bytes() for p in src.rglob('*.nii.gz')}
    rc, out, err = run('segthor-fix', src, '--dest', dest, '--method', 'pair')
    assert rc == 0, err
    assert {p: p.read_bytes() for p in src.rglob('*.nii.gz')} == before                   # the source is untouched
    report = json.loads((dest/'fix_report.json').read_text())
    assert report['layout'] == 'fixed copy' and list(report['estimates']) == ['Patient_03']
    assert abs(report['error_vs_phantom']['phi_deg']) <= 0.5 and np.abs(report['error_vs_phantom']['translation_vox']).max() <= 1
    assert sorted(f.name for f in (dest/'train/Patient_03').iterdir()) == ['GT.nii.gz', 'GT2.nii.gz', 'Patient_03.nii.gz']
    assert (dest/'test/Patient_41.nii.gz').read_bytes() == (src/'test/Patient_41.nii.gz').read_bytes()
    gt = load_volume(src/'train/Patient_01/GT.nii.gz', 'gt')[0]
    fixed = load_volume(dest/'train/Patient_01/GT.nii.gz', 'gt')[0]
    np.testing.assert_array_equal(fixed, move_heart(gt, np.array(report['matrix']), keep_others=True))
    assert report['patients']['Patient_03']['dice_vs_clean'] > 0.97
    assert run('segthor-validate', dest)[0] == 0
    assert not looks_tampered(dest)                                                      # GT.nii.gz of a fixed copy is the fix
    with warnings.catch_warnings(): warnings.simplefilter('error'); assert label_name(dest) == 'GT.nii.gz'
    rc, out, err = run('segthor-fix', dest, '--method', 'known')                         # a fixed copy is not fixed twice
    assert rc == 1 and 'already a fixed copy' in err and len(err.strip().splitlines()) == 1

def test_fix_refuses_bad_input(tree, tmp_path):
    rc, out, err = run('segthor-fix', tree, '--method', 'magic')
    assert rc == 2 and "invalid choice: 'magic'" in err
    rc, out, err = run('segthor-fix', tmp_path/'nowhere')
    assert rc == 1 and 'no train/ folder' in err and 'Traceback' not in err
    nopair = copy(tree, tmp_path, 'nopair'); (nopair/'train/Patient_03/GT2.nii.gz').unlink()
    rc, out, err = run('segthor-fix', nopair, '--method', 'pair')
    assert rc == 1 and 'no patient has GT2.nii.gz' in err
