"""`speckle2self batch` on a real LocalCluster of 2 worker processes: crops of the bundled sample in three
formats (one a Slicer sequence, one file corrupt), outputs against `speckle2self despeckle`, resuming."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SAMPLE
from speckle2self.batch import MANIFEST, despeckle_archive, input_sha256, local_cluster
from speckle2self.cli import main
from speckle2self.errors import UserError
from speckle2self.image_io import read_image, write_image

GOOD = ["a.nrrd", "cine.seq.nrrd", "sub/b.mha", "sub/c.png", "sub/deep/e.mha"]
BROKEN = "broken.mha"


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Six files (NRRD, MetaImage, PNG; a 3-frame .seq.nrrd; a truncated .mha) and a text file to ignore."""
    root = tmp_path_factory.mktemp("archive")
    (root / "sub" / "deep").mkdir(parents=True)
    image = sitk.ReadImage(str(SAMPLE))
    sitk.WriteImage(image[100:228, 100:196], str(root / "a.nrrd"))
    sitk.WriteImage(image[200:296, 150:278], str(root / "sub" / "b.mha"))
    sitk.WriteImage(image[300:380, 120:200], str(root / "sub" / "c.png"))
    sitk.WriteImage(image[250:330, 300:396], str(root / "sub" / "deep" / "e.mha"))
    pixels = sitk.GetArrayFromImage(image)
    write_image(root / "cine.seq.nrrd", np.stack([pixels[100 + 8 * i:196 + 8 * i, 200:296] for i in range(3)]))
    whole = (root / "sub" / "b.mha").read_bytes()
    (root / BROKEN).write_bytes(whole[:len(whole) // 2])
    (root / "notes.txt").write_text("not an image\n")
    return root


@pytest.fixture(scope="module")
def client():
    client = local_cluster(2)
    yield client
    cluster = client.cluster
    client.close()
    cluster.close()


def statuses(records: list[dict]) -> dict[str, str]:
    return {r["input"]: r["status"] for r in records}


def manifest(out: Path) -> dict[str, dict]:
    return {r["input"]: r for r in json.loads((out / MANIFEST).read_text())["records"]}


def test_cli_batch_writes_the_bytes_despeckle_writes_and_records_the_corrupt_file(archive, client, tiny_weights,
                                                                                   tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["batch", str(archive), "-o", str(out), "--weights", str(tiny_weights),
                 "--scheduler", client.scheduler.address])
    captured = capsys.readouterr()
    assert code == 2 and "1 of 6 files failed" in captured.err
    assert captured.out.startswith("5 done, 0 skipped, 1 failed of 6 files; 7 frames in ")
    records = manifest(out)
    assert sorted(records) == sorted(GOOD + [BROKEN])
    with pytest.raises(UserError) as error:
        read_image(archive / BROKEN)
    assert records[BROKEN]["status"] == "failed" and records[BROKEN]["reason"] == str(error.value)
    assert not (out / BROKEN).exists()
    for name in GOOD:
        reference = tmp_path / "reference" / name
        reference.parent.mkdir(parents=True, exist_ok=True)
        assert main(["despeckle", str(archive / name), "-o", str(reference), "--weights", str(tiny_weights)]) == 0
        assert (out / name).read_bytes() == reference.read_bytes(), name
        assert records[name]["sha256"] == input_sha256(archive / name)
        assert records[name]["status"] == "done" and records[name]["frames"] == (3 if "seq" in name else 1)
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted([MANIFEST] + [Path(n).name for n in GOOD])


def test_each_worker_loads_the_weights_once_and_runs_one_torch_thread(archive, client, tiny_weights, tmp_path):
    import torch

    from speckle2self.inference import _cached_model

    despeckle_archive(archive, tmp_path / "out", client, weights=tiny_weights)
    loads = client.run(_cached_model.cache_info)
    assert len(loads) == 2 and all(info.misses <= 1 for info in loads.values())
    assert sum(info.hits + info.misses for info in loads.values()) >= len(GOOD)
    assert set(client.run(torch.get_num_threads).values()) == {1}


def test_rerun_skips_done_files_redoes_changed_ones_and_retries_failures_only_when_asked(archive, client,
                                                                                        tiny_weights, tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(archive, source)
    run = lambda **kw: statuses(despeckle_archive(source, out, client, weights=tiny_weights, **kw))  # noqa: E731
    assert run(pattern="a.nrrd") == {"a.nrrd": "done"}
    (out / "sub" / "c.png").mkdir(parents=True)  # the output cannot be written: a failure that goes away
    first = run()
    assert first == {**{n: "done" for n in GOOD}, "a.nrrd": "skipped", "sub/c.png": "failed", BROKEN: "failed"}
    assert "is a folder" in manifest(out)["sub/c.png"]["reason"]
    (out / "sub" / "c.png").rmdir()
    stamps = {n: (out / n).stat().st_mtime_ns for n in GOOD if n != "sub/c.png"}
    before = manifest(out)
    assert run() == {**{n: "skipped" for n in GOOD}, "sub/c.png": "failed", BROKEN: "failed"}
    after = manifest(out)
    assert after["sub/c.png"] == before["sub/c.png"] and not (out / "sub" / "c.png").exists()
    assert {n: (out / n).stat().st_mtime_ns for n in stamps} == stamps
    assert run(retry_failed=True) == {**{n: "skipped" for n in GOOD}, "sub/c.png": "done", BROKEN: "failed"}

    old = (out / "a.nrrd").read_bytes()
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE))[150:278, 120:216], str(source / "a.nrrd"))
    assert run() == {**{n: "skipped" for n in GOOD}, "a.nrrd": "done", BROKEN: "failed"}
    assert (out / "a.nrrd").read_bytes() != old
    assert manifest(out)["a.nrrd"]["sha256"] == input_sha256(source / "a.nrrd")
    (out / "sub" / "b.mha").unlink()
    assert run()["sub/b.mha"] == "done" and (out / "sub" / "b.mha").is_file()


def test_a_run_stopped_after_its_first_file_resumes(archive, client, tiny_weights, tmp_path):
    out = tmp_path / "out"

    def stop(record, finished, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        despeckle_archive(archive, out, client, weights=tiny_weights, on_record=stop)
    [first] = manifest(out).values()
    pending = next(n for n in GOOD if n != first["input"])
    staging = out / Path(pending).parent / f".{Path(pending).name}.k1lled0w"  # as a worker killed mid-write leaves
    staging.mkdir(parents=True)
    (staging / Path(pending).name).write_bytes(b"half a file")
    resumed = statuses(despeckle_archive(archive, out, client, weights=tiny_weights))
    expected = {**{n: "done" for n in GOOD}, BROKEN: "failed"}
    assert resumed == {**expected, first["input"]: "skipped" if first["status"] == "done" else "failed"}
    assert not list(out.rglob(".*"))  # no staging folder of a stopped write is left
    for name in GOOD:
        assert read_image(out / name).array.shape == read_image(archive / name).array.shape


@pytest.mark.parametrize("case, message", [
    ("missing input", "input folder"),
    ("foreign output", "holds files but no speckle2self-batch.json"),
    ("no images", "No supported image files"),
    ("bad gamma", "Gamma must be positive"),
])
def test_mistakes_are_one_line_before_any_worker_starts(case, message, archive, tmp_path, capsys):
    source, out, extra = archive, tmp_path / "out", []
    if case == "missing input":
        source = tmp_path / "nowhere"
    elif case == "foreign output":
        out.mkdir()
        (out / "mine.txt").write_text("keep me\n")
    elif case == "no images":
        extra = ["--pattern", "*.nii.gz"]
    else:
        extra = ["--gamma", "0"]
    assert main(["batch", str(source), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert out.exists() == (case == "foreign output")


def test_a_detached_header_is_hashed_with_its_data_file(tmp_path):
    image = sitk.GetImageFromArray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    sitk.WriteImage(image, str(tmp_path / "scan.mhd"))
    data = tmp_path / "scan.raw"
    before = input_sha256(tmp_path / "scan.mhd")
    pixels = bytearray(data.read_bytes())
    pixels[100] ^= 1
    data.write_bytes(bytes(pixels))
    assert input_sha256(tmp_path / "scan.mhd") != before
