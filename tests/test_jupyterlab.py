"""The ipywidgets slice viewer of nbs/06_interpretability.ipynb as a user meets it: `jupyter lab` started headless on
127.0.0.1 with a token, a notebook opened in Chromium (selenium), its cells run from JupyterLab's Run menu, then the
widget driven with the keyboard and the mouse — the z slider moved, the GT / prediction / error layers toggled — while
the rendered image (the PNG behind its `src`) and the per-slice Dice of the viewer's title are checked to follow.

Screenshots go to `$LAB_SHOTS` (default: the test's temporary folder). Skipped, with the reason, only when chromium or
chromedriver is missing (apt-get install -y chromium chromium-driver)."""
import base64, io, json, os, secrets, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import nbformat, numpy as np, pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT/'tools'))
import check_docs   # noqa: E402

browser, driver = check_docs.chromium_paths()
needs_chromium = pytest.mark.skipif(not (browser and driver), reason=
    "chromium/chromedriver not installed: sudo apt-get install -y chromium chromium-driver (.ci/run does this)")

CELLS = ["""import numpy as np
from segthor_nb.data_fix import make_phantom
ct, gt, _ = make_phantom((64, 64), 12, seed=0)      # a phantom thorax CT [x, y, z] and its labels
pred = np.roll(gt, 2, axis=0); pred[:, :, ::2][pred[:, :, ::2] == 3] = 0   # a prediction: shifted, trachea missed on even z""",
"""import ipywidgets as W
from segthor_nb.interpret import SliceViewer
viewer = SliceViewer(ct, gt, pred, z=6, size=3)
title = W.Label(viewer.title)                       # the title drawn in the image, also as text the page can be read for
viewer.image.observe(lambda _: setattr(title, 'value', viewer.title), 'value')
W.VBox([viewer.widget, title])"""]

BLOB_JS = """const done = arguments[arguments.length - 1];
fetch(arguments[0].src).then(r => r.arrayBuffer()).then(b => {
  const u = new Uint8Array(b); let s = ''; for (let i = 0; i < u.length; i++) s += String.fromCharCode(u[i]); done(btoa(s));
}).catch(e => done('error: ' + e));"""


def free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    "(url of a notebook with the viewer, token) served by `jupyter lab` from a temporary folder; stopped afterwards"
    root, cfg = tmp_path/'nbs', tmp_path/'jupyter'; root.mkdir()
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nbformat.write(nb, root/'viewer.ipynb')
    news = cfg/'settings'/'@jupyterlab'/'apputils-extension'/'notification.jupyterlab-settings'
    news.parent.mkdir(parents=True); news.write_text(json.dumps({'fetchNews': 'false'}))   # no news pop-up over the page
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'JUPYTER_CONFIG_DIR': str(cfg/'config'), 'JUPYTER_RUNTIME_DIR': str(cfg/'runtime'),
           'JUPYTERLAB_WORKSPACES_DIR': str(cfg/'workspaces'), 'JUPYTERLAB_SETTINGS_DIR': str(cfg/'settings')}
    cmd = [str(BIN/'jupyter'), 'lab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}', '--ServerApp.port_retries=0',
           f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate']
    if os.geteuid() == 0: cmd.append('--allow-root')
    log = open(tmp_path/'jupyter.log', 'w')
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(150):
            try: urllib.request.urlopen(f'http://127.0.0.1:{port}/api/status?token={token}', timeout=1); break
            except OSError: assert server.poll() is None, (tmp_path/'jupyter.log').read_text(); time.sleep(.2)
        yield f'http://127.0.0.1:{port}/lab/tree/viewer.ipynb?token={token}', token
    finally:
        server.terminate()
        try: server.wait(15)
        except subprocess.TimeoutExpired: server.kill(); server.wait()
        log.close()


def png_of(d, img)->np.ndarray:
    "The pixels of the PNG an <img> shows, read back through its src"
    from PIL import Image
    b64 = d.execute_async_script(BLOB_JS, img)
    assert not b64.startswith('error'), b64
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert('RGB'))


@needs_chromium
def test_slice_viewer_in_jupyterlab(lab, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    url, token = lab
    shots = Path(os.environ.get('LAB_SHOTS') or tmp_path/'shots'); shots.mkdir(parents=True, exist_ok=True)
    d = check_docs.start_browser(1280, 1500); d.set_script_timeout(20)
    css = lambda sel: d.find_element(By.CSS_SELECTOR, sel)
    def wait(cond, what, timeout=60):
        try: return WebDriverWait(d, timeout, poll_frequency=.2).until(lambda _: cond())
        except Exception: d.save_screenshot(str(shots/'failed.png')); raise AssertionError(f"timed out waiting for {what} (see {shots/'failed.png'})")
    try:
        d.get(url)
        wait(lambda: d.find_elements(By.CSS_SELECTOR, '.jp-Notebook-ExecutionIndicator[data-status="idle"]'), 'the kernel')
        next(m for m in d.find_elements(By.CSS_SELECTOR, '.lm-MenuBar-itemLabel') if m.text == 'Run').click()  # Run > Run All Cells
        wait(lambda: [m for m in d.find_elements(By.CSS_SELECTOR, '.lm-Menu-itemLabel') if m.text == 'Run All Cells'], 'the Run menu')[0].click()
        img = wait(lambda: d.find_elements(By.CSS_SELECTOR, '.jp-OutputArea img.widget-image'), 'the viewer', 90)[0]
        label = wait(lambda: [e for e in d.find_elements(By.CSS_SELECTOR, '.jp-OutputArea .widget-label') if e.text.startswith('z = ')],
                     "the title's label")[0]
        toggles = {b.text: b for b in d.find_elements(By.CSS_SELECTOR, '.jp-OutputArea button.widget-toggle-button')}
        assert set(toggles) == {'gt', 'pred', 'error'}, toggles.keys()
        wait(lambda: label.text.startswith('z = 6 | Dice'), 'the title of slice 6')
        title0, src0, px0 = label.text, img.get_attribute('src'), png_of(d, img)
        assert px0.shape[0] > 100 and px0.std() > 10                     # a picture, not a blank
        shown = d.execute_script('return arguments[0].getBoundingClientRect().width', img)
        assert abs(shown - px0.shape[1]/2) <= 2, (shown, px0.shape)      # shown at its size (2 pixels per CSS pixel), not stretched
        d.save_screenshot(str(shots/'lab-1-run-all.png'))

        css('.jp-OutputArea .widget-slider .noUi-handle').send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)   # z 6 -> 8
        wait(lambda: label.text.startswith('z = 8 | Dice'), 'the title of slice 8')
        wait(lambda: img.get_attribute('src') != src0, 'a new image')
        px1 = png_of(d, img)
        assert label.text != title0 and 'trachea 0.00' in label.text and 'heart' not in label.text, label.text
        assert px1.shape != px0.shape or np.abs(px1.astype(int) - px0).max() > 50
        d.save_screenshot(str(shots/'lab-2-slider.png'))

        before = px1
        for name, on in (('gt', False), ('error', True), ('pred', False)):
            src, title = img.get_attribute('src'), label.text
            toggles[name].click()
            wait(lambda: img.get_attribute('src') != src, f'the image after toggling {name}')
            assert ('mod-active' in toggles[name].get_attribute('class')) == on
            px = png_of(d, img)
            assert px.shape != before.shape or np.abs(px.astype(int) - before).max() > 50, name
            assert label.text == title                                    # the layers change the picture, not the Dice
            before = px
        d.save_screenshot(str(shots/'lab-3-layers.png'))
        assert not [e for e in d.get_log('browser') if e['level'] == 'SEVERE' and 'widget' in e['message'].lower()]
    finally:
        d.quit()
