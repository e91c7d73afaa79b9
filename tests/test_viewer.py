"""viewer.py in a real browser: headless Chromium from the system's packages (.ci/run installs it), driven
through the system chromedriver by selenium. The page is opened from disk (file://, no server); the checks
compare what it shows with the annotations and JSONL files on disk, not with data.js."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from generated_output import build, fresh_copy
from timewarp import report, viewer
from timewarp.core.layout import Layout
from timewarp.core.parallel import Executor
from timewarp.core.store import read_json, read_jsonl, write_jsonl

webdriver = pytest.importorskip("selenium.webdriver")  # requirements-dev.txt
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs chromium + chromium-driver (apt-get install chromium chromium-driver; "
                                       ".ci/run installs them)")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--window-size=1400,1000", "--mute-audio")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def viewed(processed, tmp_path_factory) -> Path:
    out = fresh_copy(build(processed, tmp_path_factory), tmp_path_factory.mktemp("view") / "out")
    layout = Layout(out)
    train = [a for a in map(read_json, sorted(layout.normal_annotations_dir.glob("*.json"))) if a["split"] == "train"]
    write_jsonl(layout.pref_implicit_file, [{
        "pid": f"{train[0]['id']}/implicit/reverse", "id": train[0]["id"], "split": "train", "video": train[0]["video"],
        "prompt": "Describe the video in order.", "chosen": "first this, then that", "rejected": "that, then this",
        "rejected_mode": "corrupt", "rejected_prompt": "Describe the video in order.",
        "corruption": {"name": "reverse", "params": {"seed": 5}}, "frames": [1, 2], "rejected_frames": [2, 1],
        "distance": 0.4, "model": "fake"}])
    report.run(report.Config(layout=layout))
    viewer.run(viewer.Config(layout=layout), Executor(workers=2))
    return out


def wait_for(fn, timeout=15.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def severe(driver) -> list:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def texts(driver, css) -> list[str]:
    return driver.execute_script("return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent)", css)


def test_viewer_page_in_chromium(viewed, browser, tmp_path):
    layout = Layout(viewed)
    page = viewer.viewer_dir(layout) / "index.html"
    assert "href='viewer/index.html'" in layout.report_file.read_text()  # the stats report links to it
    normals = {p.stem: read_json(p) for p in sorted(layout.normal_annotations_dir.glob("*.json"))}
    sft = read_jsonl(layout.sft_explicit_file)
    pref = read_jsonl(layout.pref_explicit_file)
    bench = {r["qid"]: r for r in read_jsonl(layout.benchmark_shuffled_file)}
    browser.get(page.as_uri())
    wait_for(lambda: len(browser.find_elements("css selector", "#list .item")) == len(normals), what="the video list")
    assert browser.execute_script("return document.getElementById('player-normal').canPlayType('video/mp4; codecs=\"avc1.64001e\"')")
    played = 0
    for vid, ann in normals.items():
        browser.find_element("css selector", f"#list .item[data-id='{vid}']").click()
        wait_for(lambda: browser.execute_script("return location.hash") == f"#{vid}", what=f"{vid} selected")
        # the timeline: one segment per clip, in real order above and in the permutation's order below
        shuf = read_json(layout.shuffled_annotation(vid))
        normal_segs = browser.execute_script(
            "return Array.from(document.querySelectorAll('#timeline .seg.normal')).map(e => +e.dataset.clip)")
        shuffled_segs = browser.execute_script(
            "return Array.from(document.querySelectorAll('#timeline .seg.shuffled')).map(e => +e.dataset.clip)")
        assert normal_segs == list(range(len(ann["clips"]))), vid
        assert shuffled_segs == shuf["permutation"] and len(shuffled_segs) == len(ann["clips"]), vid
        assert len(browser.find_elements("css selector", "#timeline polygon.link")) == len(ann["clips"])
        # both players play: currentTime advances
        for pid in ("player-normal", "player-shuffled"):
            browser.execute_script("const v = document.getElementById(arguments[0]); v.currentTime = 0; v.play();", pid)
        for pid in ("player-normal", "player-shuffled"):
            t = wait_for(lambda: browser.execute_script(
                "const v = document.getElementById(arguments[0]); return v.error ? -1 : v.currentTime;", pid) > 0.3,
                what=f"{pid} of {vid} to play")
            assert t
            state = browser.execute_script("const v = document.getElementById(arguments[0]); v.pause(); "
                                           "return [v.error, v.videoWidth, v.videoHeight];", pid)
            assert state[0] is None and state[1] > 0 and state[2] > 0, (vid, pid, state)
            played += 1
        # what the page lists for this video is what the files say
        assert sum(r["id"] == vid for r in sft) == len(texts(browser, ".qa"))
        mine = [r for r in pref if r["id"] == vid]
        shown_pairs = texts(browser, ".pair")
        assert len([t for t in shown_pairs if "negative:" in t]) == len(mine)
        for r in mine:
            assert any(r["chosen"] in t and r["rejected"] in t for t in shown_pairs)
        mine_q = [q for q in bench.values() if q["id"] == vid]
        shown_q = texts(browser, ".q")
        assert len(shown_q) == len(mine_q)
        assert sum("shuffle changed the key" in t for t in shown_q) == sum(q["key_changed"] for q in mine_q)
        for q in mine_q:
            assert any(f"on the shuffled video: {q['answer']}" in t and f"key on the normal video: {q['normal_answer']}" in t
                       for t in shown_q), q["qid"]
        thumbs = browser.execute_script("return Array.from(document.querySelectorAll('.clip img')).map(i => i.naturalWidth)")
        assert len(thumbs) == len(ann["clips"]) and all(w > 0 for w in thumbs)
    assert played == 2 * len(normals)
    implicit_vid = read_jsonl(layout.pref_implicit_file)[0]["id"]
    browser.find_element("css selector", f"#list .item[data-id='{implicit_vid}']").click()
    assert any("corruption reverse" in t for t in texts(browser, ".pair"))
    # filters: split and category
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "f-split")).select_by_value("test")
    ids = [e.get_attribute("data-id") for e in browser.find_elements("css selector", "#list .item")]
    assert ids == [v for v, a in normals.items() if a["split"] == "test"] and ids
    Select(browser.find_element("id", "f-split")).select_by_value("")
    category = normals[next(iter(normals))]["category"]
    Select(browser.find_element("id", "f-category")).select_by_value(category)
    ids = [e.get_attribute("data-id") for e in browser.find_elements("css selector", "#list .item")]
    assert ids == [v for v, a in normals.items() if a["category"] == category]
    Select(browser.find_element("id", "f-category")).select_by_value("")
    assert severe(browser) == []
    shot = tmp_path / "viewer.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_a_missing_video_shows_as_missing_without_errors(viewed, browser, tmp_path):
    out = fresh_copy(viewed, tmp_path / "out")
    layout = Layout(out)
    vid = layout.shuffled_ids()[0]
    layout.shuffled_video(vid).unlink()
    viewer.run(viewer.Config(layout=layout))
    browser.get((viewer.viewer_dir(layout) / "index.html").as_uri() + f"#{vid}")
    wait_for(lambda: browser.find_elements("css selector", "#player-normal"), what="the page")
    assert browser.find_element("id", "player-shuffled").text == "video file not found"
    data = (viewer.viewer_dir(layout) / "data.js").read_text()
    assert json.loads(data[data.index("=") + 1:].rstrip().rstrip(";"))["videos"]
    assert severe(browser) == []


def test_viewer_without_annotations_is_one_line_exit_2(tmp_path, capsys):
    assert viewer.main(["--root_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "setup_dataset.sh" in err[0]
