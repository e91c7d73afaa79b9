"""Shared test inputs, generated at test time: FineVideo-shaped parquet shards of lavfi-free videos
whose frames carry their own frame number (``timewarp.sample_data.read_frame_ids``)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from timewarp.sample_data import SceneSpec, VideoSpec, metadata_for, random_spec, render_video, write_shard

from stages import run_video_stage

# Fixtures that render videos and run stages on them. A test that uses one (directly, through another
# fixture, or by name as a parameter: ``request.getfixturevalue(param)``) is in the ``video`` tier;
# ``pytest -m "not video"`` runs the rest (the fast tier). A test module adds its own such fixtures in a
# module-level ``VIDEO_FIXTURES`` set; a test that renders videos inline carries ``@pytest.mark.video``.
VIDEO_FIXTURES = {"wild_rows", "wild_dataset", "processed", "processed_one_encode"}


def uses_video(item) -> bool:
    names = VIDEO_FIXTURES | set(getattr(getattr(item, "module", None), "VIDEO_FIXTURES", ()))
    used = set(getattr(item, "fixturenames", ()))
    params = getattr(getattr(item, "callspec", None), "params", {})
    used |= {v for v in params.values() if isinstance(v, str)}
    return bool(names & used)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if uses_video(item):
            item.add_marker(pytest.mark.video)


def make_rows(tmp: Path, specs: list[VideoSpec]) -> list[tuple[bytes, dict]]:
    rows = []
    for spec in specs:
        p = tmp / f"{spec.name}.mp4"
        render_video(spec, p)
        rows.append((p.read_bytes(), metadata_for(spec)))
    return rows


def wild_specs() -> list[VideoSpec]:
    """Sources as they come in the wild: B-frames, NTSC rates, odd sizes, audio or none."""
    rng = random.Random(7)
    return [
        VideoSpec("ntsc30", [SceneSpec(40, "red", "square", [(3, 37)]), SceneSpec(45, "green", "circle", [(5, 30), (32, 44)]),
                             SceneSpec(38, "blue", "bar", [(0, 38)]), SceneSpec(30, "yellow", "cross", [(2, 29)])],
                  fps="30000/1001", size=(176, 144), bframes=3, audio_channels=2),
        VideoSpec("film24", [SceneSpec(30, "purple", "circle", [(1, 28)]), SceneSpec(50, "orange", "square", [(4, 46)]),
                             SceneSpec(26, "cyan", "bar", [(0, 26)])],
                  fps="24000/1001", size=(640, 272), bframes=2, audio_channels=6),
        VideoSpec("pal25", [SceneSpec(25, "pink", "cross", [(0, 25)]), SceneSpec(25, "brown", "square", [(6, 19)]),
                            SceneSpec(25, "gray", "circle", [(2, 23)])],
                  fps="25", size=(175, 143), bframes=0),
        random_spec("rand30", rng, n_scenes=4, fps="30"),
    ]


@pytest.fixture(scope="session")
def wild_rows(tmp_path_factory) -> list[tuple[bytes, dict]]:
    return make_rows(tmp_path_factory.mktemp("wild_src"), wild_specs())


@pytest.fixture(scope="session")
def wild_dataset(tmp_path_factory, wild_rows) -> Path:
    """A FineVideo root with one parquet shard (json as struct) of the wild videos."""
    root = tmp_path_factory.mktemp("finevideo")
    write_shard(root / "data" / "train-00000-of-00001.parquet", wild_rows, row_group_size=2)
    return root


def _processed(tmp_path_factory, wild_dataset, **options) -> Path:
    from timewarp.preprocess import preprocess, shuffle_clips

    out = tmp_path_factory.mktemp("out")
    run_video_stage(preprocess, out, root_dir=wild_dataset, scale=4, workers=2, write_clips=True, test_fraction=0.5,
                    **options)
    run_video_stage(shuffle_clips, out, workers=2)
    return out


@pytest.fixture(scope="session")
def processed(tmp_path_factory, wild_dataset) -> Path:
    """wild_dataset after preprocess (default engine: smart-cut; with clip files) and shuffle: read-only for tests."""
    return _processed(tmp_path_factory, wild_dataset)


@pytest.fixture(scope="session")
def processed_one_encode(tmp_path_factory, wild_dataset) -> Path:
    """The same with ``--engine one-encode`` (every frame decoded and encoded once; smart-cut's fallback)."""
    return _processed(tmp_path_factory, wild_dataset, engine="one-encode")


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: a multi-node Ray cluster on 127.0.0.1 (tests/test_ray_cluster.py); "
                                       "run alone with -m cluster, leave out with -m 'not cluster'")
