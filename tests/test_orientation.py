"""Slicing follows the affine, not the array: one phantom CT and its labels, written with the header variants real NIfTI
files carry (sform or qform only, other voxel orders, slice axis first, big-endian, scaled integers, NIfTI-2), give the
same PNG slices, and stitching puts a prediction back on each file's own grid and affine. Broken files fail in one
line through `segthor-slice`."""
import gzip, subprocess, sys
from pathlib import Path
import numpy as np, nibabel as nib, pytest
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from segthor_nb.core import SegthorError
from segthor_nb.data_fix import load_volume, make_phantom
from segthor_nb.slicing import read_png, slice_tree, stitch_folder

BIN = Path(sys.executable).parent
SLICE = (32, 24)                   # slice size: a resize on both in-plane axes (the phantom is 64 × 48 × 16)


def run(exe, *args):
    return subprocess.run([str(BIN/exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def stored_as(arr, affine, codes):
    "(array, affine) of the same scan stored in voxel order `codes` (nibabel's letters), e.g. 'SRA'"
    img = nib.Nifti1Image(arr, affine).as_reoriented(ornt_transform(io_orientation(affine), axcodes2ornt(codes)))
    return np.asarray(img.dataobj), img.affine


def sform_only(a, aff, ct):
    img = nib.Nifti1Image(a, aff); img.set_qform(None, code=0); img.set_sform(aff, code=1); return img

def qform_only(a, aff, ct):
    img = nib.Nifti1Image(a, None); img.set_qform(aff, code=1); img.set_sform(None, code=0); return img

def scaled(a, aff, ct):
    "CTs as int16 2·HU + 2048 with scl_slope 0.5, scl_inter −1024"
    if not ct: return nib.Nifti1Image(a, aff)
    img = nib.Nifti1Image((2*a.astype(np.int32) + 2048).astype(np.int16), aff); img.header.set_slope_inter(.5, -1024); return img

plain = lambda a, aff, ct: nib.Nifti1Image(a, aff)
big_endian = lambda a, aff, ct: nib.Nifti1Image(a.astype(a.dtype.newbyteorder('>')), aff)
nifti2 = lambda a, aff, ct: nib.Nifti2Image(a, aff)

VARIANTS = {                       # name: (voxel order, or None for the phantom's own L, P, S; header encoding)
    'sform only': (None, sform_only), 'qform only': (None, qform_only), 'big-endian': (None, big_endian),
    'scaled ints': (None, scaled), 'NIfTI-2': (None, nifti2),
    'RAS storage': ('RAS', plain), 'LPI storage (slices top down)': ('LPI', plain),
    'SRA (slice axis first)': ('SRA', plain), 'ASR (slice axis second)': ('ASR', plain),
    'SRA, qform only, big-endian': ('SRA', lambda a, aff, ct: qform_only(a.astype(a.dtype.newbyteorder('>')), aff, ct)),
    'PIL, NIfTI-2, scaled': ('PIL', lambda a, aff, ct: nifti2(a, aff, ct) if not ct else scaled(a, aff, ct)),
}


def write_tree(root, ct, gt, affine, codes=None, encode=plain):
    "A one-patient SEGTHOR tree with the scan stored in `codes` order and written by `encode`"
    d = root/'train/Patient_01'; d.mkdir(parents=True)
    for arr, name, is_ct in ((ct, 'Patient_01.nii.gz', True), (gt, 'GT.nii.gz', False)):
        a, aff = stored_as(arr, affine, codes) if codes else (arr, affine)
        nib.save(encode(a, aff, is_ct), str(d/name))
    return root


def png_arrays(split_dir):
    return {p.relative_to(split_dir).as_posix(): read_png(p) for p in sorted(Path(split_dir).rglob('*.png'))}


def same_in_world(a, aff_a, b, aff_b):
    "Whether every voxel of volume `a` has the label that `b` has at the same point in space (grids of one scan)"
    idx = np.indices(a.shape).reshape(3, -1)
    j = np.linalg.inv(aff_b) @ aff_a @ np.vstack([idx, np.ones(idx.shape[1])])
    assert np.abs(j - np.rint(j)).max() < 1e-3, 'not the same voxel grid'
    j = np.rint(j[:3]).astype(int)
    return a.size == b.size and (a[tuple(idx)] == b[tuple(j)]).all()


@pytest.fixture(scope='module')
def phantom():
    return make_phantom((64, 48), 16, seed=7)


@pytest.fixture(scope='module')
def reference(phantom, tmp_path_factory):
    "The phantom as written (L, P, S, sform and qform), sliced, and its GT slices stitched back"
    ct, gt, g = phantom
    root = tmp_path_factory.mktemp('ref')
    write_tree(root/'src', ct, gt, g.affine)
    slice_tree(root/'src', root/'sliced', SLICE, retains=0, progress=False)
    f, = stitch_folder(root/'sliced/train/gt', root/'back', 5, progress=False)
    return png_arrays(root/'sliced/train'), *load_volume(f, 'gt')


@pytest.mark.parametrize('name', list(VARIANTS))
def test_header_variants_slice_and_stitch_alike(name, phantom, reference, tmp_path):
    ct, gt, g = phantom
    ref_pngs, ref_back, ref_geom = reference
    codes, encode = VARIANTS[name]
    src = write_tree(tmp_path/'src', ct, gt, g.affine, codes, encode)
    stored, stored_geom = load_volume(src/'train/Patient_01/GT.nii.gz', 'gt')
    assert codes is None or stored.shape != gt.shape or not (stored == gt).all()      # really stored otherwise
    slice_tree(src, tmp_path/'sliced', SLICE, retains=0, progress=False)
    pngs = png_arrays(tmp_path/'sliced/train')
    assert sorted(pngs) == sorted(ref_pngs)
    assert all((pngs[k] == ref_pngs[k]).all() for k in ref_pngs), 'slices differ from those of the file stored L, P, S'
    # a prediction (here: the GT slices, resized) stitched back lands on the file's own grid, where the reference's lands
    f, = stitch_folder(tmp_path/'sliced/train/gt', tmp_path/'back', 5, progress=False)
    back, geom = load_volume(f, 'gt')
    assert back.shape == stored.shape
    np.testing.assert_allclose(geom.affine, stored_geom.affine, atol=1e-4)
    assert same_in_world(back, geom.affine, ref_back, ref_geom.affine)
    # at the native slice size the round trip is the identity, voxel for voxel, in the file's own voxel order
    native = (64, 48)
    slice_tree(src, tmp_path/'native', native, retains=0, progress=False)
    f, = stitch_folder(tmp_path/'native/train/gt', tmp_path/'native_back', 5, progress=False)
    np.testing.assert_array_equal(load_volume(f, 'gt')[0], stored)


def test_slice_axis_first_through_the_command(phantom, reference, tmp_path):
    ct, gt, g = phantom
    src = write_tree(tmp_path/'src', ct, gt, g.affine, 'SRA')
    r = run('segthor-slice', '--source_dir', src, '--dest_dir', tmp_path/'sliced', '--shape', *SLICE, '--retains', 0)
    assert r.returncode == 0, r.stderr
    assert 'train 1 / val 0 / test 0' in r.stdout and 'labels from GT.nii.gz' in r.stdout
    pngs = png_arrays(tmp_path/'sliced/train')
    assert len(pngs) == 2*16 and all((pngs[k] == reference[0][k]).all() for k in reference[0])
    f, = stitch_folder(tmp_path/'sliced/train/gt', tmp_path/'back', 5, source_scan_pattern=str(src/'train/{id_}/Patient_01.nii.gz'), progress=False)
    back, geom = load_volume(f, 'gt')
    assert back.shape == (16, 64, 48) and same_in_world(back, geom.affine, reference[1], reference[2].affine)


def test_broken_files_fail_in_one_line(phantom, tmp_path):
    ct, gt, g = phantom
    src = write_tree(tmp_path/'src', ct, gt, g.affine)
    d = src/'train/Patient_01'
    good = (d/'Patient_01.nii.gz').read_bytes()
    nib.save(nib.Nifti1Image(gt, g.affine), str(d/'GT.nii'))
    (d/'GT.nii').write_bytes((d/'GT.nii').read_bytes()[:-100])                        # truncated, uncompressed
    cases = [(good[:len(good)//2], 'GT.nii.gz', 'Patient_01.nii.gz: truncated'),      # truncated gzip
             (gzip.compress(b'not a volume\n'*50), 'GT.nii.gz', 'Patient_01.nii.gz: not a readable NIfTI'),
             (b'plain text, not even gzip', 'GT.nii.gz', 'Patient_01.nii.gz: truncated or corrupt'),
             (good, 'GT.nii', 'GT.nii: truncated')]
    for i, (data, gt_name, expected) in enumerate(cases):                           # in-process: each message
        (d/'Patient_01.nii.gz').write_bytes(data)
        with pytest.raises(SegthorError) as e: slice_tree(src, tmp_path/f'out{i}', SLICE, retains=0, gt_name=gt_name, progress=False)
        assert expected in str(e.value) and str(d) in str(e.value) and '\n' not in str(e.value), str(e.value)
    for data, processes, expected in ((good[:len(good)//2], 2, cases[0][2]), (cases[1][0], 1, cases[1][2])):   # the command
        (d/'Patient_01.nii.gz').write_bytes(data)
        r = run('segthor-slice', '--source_dir', src, '--dest_dir', tmp_path/f'cli{processes}', '--retains', 0, '-p', processes)
        lines = [l for l in r.stderr.splitlines() if l.strip() and 'slicing:' not in l]       # (tqdm's bar aside)
        assert r.returncode == 1 and len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
        assert lines[0].startswith('segthor-slice: ') and expected in lines[0] and str(d) in lines[0], lines[0]
