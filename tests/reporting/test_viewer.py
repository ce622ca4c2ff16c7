"""The viewer page: its payload round-trips, `glioseg view` and `glioseg report` write it, broken
cases write nothing, and (in headless Chromium) NiiVue draws the scan and every label colour."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import nibabel as nib
import numpy as np
import pytest

from glioseg.cli import main
from glioseg.data.discovery import discover
from glioseg.data.io import write_label_map
from glioseg.labels import from_internal
from glioseg.reporting.figures import LABEL_COLOURS
from glioseg.reporting.viewer import (
    NIIVUE_VERSION,
    case_viewer,
    class_volumes_ml,
    content_box,
    encode_nifti,
    viewer_html,
    window_to_uint8,
)

CASE = "Brats18_VIEW_001_1"


def payload(page: str) -> dict:
    """The JSON data block of a viewer page."""
    match = re.search(r'<script id="glioseg-data" type="application/json">(.*?)</script>', page, re.DOTALL)
    assert match, "no data block"
    return json.loads(match.group(1))


def decode_nifti(text: str) -> nib.Nifti1Image:
    raw = gzip.decompress(base64.b64decode(text))
    return nib.Nifti1Image.from_bytes(raw)


def labelmap(data: dict, index: int) -> np.ndarray:
    """A label map of a page's payload, put back on the case's full grid (the page holds a crop)."""
    crop = np.asarray(decode_nifti(data["labelmaps"][index]["nifti"]).dataobj)
    assert list(crop.shape) == data["crop_shape"]
    full = np.zeros(data["shape"], dtype=crop.dtype)
    x, y, z = data["crop_origin"]
    full[x : x + crop.shape[0], y : y + crop.shape[1], z : z + crop.shape[2]] = crop
    return full


# --- the pure parts ---------------------------------------------------------------------------


def test_window_keeps_zero_and_maps_the_percentile_range_to_1_255():
    image = np.zeros((4, 5, 6), dtype=np.float32)
    image[1:3, 1:4, 1:5] = np.linspace(-100, 900, 24).reshape(2, 3, 4)  # negative values are foreground too
    out = window_to_uint8(image)
    assert out.dtype == np.uint8
    assert np.all(out[image == 0] == 0)
    inside = image != 0
    assert out[inside].min() == 1 and out[inside].max() == 255
    low, high = np.percentile(image[inside], (0.5, 99.5))
    middle = (low + high) / 2  # mid-window maps to 128
    probe = image.copy()
    probe[0, 0, 0] = middle
    assert window_to_uint8(probe)[0, 0, 0] == pytest.approx(128, abs=1)
    order = np.argsort(image[inside])
    assert np.all(np.diff(out[inside][order].astype(int)) >= 0)  # monotonic
    assert not window_to_uint8(np.zeros((2, 2, 2))).any()


def test_encoded_nifti_round_trips_with_its_affine():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4, size=(7, 8, 9)).astype(np.uint8)
    affine = np.array([[-1.0, 0, 0, 10], [0, -1.2, 0, 239], [0, 0, 2.5, -4], [0, 0, 0, 1]])
    image = decode_nifti(encode_nifti(data, affine, label=True))
    np.testing.assert_array_equal(np.asarray(image.dataobj), data)
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)
    assert image.header.get_intent()[0] == "label"
    scan = decode_nifti(encode_nifti(data, affine))
    assert (float(scan.header["cal_min"]), float(scan.header["cal_max"])) == (0.0, 255.0)


def test_content_box_and_the_cropped_affine():
    scan = np.zeros((30, 40, 50), dtype=np.float32)
    scan[5:20, 10:12, 49] = 1.0
    labels = np.zeros(scan.shape, dtype=np.uint8)
    labels[3, 11, 30] = 2
    assert content_box([scan, labels], margin=2) == (slice(1, 22), slice(8, 14), slice(28, 50))
    assert content_box([np.zeros((3, 4, 5))]) == (slice(0, 3), slice(0, 4), slice(0, 5))
    affine = np.array([[-1.0, 0, 0, 5], [0, -1.0, 0, 239], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    data = payload(viewer_html({"flair": scan}, {"reference": labels}, affine, "x"))
    assert data["crop_origin"] == [1, 8, 28] and data["crop_shape"] == [21, 6, 22] and data["shape"] == [30, 40, 50]
    np.testing.assert_array_equal(labelmap(data, 0), labels)
    image = decode_nifti(data["modalities"][0]["nifti"])
    # the crop's voxel (0, 0, 0) lies where the grid's voxel (1, 8, 28) does
    np.testing.assert_allclose(image.affine @ [0, 0, 0, 1], affine @ [1, 8, 28, 1], atol=1e-5)
    np.testing.assert_allclose(image.affine[:3, :3], affine[:3, :3], atol=1e-6)


def test_class_volumes_in_ml():
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[0, 0, :3] = 1  # 3 NCR
    labels[1, :, :] = 2  # 100 ED
    labels[2, 0, :7] = 3  # 7 ET
    volumes = class_volumes_ml(labels, voxel_ml=0.002)  # 2 mm^3 voxels
    assert volumes == pytest.approx({"ncr": 0.006, "ed": 0.2, "et": 0.014, "wt": 0.22, "tc": 0.02})


def test_page_holds_every_volume_unchanged_and_starts_at_the_tumor():
    rng = np.random.default_rng(1)
    shape = (12, 13, 14)
    scans = {m: rng.normal(100, 20, size=shape).astype(np.float32) for m in ("t2", "flair")}
    reference = np.zeros(shape, dtype=np.uint8)
    reference[2:5, 3:6, 8:11] = 2
    reference[3, 4, 9] = 3
    prediction = np.zeros(shape, dtype=np.uint8)
    prediction[2:4, 3:5, 8:10] = 1
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    page = viewer_html(scans, {"reference": reference, "my <model>": prediction}, affine, "case </script><b>x")
    data = payload(page)
    assert [m["name"] for m in data["modalities"]] == ["t2", "flair"]
    for m, name in zip(data["modalities"], ("t2", "flair"), strict=True):
        np.testing.assert_array_equal(np.asarray(decode_nifti(m["nifti"]).dataobj), window_to_uint8(scans[name]))
    assert [layer["name"] for layer in data["labelmaps"]] == ["reference", "my <model>"]
    np.testing.assert_array_equal(np.asarray(decode_nifti(data["labelmaps"][0]["nifti"]).dataobj), reference)
    np.testing.assert_array_equal(np.asarray(decode_nifti(data["labelmaps"][1]["nifti"]).dataobj), prediction)
    assert data["labelmaps"][0]["volumes_ml"]["ed"] == pytest.approx(26 * 0.002)  # 27 voxels, one of them ET
    assert reference[tuple(data["start_voxel"])] > 0
    np.testing.assert_allclose(np.array(data["inverse_affine"]) @ np.array(data["affine"]), np.eye(4), atol=1e-12)
    assert (
        {c["name"]: c["rgb"] for c in data["classes"]}
        == {
            "necrosis (NCR)": [255, 0, 0],
            "edema (ED)": [0, 204, 0],
            "enhancing (ET)": [255, 255, 0],
        }
        == {
            name: [round(255 * c) for c in LABEL_COLOURS[v]]
            for v, name in ((1, "necrosis (NCR)"), (2, "edema (ED)"), (3, "enhancing (ET)"))
        }
    )
    # the title cannot break out of the page, the bundle is inlined (no network at view time)
    assert "</script><b>x" not in page and "case &lt;/script&gt;&lt;b&gt;x" in page
    assert page.count("</script>") == 3
    assert "sA.niivue={}" in page and NIIVUE_VERSION in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    with pytest.raises(ValueError, match="outside"):
        viewer_html(scans, {"bad": reference + 4}, affine, "x")
    with pytest.raises(ValueError, match="shape"):
        viewer_html(scans, {"bad": reference[1:]}, affine, "x")


# --- glioseg view -----------------------------------------------------------------------------


def test_view_command_writes_a_page_with_reference_and_predictions(tmp_path, write_case, capsys):
    folder = write_case(tmp_path / "data", CASE)
    seg = nib.load(str(folder / f"{CASE}_seg.nii.gz"))
    internal = np.zeros(seg.shape, dtype=np.uint8)
    internal[5:9, 6:10, 7:12] = 3
    (tmp_path / "unet").mkdir()
    write_label_map(tmp_path / "unet" / f"{CASE}.nii.gz", from_internal(internal, "brats2018"), seg.affine)
    write_label_map(tmp_path / "other.nii.gz", from_internal(internal, "brats2023"), seg.affine)
    out = tmp_path / "page.html"
    code = main(["view", str(folder), "--pred", str(tmp_path / "unet" / f"{CASE}.nii.gz"), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert f"viewer page of {CASE} written to {out}" in capsys.readouterr().out
    data = payload(out.read_text())
    assert [m["name"] for m in data["modalities"]] == ["flair", "t1", "t1ce", "t2"]
    assert [layer["name"] for layer in data["labelmaps"]] == ["reference", "unet"]  # named after its folder
    np.testing.assert_array_equal(labelmap(data, 1), internal)
    reference = labelmap(data, 0)
    original = np.asarray(seg.dataobj)
    np.testing.assert_array_equal(
        reference, np.select([original == v for v in (1, 2, 4)], [1, 2, 3], 0)
    )  # BraTS 4 -> internal 3

    # a BraTS 2023 label map: refused without --labels (its 3 would be read wrongly), shown with it
    out2 = tmp_path / "page2.html"
    assert main(["view", str(folder), "--pred", f"new={tmp_path / 'other.nii.gz'}", "-o", str(out2)]) == 2
    err = capsys.readouterr().err
    assert "looks like brats2023" in err and "not shown" in err and "pass --labels" in err and not out2.exists()
    assert (
        main(
            [
                "view",
                str(folder),
                "--pred",
                f"new={tmp_path / 'other.nii.gz'}",
                "--labels",
                "brats2023",
                "-o",
                str(out2),
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(labelmap(payload(out2.read_text()), 1), internal)


def test_view_accepts_explicit_files_and_picks_a_case_of_a_dataset(tmp_path, write_case, capsys):
    root = tmp_path / "data"
    folder = write_case(root, CASE)
    write_case(root, "Brats18_VIEW_002_1", seed=1, label=False)
    out = tmp_path / "files.html"
    files = [a for m in ("flair", "t2") for a in (f"--{m}", str(folder / f"{CASE}_{m}.nii.gz"))]
    assert main(["view", *files, "-o", str(out)]) == 0
    data = payload(out.read_text())
    assert [m["name"] for m in data["modalities"]] == ["flair", "t2"] and data["labelmaps"] == []

    assert main(["view", str(root), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds 2 cases" in err and "--case-id" in err
    assert main(["view", str(root), "--case-id", "Brats18_VIEW_002_1", "-o", str(tmp_path / "two.html")]) == 0
    assert payload((tmp_path / "two.html").read_text())["labelmaps"] == []  # that case has no label


def _truncate(folder):
    path = folder / f"{CASE}_t1ce.nii.gz"
    path.write_bytes(path.read_bytes()[:200])
    return path.name


def _nan(folder):
    path = folder / f"{CASE}_t2.nii.gz"
    image = nib.load(str(path))
    data = np.asarray(image.dataobj).astype(np.float32)
    data[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), str(path))
    return path.name


def _label_on_another_grid(folder):
    path = folder / f"{CASE}_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 22, 23), dtype=np.uint8), nib.load(str(path)).affine), str(path))
    return path.name


def _unknown_label(folder):
    path = folder / f"{CASE}_seg.nii.gz"
    image = nib.load(str(path))
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, image.affine), str(path))
    return path.name


def _broken_prediction(folder):
    (folder.parent / "pred.nii.gz").write_bytes(b"not a nifti file")
    return "pred.nii.gz"


BROKEN = [_truncate, _nan, _label_on_another_grid, _unknown_label, _broken_prediction]


@pytest.mark.parametrize("break_it", BROKEN, ids=[f.__name__.strip("_") for f in BROKEN])
def test_view_of_a_broken_case_writes_nothing(tmp_path, write_case, capsys, break_it):
    folder = write_case(tmp_path / "data", CASE)
    name = break_it(folder)
    out = tmp_path / "out" / "page.html"
    preds = ["--pred", str(folder.parent / "pred.nii.gz")] if name == "pred.nii.gz" else []
    code = main(["view", str(folder), *preds, "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and name in err and "Fix:" in err, err
    assert not out.exists()
    assert not out.parent.exists() or not list(out.parent.iterdir())  # no temporary file left either


# --- glioseg report ---------------------------------------------------------------------------


def test_report_links_a_viewer_page_per_case_shown(tmp_path, write_case):
    for i, case_id in enumerate(("Brats18_R_1", "Brats18_R_2", "Brats18_R_3")):
        folder = write_case(tmp_path / "cases", case_id, shape=(24, 26, 22), seed=i)
        seg = nib.load(str(folder / f"{case_id}_seg.nii.gz"))
        write_label_map(
            tmp_path / "pred" / f"{case_id}.nii.gz", np.roll(np.asarray(seg.dataobj), 1, axis=0), seg.affine
        )
    out = tmp_path / "report"
    assert (
        main(
            [
                "report",
                "-o",
                str(out),
                "--cases",
                str(tmp_path / "cases"),
                "--pred",
                f"unet={tmp_path / 'pred'}",
                "--num-cases",
                "2",
            ]
        )
        == 0
    )
    page = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    for case_id in ("Brats18_R_1", "Brats18_R_2"):
        viewer = out / f"viewer_{case_id}.html"
        assert f'<a href="{viewer.name}"><img src="prediction_{case_id}.png"' in page
        assert "[![" in markdown and f"](prediction_{case_id}.png)]({viewer.name})" in markdown
        data = payload(viewer.read_text())
        assert [m["name"] for m in data["modalities"]] == ["flair", "t1", "t1ce", "t2"]
        assert [layer["name"] for layer in data["labelmaps"]] == ["reference", "unet"]
    assert not (out / "viewer_Brats18_R_3.html").exists()  # only the cases shown


# --- in a browser -----------------------------------------------------------------------------


def chromium_executable() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``).

    Messages are JSON objects separated by NUL bytes: commands go to the browser's fd 3, replies
    and events come from its fd 4. Software WebGL (SwiftShader) needs no GPU.
    """

    def __init__(self, executable: str, width: int, height: int) -> None:
        self.profile = tempfile.mkdtemp(prefix="glioseg-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def onto_fds_3_and_4() -> None:  # in the child; os.pipe() fds are close-on-exec, dup2 copies are not
            r, w = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--use-gl=angle",
            "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            args, preexec_fn=onto_fds_3_and_4, pass_fds=(3, 4),  # noqa: PLW1509 - no threads here; 3, 4 stay open
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._id = 0
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call(
            "Emulation.setDeviceMetricsOverride",
            page=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def call(self, method: str, page: bool = False, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": self.session} if page else {})}
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", page=True, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, clip: dict | None = None) -> np.ndarray:
        """The page as an (H, W, 3) uint8 RGB array (``clip``: x, y, width, height in CSS pixels)."""
        from PIL import Image

        params = {"format": "png", **({"clip": {**clip, "scale": 1}} if clip else {})}
        png = base64.b64decode(self.call("Page.captureScreenshot", page=True, **params)["data"])
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.process.wait(10)
        except Exception:  # noqa: BLE001 - closing anyway
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)


def colour_counts(rgb: np.ndarray) -> dict[str, int]:
    """Pixels of each overlay colour blended over grey at the page's 50% opacity, and of plain grey scan."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return {
        "red": int(np.sum((r - g > 80) & (abs(g - b) < 25))),  # NCR (255, 0, 0)
        "green": int(np.sum((g - r > 60) & (abs(r - b) < 25))),  # ED (0, 204, 0)
        "yellow": int(np.sum((r - b > 80) & (g - b > 80) & (abs(r - g) < 25))),  # ET (255, 255, 0)
        "grey": int(np.sum((abs(r - g) < 6) & (abs(g - b) < 6) & (r > 40))),
    }


NEXT_FRAME = "new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)))"



def open_page(browser, path, *, seconds: float, what: str) -> None:
    """Load a viewer page and wait until NiiVue reports the volumes loaded (or an error, which fails the test)."""
    started = time.monotonic()
    browser.call("Page.navigate", page=True, url=path.as_uri())
    while not browser.evaluate(
        "!!(window.gliosegViewer && (window.gliosegViewer.ready || window.gliosegViewer.error))"
    ):
        assert time.monotonic() - started < seconds, what
        time.sleep(0.2)
    assert browser.evaluate("window.gliosegViewer.error") is None


@pytest.mark.real
def test_real_case_draws_in_headless_chromium(real_data_root, tmp_path):
    executable = chromium_executable()
    if executable is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    case = discover(real_data_root / "Brats18_CBICA_ABM_1").cases[0]
    page = case_viewer(case, tmp_path / "page.html", predictions=[("copy", case.label)])
    assert page.size < 15e6
    data = payload(page.path.read_text())
    browser = Chromium(executable, 1000, 640)
    try:
        open_page(browser, page.path, seconds=240, what="NiiVue did not report the volumes loaded")
        box = browser.evaluate(
            "(() => { const r = document.getElementById('gl').getBoundingClientRect(); return {x: r.x, y: r.y, width: "
            "r.width, height: r.height}; })()"
        )
        browser.evaluate(NEXT_FRAME)
        before = colour_counts(browser.screenshot(box))
        assert before["grey"] > 20000, before  # the scan
        assert min(before["red"], before["green"], before["yellow"]) > 100, before  # every class of the reference

        browser.evaluate("document.getElementById('region-et').click()")
        browser.evaluate(NEXT_FRAME)
        after = colour_counts(browser.screenshot(box))
        assert after["yellow"] < 0.02 * before["yellow"], (before, after)  # ET gone
        assert after["red"] > 0.5 * before["red"] and after["green"] > 0.5 * before["green"], (before, after)

        # the crosshair readout gives the voxel of the original file and the label there
        i, j, k = (int(v) for v in np.argwhere(nib.load(str(case.label)).get_fdata() == 4)[0])
        browser.evaluate(f"window.gliosegViewer.goToVoxel({i}, {j}, {k})")
        readout = browser.evaluate("window.gliosegViewer.readout")
        assert f"voxel (i, j, k) {i}, {j}, {k}" in readout and "reference: enhancing (ET)" in readout, readout
        assert data["start_voxel"] and browser.evaluate("window.gliosegViewer.voxel") == [i, j, k]
    finally:
        browser.close()


HOSTILE_NAMES = [
    "<!--<script>",
    "</script><script>window.pwned = 1</script>",
    "quote \" and ' and &amp;",
    "line\u2028separator\u2029",
    "..",
    "x" * 300,
    "<b>bold</b> <img src=x onerror=window.pwned=2>",
]


def test_hostile_names_leave_the_page_working_in_headless_chromium(tmp_path, write_case):
    """Issue 25: a label-map name holding '<!--<script>' left the page on "loading" for good (the
    embedded JSON escaped '</' but not '<!--'). Every name must reach the page as text."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    folder = write_case(tmp_path / "data", CASE)
    case = discover(tmp_path / "data").cases[0]
    predictions = []
    for i, name in enumerate(HOSTILE_NAMES):
        path = tmp_path / f"pred{i}.nii.gz"
        shutil.copy(folder / f"{CASE}_seg.nii.gz", path)
        predictions.append((name, path))
    page = case_viewer(case, tmp_path / "page.html", predictions=predictions)
    assert [layer["name"] for layer in payload(page.path.read_text())["labelmaps"]] == ["reference", *HOSTILE_NAMES]
    browser = Chromium(executable, 900, 600)
    try:
        open_page(browser, page.path, seconds=120, what="the page never finished loading")
        assert browser.evaluate("window.pwned === undefined"), "a name ran as script"
        shown = browser.evaluate(
            "[...document.querySelectorAll('input[name=labelmap]')].map((i) => i.parentElement.textContent)"
        )
        assert [s.strip() for s in shown] == [n.strip() for n in ["reference", *HOSTILE_NAMES, "none"]]
        for index in range(1, len(HOSTILE_NAMES) + 1):  # every overlay decodes (NiiVue never sees the names)
            browser.evaluate(f"document.querySelectorAll('input[name=labelmap]')[{index}].click()")
            browser.evaluate(NEXT_FRAME)
            assert browser.evaluate("window.gliosegViewer.error") is None
    finally:
        browser.close()


@pytest.mark.slow
def test_a_case_without_t1_and_t2_draws_with_them_listed_as_absent(tmp_path, write_case):
    """The page of a case lacking scans loads in a browser, offers only the scans it has and lists the others as
    absent."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    folder = write_case(tmp_path / "data", "Brats18_V_1", shape=(40, 44, 36))
    for m in ("t1", "t2"):
        (folder / f"Brats18_V_1_{m}.nii.gz").unlink()
    case = discover(tmp_path / "data", required=()).cases[0]
    page = case_viewer(case, tmp_path / "page.html")
    browser = Chromium(executable, 900, 600)
    try:
        open_page(browser, page.path, seconds=240, what="NiiVue did not report the volumes loaded")
        buttons = browser.evaluate("[...document.querySelectorAll('#modalities button')].map((b) => b.textContent)")
        absent = browser.evaluate(
            "[...document.querySelectorAll('#modalities .absent')].map((s) => s.id + ': ' + s.textContent)"
        )
        assert buttons == ["FLAIR", "T1ce"] and absent == ["modality-t1: T1 absent", "modality-t2: T2 absent"]
        browser.evaluate("document.getElementById('modality-t1ce').click()")
        browser.evaluate(NEXT_FRAME)
        assert browser.evaluate("window.gliosegViewer.modality") == 1
    finally:
        browser.close()
