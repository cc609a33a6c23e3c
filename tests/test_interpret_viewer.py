"""The slice viewer of nbs/06_interpretability.ipynb, headless: the pure renderer's pixel colours and its title's
per-slice Dice, then the ipywidgets viewer itself (built, driven by `update` and by its slider)."""
import matplotlib
matplotlib.use('Agg')
import numpy as np, pytest
import matplotlib.pyplot as plt
from segthor_nb.core import ORGAN_RGBA
from segthor_nb.interpret import ERROR_RGB, InterpretError, SliceViewer, slice_figure, slice_dice, slice_rgb

GREY = .5  # HU 40 in the default window (40, 400)


def organ_rgb(c): return np.array(ORGAN_RGBA[c][:3])
def organ_alpha(c): return ORGAN_RGBA[c][3]


@pytest.fixture
def vols():
    "A 20 × 16 × 4 volume [x, y, z]; slice 2 holds all four organs; the prediction gets some of them wrong"
    ct = np.full((20, 16, 4), 40, np.int16)
    gt = np.zeros(ct.shape, np.uint8)
    gt[2:10, 3:9, 2] = 2        # heart 8 × 6 = 48 px
    gt[12:15, 3:6, 2] = 1       # esophagus 3 × 3 = 9 px
    gt[12:16, 9:13, 2] = 3      # trachea 4 × 4 = 16 px
    gt[16:19, 1:4, 2] = 4       # aorta 3 × 3 = 9 px
    pred = gt.copy()
    pred[2:4, 3:9, 2] = 0       # heart: 6 × 6 = 36 px predicted, all inside: Dice 72/84
    pred[12:15, 3:6, 2] = 0; pred[13:16, 3:6, 2] = 1   # esophagus shifted by one: overlap 6, Dice 12/18
    pred[12:16, 9:13, 2] = 0    # trachea missed: Dice 0
    attr = np.zeros(ct.shape, np.float32); attr[17:19, 12:15, 2] = -4.; attr[0, 0, 1] = 8.   # volume max |attr| 8
    return ct, gt, pred, attr


def test_gt_layer_fills_every_organ_with_its_colour(vols):
    ct, gt, pred, attr = vols
    rgb = slice_rgb(ct, gt, pred, attr, z=2, layers=('gt',))
    assert rgb.shape == (16, 20, 3) and rgb.dtype == np.float32                 # rows = y, columns = x
    for c, (x, y) in {1: (13, 4), 2: (5, 5), 3: (14, 10), 4: (17, 2)}.items():
        assert gt[x, y, 2] == c
        np.testing.assert_allclose(rgb[y, x], (1 - organ_alpha(c))*GREY + organ_alpha(c)*organ_rgb(c), atol=1e-6)
    np.testing.assert_allclose(rgb[0, 0], [GREY]*3, atol=1e-6)                  # background: the CT alone
    assert rgb[5, 5, 1] > rgb[5, 5, 0] and rgb[4, 13, 0] > rgb[4, 13, 1]          # heart green, esophagus red


def test_pred_outlines_error_and_attribution_layers(vols):
    ct, gt, pred, attr = vols
    rgb = slice_rgb(ct, gt, pred, attr, z=2, layers=('pred',))
    np.testing.assert_allclose(rgb[3, 4], organ_rgb(2), atol=1e-6)               # the predicted heart's edge (x 4, y 3)
    np.testing.assert_allclose(rgb[5, 6], [GREY]*3, atol=1e-6)                    # its interior is left visible
    err = slice_rgb(ct, gt, pred, attr, z=2, layers=('error',))
    np.testing.assert_allclose(err[10, 14], .3*GREY + .7*np.array(ERROR_RGB), atol=1e-6)   # missed trachea pixel
    np.testing.assert_allclose(err[5, 5], [GREY]*3, atol=1e-6)                   # agreed heart pixel
    heat = slice_rgb(ct, gt, pred, attr, z=2, layers=('attr',))
    inferno = np.array(plt.get_cmap('inferno')(.5)[:3])                           # |−4| / 8
    np.testing.assert_allclose(heat[12, 17], (1 - .35)*GREY + .35*inferno, atol=1e-6)
    np.testing.assert_allclose(heat[5, 5], [GREY]*3, atol=1e-6)
    none = slice_rgb(ct, gt, pred, attr, z=2, layers=())
    np.testing.assert_allclose(none, GREY, atol=1e-6)


def test_title_shows_the_slice_dice(vols):
    ct, gt, pred, attr = vols
    d = slice_dice(gt[..., 2], pred[..., 2])
    np.testing.assert_allclose([d[1], d[2], d[3], d[4]], [12/18, 72/84, 0., 1.])
    fig = slice_figure(ct, gt, pred, attr, z=2)
    assert fig.axes[0].get_title() == 'z = 2 | Dice esophagus 0.67, heart 0.86, trachea 0.00, aorta 1.00'
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), slice_rgb(ct, gt, pred, attr, 2, ('gt', 'pred')))
    plt.close(fig)
    fig = slice_figure(ct, gt, pred, z=0); assert fig.axes[0].get_title() == 'z = 0 | no organ'; plt.close(fig)
    fig = slice_figure(ct, z=1); assert fig.axes[0].get_title() == 'z = 1'; plt.close(fig)


def test_bad_requests_fail_with_one_clear_line(vols):
    ct, gt, pred, attr = vols
    with pytest.raises(InterpretError, match='unknown layer'): slice_rgb(ct, gt, pred, z=2, layers=('labels',))
    with pytest.raises(InterpretError, match=r'slice 4 outside the volume.s 0\.\.3'): slice_rgb(ct, gt, pred, z=4)
    with pytest.raises(InterpretError, match=r'pred shape \(20, 16, 3\) != CT shape'): SliceViewer(ct, gt, pred[..., :3])


def test_widget_builds_and_updates(vols):
    ct, gt, pred, attr = vols
    v = SliceViewer(ct, gt, pred, attr, z=0)
    assert list(v.toggles) == ['gt', 'pred', 'attr', 'error'] and v.layers == ('gt', 'pred')
    assert v.title == 'z = 0 | no organ' and v.image.value[:8] == b'\x89PNG\r\n\x1a\n'
    first = v.image.value
    assert v.update(z=2) is v and v.slider.value == 2
    assert v.title == 'z = 2 | Dice esophagus 0.67, heart 0.86, trachea 0.00, aorta 1.00' and v.image.value != first
    v.slider.value = 1                                      # the control alone re-renders
    assert v.title == 'z = 1 | no organ'
    v.toggles['attr'].value = True; assert v.layers == ('gt', 'pred', 'attr')
    v.update(z=2, layers=('error',)); assert v.layers == ('error',) and not v.toggles['gt'].value
    with pytest.raises(InterpretError, match='outside the volume'): v.update(z=9)
    assert list(SliceViewer(ct).toggles) == []              # a bare CT: nothing to toggle
    assert len(v.widget.children) == 3
