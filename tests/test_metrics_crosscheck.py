"""Randomised cross-check of `segthor_nb.metrics` against MONAI and (if installed) DeepMind's surface-distance.

Random label maps (smooth blobs, ellipsoids partly outside the volume so they touch its border, single voxels,
one-voxel-thin plates, empty structures) with random anisotropic spacing. Required agreement: 1e-3 mm for distances,
1e-6 for overlap metrics and NSD (MONAI computes in float32, so its values differ from ours by ~1e-6 relative).
"""
import warnings
import numpy as np, pytest, torch
from scipy import ndimage as ndi
from monai.metrics import (compute_dice, compute_iou, compute_hausdorff_distance, compute_average_surface_distance,
                           compute_surface_dice, get_confusion_matrix, compute_confusion_matrix_metric)
from monai.metrics.utils import get_edge_surface_distance
from segthor_nb.metrics import metrics3d, metrics2d, surface_voxels

pytestmark = [pytest.mark.filterwarnings('ignore:.*is all 0.*:UserWarning'),  # MONAI on empty structures
              pytest.mark.filterwarnings('ignore:invalid value:RuntimeWarning'),
              pytest.mark.filterwarnings('ignore:.*always_return_as_numpy:FutureWarning')]  # MONAI 1.6 warns about itself
DIST, OVER = 1e-3, 1e-6


def _mask(rng, shape):
    "One random binary structure"
    kind = rng.choice(['blob', 'ellipsoid', 'border', 'voxel', 'plate', 'blob'])
    m = np.zeros(shape, bool)
    if kind == 'blob':
        x = ndi.gaussian_filter(rng.random(shape), rng.uniform(1, 2.5))
        return x > np.quantile(x, rng.uniform(.6, .97))
    if kind in ('ellipsoid', 'border'):
        c = rng.uniform(0, 1, 3) * shape if kind == 'ellipsoid' else rng.choice([0, 1], 3) * (np.array(shape) - 1)
        r = rng.uniform(1, .5 * min(shape), 3)
        g = np.ogrid[tuple(slice(0, s) for s in shape)]
        return sum(((gi - ci) / ri)**2 for gi, ci, ri in zip(g, c, r)) <= 1
    if kind == 'voxel':
        m[tuple(rng.integers(0, s) for s in shape)] = True
        return m
    a, i = rng.integers(0, 3), rng.integers(0, shape[0])  # a one-voxel-thin plate
    sl = [slice(None)] * 3; sl[a] = min(i, shape[a] - 1); m[tuple(sl)] = True
    return m


def _case(seed):
    "Random (pred, gt, spacing) label maps with classes 1 and 2 (class 2 painted over class 1)"
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(6, 28, 3))
    spacing = tuple(rng.uniform(.3, 4., 3))
    gt, pred = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    for c in (1, 2):
        g = _mask(rng, shape)
        p = rng.choice([lambda: _mask(rng, shape), lambda: np.roll(g, rng.integers(-2, 3), rng.integers(0, 3)),
                        lambda: ndi.binary_dilation(g) if g.any() else g, lambda: g.copy()])()
        e = rng.random()  # ~8% each: GT empty (spurious), prediction empty (miss), both empty (absent)
        if e < .16: g = np.zeros(shape, bool)
        if .08 <= e < .24: p = np.zeros(shape, bool)
        gt[g], pred[p] = c, c
    return pred, gt, spacing


def _onehot(lab, c, dims=3):
    return torch.from_numpy(np.ascontiguousarray(lab == c)[None, None]).float()


def _monai(pred, gt, spacing, c, tol):
    P, G = _onehot(pred, c), _onehot(gt, c)
    cm = get_confusion_matrix(P, G, include_background=True)
    tp, fp, tn, fn = cm[0, 0].double().tolist()
    cmm = lambda name: compute_confusion_matrix_metric(name, cm).item()
    kw = dict(include_background=True, spacing=spacing)
    out = dict(dice=compute_dice(P, G).item(), iou=compute_iou(P, G).item(), precision=cmm('precision'),
               sensitivity=cmm('sensitivity'), specificity=cmm('specificity'),
               vs=1 - abs(fn - fp) / (2 * tp + fp + fn) if tp + fp + fn else np.nan,
               hd=compute_hausdorff_distance(P, G, **kw).item(),
               hd95=compute_hausdorff_distance(P, G, percentile=95, **kw).item(),
               assd=compute_average_surface_distance(P, G, symmetric=True, **kw).item(),
               nsd=compute_surface_dice(P, G, [tol], **kw).item())
    out['voe'] = 1 - out['iou']
    (_, _), dists, _ = get_edge_surface_distance(P[0, 0], G[0, 0], spacing=spacing, symmetric=True, warn_empty=False)
    d = torch.cat(dists).numpy()
    out['hd95_pooled'] = np.percentile(d, 95) if len(d) else np.nan  # medpy's pooled definition on MONAI's distances
    return out, (pred == c).any() and (gt == c).any()


nan = np.nan
SURF = dict(hd=nan, hd95=nan, hd95_pooled=nan, assd=nan)
POLICY = {  # (GT present, prediction present) -> expected values (the notebook's empty-structure table)
    (True, False): dict(dice=0, iou=0, vs=0, voe=1, precision=nan, sensitivity=0, nsd=0, **SURF),    # miss
    (False, True): dict(dice=0, iou=0, vs=0, voe=1, precision=0, sensitivity=nan, nsd=0, **SURF),    # spurious
    (False, False): dict(dice=nan, iou=nan, vs=nan, voe=nan, precision=nan, sensitivity=nan, nsd=nan, **SURF)}  # absent


def _close(a, b, eps): return (np.isnan(a) and np.isnan(b)) or abs(a - b) <= eps


@pytest.mark.parametrize('seed', range(60))
def test_metrics3d_matches_monai(seed):
    pred, gt, spacing = _case(seed)
    tol = float(np.random.default_rng(seed + 1000).uniform(.5, 5))
    ours = metrics3d(pred, gt, spacing, classes=(1, 2), nsd_tol=tol)
    for c in (1, 2):
        ref, both = _monai(pred, gt, spacing, c, tol)
        assert _close(ours.loc[c, 'specificity'], ref['specificity'], OVER)
        if both:
            for k, v in ref.items():
                assert _close(ours.loc[c, k], v, DIST if k in ('hd', 'hd95', 'hd95_pooled', 'assd') else OVER), (seed, c, k, ours.loc[c, k], v)
        else:
            for k, v in POLICY[(gt == c).any(), (pred == c).any()].items():
                assert _close(ours.loc[c, k], v, 0), (seed, c, k, ours.loc[c, k], v)


def test_random_cases_cover_the_empty_structures():
    "The random cases include misses, spurious and absent organs (so the policy branch above is exercised)"
    seen = set()
    for seed in range(60):
        pred, gt, _ = _case(seed)
        seen |= {(bool((gt == c).any()), bool((pred == c).any())) for c in (1, 2)}
    assert seen == {(True, True), (True, False), (False, True), (False, False)}


def test_surface_definition_is_monais():
    "Our one-pass label boundary equals MONAI's get_mask_edges (erosion, 6-connectivity, zero border), per organ"
    from monai.metrics.utils import get_mask_edges
    for seed in range(10):
        pred, gt, _ = _case(seed)
        s = surface_voxels(gt, (1, 2))
        for c in (1, 2):
            if not (gt == c).any(): continue
            e_pred, e_gt = get_mask_edges(gt == c, gt == c, crop=False)
            assert set(map(tuple, s[c])) == set(map(tuple, np.argwhere(e_gt))), seed


@pytest.mark.parametrize('seed', range(15))
def test_metrics2d_matches_monai_per_slice(seed):
    pred, gt, spacing = _case(seed)
    m2 = metrics2d(pred, gt, classes=(1, 2), spacing=spacing[:2])
    for z in range(pred.shape[-1]):
        for c in (1, 2):
            p, g = pred[..., z] == c, gt[..., z] == c
            if not (p.any() and g.any()): continue
            P, G = (torch.from_numpy(x[None, None]).float() for x in (p, g))
            assert abs(m2.loc[(z, c), 'dice'] - compute_dice(P, G).item()) <= OVER
            hd = compute_hausdorff_distance(P, G, include_background=True, spacing=spacing[:2]).item()
            assert abs(m2.loc[(z, c), 'hd'] - hd) <= DIST, (seed, z, c)


def test_subvoxel_nsd_matches_monai():
    "surface='surfel' NSD equals MONAI's use_subvoxels=True NSD (the same DeepMind surfels)"
    for seed in range(20):
        pred, gt, spacing = _case(seed)
        ours = metrics3d(pred, gt, spacing, classes=(1,), nsd_tol=1.5, surface='surfel')
        if not ((pred == 1).any() and (gt == 1).any()): continue
        ref = compute_surface_dice(_onehot(pred, 1), _onehot(gt, 1), [1.5], include_background=True, spacing=spacing,
                                   use_subvoxels=True).item()
        assert abs(ours.loc[1, 'nsd'] - ref) <= 1e-5, seed  # MONAI's surfel areas are float32


@pytest.mark.parametrize('seed', range(40))
def test_surfel_mode_matches_deepmind(seed):
    sd = pytest.importorskip('surface_distance')
    pred, gt, spacing = _case(seed)
    tol = 1.5
    ours = metrics3d(pred, gt, spacing, classes=(1, 2), nsd_tol=tol, surface='surfel')
    for c in (1, 2):
        g, p = gt == c, pred == c
        if not (g.any() and p.any()): continue  # surface-distance 0.1 uses np.Inf (removed in numpy 2) for empty masks
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)  # its scipy.ndimage.filters / .morphology imports
            d = sd.compute_surface_distances(g, p, spacing)
        ag, ap = d['surfel_areas_gt'], d['surfel_areas_pred']
        dg, dp = d['distances_gt_to_pred'], d['distances_pred_to_gt']
        ref = dict(dice=sd.compute_dice_coefficient(g, p), hd=sd.compute_robust_hausdorff(d, 100),
                   hd95=sd.compute_robust_hausdorff(d, 95), nsd=sd.compute_surface_dice_at_tolerance(d, tol),
                   assd=(np.sum(dg * ag) + np.sum(dp * ap)) / (ag.sum() + ap.sum()))
        for k, v in ref.items(): assert abs(ours.loc[c, k] - v) <= 1e-9, (seed, c, k, ours.loc[c, k], v)
        directed = sd.compute_average_surface_distance(d)  # (GT→pred, pred→GT) area-weighted means
        assert abs(np.sum(dg * ag) / ag.sum() - directed[0]) <= 1e-9


def test_voxel_and_surfel_definitions_differ_but_agree_roughly():
    "The two surface definitions are different metrics: close on smooth shapes, not identical"
    from segthor_nb.metrics import synthetic_pair
    pred, gt = synthetic_pair((64, 64, 32), seed=4)
    v, s = (metrics3d(pred, gt, (0.8, 0.8, 2.5), surface=k) for k in ('voxel', 'surfel'))
    assert not np.allclose(v['assd'], s['assd']) and np.allclose(v['assd'], s['assd'], rtol=.5, atol=.5)
    assert np.array_equal(v['dice'], s['dice'])
