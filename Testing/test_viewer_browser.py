"""The browser page (`speckle2self view`) end to end, as a person uses it: a real server (trame-slicer rendering
Slicer's slice views with Mesa, no display, no GPU), real despeckling and fine-tuning processes with the shipped
model, driven in Debian's Chromium through Playwright. Views are measured on the page's own pixels (lossless PNG
frames).

SPECKLE2SELF_SCREENSHOTS=FOLDER keeps the page's screenshots before and after despeckling there (`make screenshots`
writes docs/viewer_before.png and docs/viewer_after.png).
"""
from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright
from scipy import ndimage

from conftest import CINE, SAMPLE
from speckle2self.errors import UserError
from speckle2self.image_io import read_image, write_image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
JOB_MS = 600_000
"""The longest wait for a job in the browser (a busy two-core machine)."""
VIEW_SECONDS = 30
"""The longest wait for a view's picture to settle."""


class Viewer:
    """The page's server in a thread of this process (rendering and jobs on its loop), so that tests can look at
    its scene; temporary folders go to `temp`, fine-tuned models to `models`."""

    def __init__(self, files, folder: Path):
        self.models, self.temp = folder / "models", folder / "temp"
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(files,), daemon=True)
        self.thread.start()
        assert self.ready.wait(120), "the page's server did not start"
        self.url = f"http://127.0.0.1:{self.server.port}/"

    def _serve(self, files) -> None:
        from trame.app import get_server

        from Speckle2SelfViewer.page import ReviewPage

        asyncio.set_event_loop(asyncio.new_event_loop())
        self.server = get_server("speckle2self-browser-tests", client_type="vue3")
        self.page = ReviewPage(self.server, self.models)
        for path in files:
            self.page.add(read_image(path))

        def ready(**_):
            self.loop = asyncio.get_running_loop()
            self.ready.set()
        self.server.controller.on_server_ready.add(ready)
        self.server.start(port=0, host="127.0.0.1", thread=True, open_browser=False, timeout=0,
                          show_connection_info=False)
        for view in self.page.views.views.values():  # their graphics contexts belong to this thread
            view.finalize()

    def node_count(self) -> int:
        return self.page.views.scene.GetNumberOfNodes()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(60)
        self.thread.join(60)


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("viewer")
    before = tempfile.tempdir
    tempfile.tempdir = str(folder / "temp")  # jobs' and uploads' temporary folders, checked after a cancel
    (folder / "temp").mkdir()
    served = Viewer([SAMPLE, CINE], folder)
    yield served
    served.stop()
    tempfile.tempdir = before


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1280, "height": 720}, accept_downloads=True)
        yield context
        context.close()


@pytest.fixture(scope="module")
def page(viewer, browser):
    page = browser.new_page()
    page.goto(viewer.url)
    expect(page.get_by_role("status")).to_contain_text("Opened", timeout=60_000)
    return page


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = os.environ.get("SPECKLE2SELF_SCREENSHOTS")
    return Path(folder) if folder else tmp_path_factory.mktemp("screenshots")


def picture(locator) -> np.ndarray:
    """What a part of the page shows, in grey levels, inside its border."""
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("L"), dtype=float)[2:-2, 2:-2]


def settled(locator, unlike: np.ndarray | None = None) -> np.ndarray:
    """The view's picture once it has stopped changing and, with `unlike`, differs from it (after VIEW_SECONDS:
    whatever it shows, for the assertion that follows to judge)."""
    deadline, last = time.monotonic() + VIEW_SECONDS, picture(locator)
    while True:
        locator.page.wait_for_timeout(400)
        now = picture(locator)
        if np.array_equal(now, last) and (unlike is None or not np.array_equal(now, unlike)):
            return now
        if time.monotonic() > deadline:
            return now
        last = now


def views(page) -> tuple:
    return page.get_by_role("region", name="Input"), page.get_by_role("region", name="Output")


def choose(page, name: str) -> None:
    """Make the open file `name` the current one."""
    if page.get_by_role("combobox", name="File").input_value() == name:
        return
    shown = picture(views(page)[0])
    page.get_by_role("combobox", name="File").click(force=True)  # its selected text covers it
    page.get_by_role("option", name=name).click()
    expect(page.get_by_role("status")).to_have_text(re.compile(f"^{re.escape(name)}: "))
    settled(views(page)[0], unlike=shown)


def despeckle(page, button: str = "Despeckle") -> None:
    page.get_by_role("button", name=button).click()
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100", timeout=JOB_MS)
    expect(page.get_by_role("status")).to_contain_text("Done in", timeout=JOB_MS)


def error_of(path: Path) -> str:
    """The one-line error speckle2self's reader gives for `path`."""
    with pytest.raises(UserError) as error:
        read_image(path)
    return str(error.value)


def local_variance(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean variance of 5 x 5 neighbourhoods inside `mask`: speckle is fine grain, so it drops when despeckled."""
    mean = ndimage.uniform_filter(image, 5)
    return float((ndimage.uniform_filter(image ** 2, 5) - mean ** 2)[mask].mean())


@pytest.fixture(scope="module")
def sample_result(page, screenshots):
    """The bundled sample before and after Despeckle: the views' pictures."""
    choose(page, SAMPLE.name)
    source, result = views(page)
    before = settled(source), settled(result)
    page.screenshot(path=screenshots / "viewer_before.png")
    despeckle(page)
    after = settled(source), settled(result, unlike=before[1])
    page.screenshot(path=screenshots / "viewer_after.png")
    return before, after


def test_the_page_names_its_controls_for_screen_readers_and_tests(page):
    for role, name in [("button", "Open"), ("button", "Despeckle"), ("button", "Fine-tune"), ("button", "Cancel"),
                       ("button", "Save"), ("slider", "Fade"), ("slider", "Frame"), ("region", "Input"),
                       ("region", "Output")]:
        expect(page.get_by_role(role, name=name)).to_have_count(1)
    expect(page.get_by_role("status")).to_have_count(1)
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", re.compile(r"^\d+$"))
    expect(page.get_by_role("button", name="Cancel")).to_be_disabled()  # nothing runs


def test_despeckle_shows_a_smoother_output_beside_the_input(sample_result):
    (input_before, output_before), (source, result) = sample_result
    assert (input_before > 20).mean() > 0.2  # the sample fills the Input view
    assert output_before.max() < 10  # the Output view is empty before despeckling
    np.testing.assert_array_equal(source, input_before)  # the input is shown unchanged
    sector = ndimage.binary_erosion((source > 8) & (result > 8), iterations=8)
    assert sector.mean() > 0.2
    assert np.abs(result - source)[sector].mean() > 3
    assert local_variance(result, sector) < 0.5 * local_variance(source, sector)


def test_fade_overlays_the_output_on_the_input(page, sample_result):
    choose(page, SAMPLE.name)
    source, result = views(page)
    page.get_by_role("slider", name="Fade").fill("0")
    faded = settled(result, unlike=sample_result[1][1])
    np.testing.assert_array_equal(faded, settled(source))  # at 0 the Output view shows the input
    page.get_by_role("slider", name="Fade").fill("1")
    np.testing.assert_array_equal(settled(result, unlike=faded), sample_result[1][1])


def test_panning_and_zooming_one_view_moves_the_other(page, sample_result):
    choose(page, SAMPLE.name)
    source, result = views(page)
    page.get_by_role("slider", name="Fade").fill("0")  # both views then show the input: the same picture
    start = settled(result, unlike=sample_result[1][1])
    for view, button, step in ((source, "right", (0, -12)), (result, "middle", (12, 0))):
        box = view.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down(button=button)
        for i in range(1, 11):
            page.mouse.move(x + i * step[0], y + i * step[1])
        page.mouse.up(button=button)
        moved = settled(source, unlike=start)
        assert np.abs(moved - start).mean() > 2
        np.testing.assert_array_equal(settled(result), moved)
        start = moved
    page.get_by_role("slider", name="Fade").fill("1")


def test_scrolling_a_volume_in_one_view_scrolls_the_other(page, tmp_path):
    volume = tmp_path / "three_slices.nrrd"
    write_image(volume, read_image(CINE).array)  # the cine's frames as the slices of a 3-D volume
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Open").click()
    chooser.value.set_files(volume)
    expect(page.get_by_role("status")).to_have_text(f"Opened {volume.name}: 3 slices of 480 x 640 pixels.")
    despeckle(page)
    source, result = views(page)
    page.get_by_role("slider", name="Fade").fill("0")
    start = settled(source)
    box = source.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 120)
    moved = settled(source, unlike=start)
    assert np.abs(moved - start).mean() > 1
    np.testing.assert_array_equal(settled(result), moved)
    page.get_by_role("slider", name="Fade").fill("1")


def test_save_downloads_the_result_in_the_input_format_and_geometry(page, sample_result, tmp_path):
    choose(page, SAMPLE.name)
    with page.expect_download() as download:
        page.get_by_role("button", name="Save").click()
    target = tmp_path / download.value.suggested_filename
    download.value.save_as(target)
    assert target.name == "BkCurvilinearScanConvertedData-despeckled.nrrd"
    saved, source = read_image(target), read_image(SAMPLE)
    assert (saved.array.shape, saved.array.dtype, saved.kind) == (source.array.shape, source.array.dtype, source.kind)
    assert (saved.spacing, saved.origin, saved.direction) == (source.spacing, source.origin, source.direction)
    assert np.abs(saved.array.astype(float) - source.array).mean() > 1
    expect(page.get_by_role("status")).to_have_text(f"Saved {target.name}.")


def test_frame_moves_both_views_of_a_cine(page):
    choose(page, CINE.name)
    source, result = views(page)
    page.get_by_role("slider", name="Fade").fill("1")
    empty = settled(result)
    despeckle(page)
    first = settled(source), settled(result, unlike=empty)
    page.get_by_role("slider", name="Frame").fill("2")
    expect(page.get_by_text("3 / 3")).to_be_visible()
    last = settled(source, unlike=first[0]), settled(result, unlike=first[1])
    for before, after in zip(first, last):
        assert np.abs(after - before).mean() > 1


def test_cancel_during_fine_tuning_adds_no_node_and_writes_no_file(page, viewer):
    choose(page, CINE.name)
    nodes, temporary = viewer.node_count(), sorted(viewer.temp.iterdir())  # trame-slicer keeps a cache folder
    page.get_by_role("button", name="Fine-tune").click()
    running = page.get_by_text(re.compile(r"^Fine-tuning: step \d+ .* - about \d+ (s|min \d+ s|h \d+ min) left$"))
    expect(running).to_be_visible(timeout=JOB_MS)  # the step and the time left
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("status")).to_have_text("Cancelled. Nothing was added.")
    expect(page.get_by_role("button", name="Fine-tune")).to_be_enabled()
    assert viewer.node_count() == nodes
    assert not viewer.models.exists() or not any(viewer.models.iterdir())
    assert sorted(viewer.temp.iterdir()) == temporary


def test_a_corrupt_file_shows_its_one_line_error_and_is_left_as_it_was(page, tmp_path):
    broken = tmp_path / "broken.nrrd"
    broken.write_bytes(SAMPLE.read_bytes()[:3000])
    error = error_of(broken)
    page.get_by_role("combobox", name="File").click(force=True)
    expect(page.get_by_role("option").first).to_be_visible()
    files = page.get_by_role("option").count()
    page.keyboard.press("Escape")
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Open").click()
    chooser.value.set_files(broken)
    expect(page.get_by_role("status")).to_have_text(error)
    assert "\n" not in error and "Traceback" not in page.content()
    page.get_by_role("combobox", name="File").click(force=True)
    expect(page.get_by_role("option")).to_have_count(files)  # nothing was opened
    page.keyboard.press("Escape")
    assert broken.read_bytes() == SAMPLE.read_bytes()[:3000]


def test_open_uploads_a_file_and_shows_it(page):
    source, _ = views(page)
    shown = settled(source)
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Open").click()
    chooser.value.set_files(SAMPLE)
    expect(page.get_by_role("status")).to_have_text(f"Opened {SAMPLE.name}: image of 400 x 600 pixels.")
    assert np.abs(settled(source, unlike=shown) - shown).mean() > 1


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_view_command_serves_the_sample_on_this_computer_only(browser, tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "speckle2self", "view", str(SAMPLE), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in server.stdout:
            if f"http://127.0.0.1:{port}/" in line:
                break
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.get_by_role("status")).to_have_text(f"Opened {SAMPLE.name}: image of 400 x 600 pixels.")
        assert (settled(page.get_by_role("region", name="Input")) > 20).mean() > 0.2
        page.close()
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert [line.split()[3] for line in listening.splitlines()] == [f"127.0.0.1:{port}"]
    finally:
        server.terminate()
        server.wait(30)


def test_the_view_command_refuses_a_corrupt_file_in_one_line(tmp_path):
    broken = tmp_path / "broken.nrrd"
    broken.write_bytes(SAMPLE.read_bytes()[:3000])
    run = subprocess.run([sys.executable, "-m", "speckle2self", "view", str(broken)], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr == f"speckle2self: error: {error_of(broken)}\n"
