"""The pair (and blind) estimates of the heart tampering on many random transforms of phantom hearts (minutes: `slow`).
The notebook runs a 3-transform sweep and shows the dead band of small rotations; these are the larger sweeps."""
import numpy as np, pytest
from scipy import ndimage as ndi
from segthor_nb.data_fix import course_affine, course_params, make_phantom, move_heart, register_blind, register_pair

def pair_trial(seed, rng, phi_range=(3, 45), pad=64):
    "Tamper a 160²×64 phantom heart, zero-padded by `pad` so a ±60-voxel shift keeps it in view; return truth, estimate, mismatch"
    heart = np.pad(make_phantom((160, 160), 64, seed=seed)[1] == 2, pad).astype(np.uint8)
    sc = (heart.shape[0]/512, heart.shape[1]/512, heart.shape[2]/160)
    phi, t = rng.choice([-1, 1])*rng.uniform(*phi_range), rng.uniform(-60, 60, 3)
    tampered = ndi.affine_transform(heart, course_affine(sc, phi, shift=t/np.array(sc)), order=0)
    M = register_pair(tampered == 1, heart == 1)
    phi_e, t_e = course_params(M, sc)
    mismatch = int((ndi.affine_transform(heart, M, order=0) != tampered).sum())   # how well the estimate reproduces the labels
    return phi, t, phi_e, np.array(t_e), mismatch

def sweep(n, seed, phi_range=(3, 45)):
    rng = np.random.default_rng(seed)
    errs = np.array([(lambda p, t, pe, te, m: (pe - p, *(te - t), np.round(t[2]) - t[2], m))(*pair_trial(100 + k, rng, phi_range)) for k in range(n)])
    a = np.abs(errs)
    print(f"\n{n} random transforms, |φ| in {phi_range}°: |φ error| max {a[:, 0].max():.3f}° mean {a[:, 0].mean():.3f}°; "
          f"|t error| in-plane max {a[:, 1:3].max():.3f}, z max {a[:, 3].max():.3f} voxels; exact reproductions {int((errs[:, 5] == 0).sum())}/{n}")
    return errs

def check(errs, max_phi):
    assert np.abs(errs[:, 0]).max() <= max_phi, errs[:, 0]
    assert np.abs(errs[:, 1:4]).max() <= 1, errs[:, 1:4]
    np.testing.assert_allclose(errs[:, 3], errs[:, 4], atol=0.05)   # z: the estimate is the rounded shift (NN moved whole slices)

@pytest.mark.slow
def test_pair_random_transforms_sweep():
    check(sweep(30, 1), 0.5)

@pytest.mark.slow
def test_pair_small_rotations():
    "Near 0° the answer is only defined up to the dead band of identical tampered maps (~±1° at this size)"
    check(sweep(10, 2, (0, 3)), 2.)

@pytest.mark.slow
def test_blind_random_transforms():
    "Blind, on phantom patients tampered with random transforms that keep the heart in the volume"
    rng, errs = np.random.default_rng(2), []
    sc = (160/512, 160/512, 64/160)
    for k in range(6):
        ct, gt, geom = make_phantom((160, 160), 64, seed=200 + k)
        phi, t = rng.uniform(-40, 40), rng.uniform([-20, -20, -6], [20, 20, 6])
        t[2] = np.round(t[2])
        tampered = move_heart(gt, course_affine(sc, phi, shift=t/np.array(sc)))
        phi_e, t_e = course_params(register_blind(ct, tampered, geom.spacing), sc)
        errs.append((phi_e - phi, *(np.array(t_e) - t)))
    errs = np.array(errs)
    print('\nblind errors (φ°, tx, ty, tz voxels):\n', np.round(errs, 2))
    assert np.abs(errs[:, 0]).max() < 8 and np.abs(errs[:, 1:]).max() < 2
