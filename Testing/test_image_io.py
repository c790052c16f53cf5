"""image_io: every format round-trips pixels, geometry and metadata through real files; user mistakes
raise a one-line UserError; writes are atomic."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import file_with
from speckle2self.errors import UserError
from speckle2self.image_io import SUPPORTED_EXTENSIONS, ImageData, read_image, write_image

shared_data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not shared_data.is_dir(), reason=f"shared data folder {shared_data} is absent (it is not part of the repository)")

ROTATION = (0.6, 0.0, 0.8, 0.0, 1.0, 0.0, -0.8, 0.0, 0.6)
RNG = np.random.default_rng(7)


def user_error(call, *args, **kwargs) -> str:
    """Run `call`, expect a UserError and return its message, which must be one line."""
    with pytest.raises(UserError) as err:
        call(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message and message.endswith(".")
    return message


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def assert_same_geometry(a: ImageData, b: ImageData, atol: float = 1e-9) -> None:
    for name in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=atol, err_msg=name)


def slicer_sequence(path: Path, frames: np.ndarray, slices: int = 1, list_axis_last: bool = True) -> Path:
    """A .seq.nrrd as Slicer writes it: 5.x puts the list (frame) axis last, older versions first.
    `frames` is (N, D, H, W) uint8, or (N, H, W) when slices == 1."""
    frames = frames.reshape(frames.shape[0], slices, *frames.shape[-2:])
    n, d, h, w = frames.shape
    values = " ".join(f"{0.1 * i:.1f}" for i in range(n))
    if list_axis_last:
        sizes, directions, axes = f"{w} {h} {d} {n}", "(0.3,0,0) (0,0.4,0) (0,0,2) none", "domain domain domain list"
        labels, units, axis, data = '"" "" "" "time"', '"" "" "" "s"', 3, frames
    else:
        sizes, directions, axes = f"{n} {w} {h} {d}", "none (0.3,0,0) (0,0.4,0) (0,0,2)", "list domain domain domain"
        labels, units, axis, data = '"time" "" "" ""', '"s" "" "" ""', 0, np.moveaxis(frames, 0, -1)
    header = (f"NRRD0004\ntype: unsigned char\ndimension: 4\nspace: left-posterior-superior\nsizes: {sizes}\n"
              f"space directions: {directions}\nkinds: {axes}\nlabels: {labels}\nunits: {units}\n"
              "encoding: raw\nspace origin: (10,20,30)\nDataNodeClassName:=vtkMRMLScalarVolumeNode\n"
              f"axis {axis} index type:=numeric\naxis {axis} index values:={values}\n\n")
    path.write_bytes(header.encode() + np.ascontiguousarray(data).tobytes())
    return path


# ----------------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("ext", [".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_volume_round_trip_keeps_pixels_and_geometry(tmp_path, ext, dtype):
    array = (RNG.normal(size=(4, 12, 10)) * 1000).astype(dtype)
    source = ImageData(array, None, "volume", (0.2, 0.3, 1.5), (-5.0, 7.0, 12.5), ROTATION)
    write_image(tmp_path / f"v{ext}", array, like=source)
    back = read_image(tmp_path / f"v{ext}")
    assert back.array.dtype == dtype and back.kind == "volume"
    np.testing.assert_array_equal(back.array, array)
    assert_same_geometry(back, source, atol=1e-5 if ext in (".nii", ".nii.gz") else 1e-9)  # NIfTI: float32


def test_2d_image_geometry_round_trip(tmp_path):
    array = RNG.integers(0, 4000, (20, 30), dtype=np.uint16)
    source = ImageData(array, None, "image", (0.1, 0.25), (3.0, -4.0), (0.0, -1.0, 1.0, 0.0))
    write_image(tmp_path / "i.nrrd", array, like=source)
    back = read_image(tmp_path / "i.nrrd")
    np.testing.assert_array_equal(back.array, array)
    assert back.kind == "image"
    assert_same_geometry(back, source)


@pytest.mark.parametrize("name, array", [
    ("rgb.png", RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)),
    ("rgba.png", RNG.integers(0, 256, (20, 30, 4), dtype=np.uint8)),
    ("grey16.png", RNG.integers(0, 65536, (20, 30), dtype=np.uint16)),
    ("rgb.bmp", RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)),
    ("stack.tif", RNG.normal(size=(3, 20, 30)).astype(np.float32)),
    ("plain.npy", RNG.normal(size=(20, 30))),
    ("colour_frames.npy", RNG.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)),
])
def test_plain_formats_round_trip(tmp_path, name, array):
    write_image(tmp_path / name, array)
    back = read_image(tmp_path / name)
    assert back.array.dtype == array.dtype
    np.testing.assert_array_equal(back.array, array)


def test_jpeg_round_trip_is_close(tmp_path):
    ramp = np.linspace(0, 255, 40 * 60).reshape(40, 60)
    array = np.stack([ramp] * 3, axis=-1).astype(np.uint8)
    write_image(tmp_path / "c.jpg", array)
    back = read_image(tmp_path / "c.jpg")
    assert back.array.shape == (40, 60, 3) and back.array.dtype == np.uint8
    assert np.abs(back.array.astype(float) - array).mean() < 3


def test_one_frame_stack_writes_to_png(tmp_path):
    array = RNG.integers(0, 256, (1, 20, 30), dtype=np.uint8)
    source = ImageData(array, None, "sequence", (0.5, 0.5, 1.0), (0.0, 0.0, 0.0), ROTATION)
    write_image(tmp_path / "one.png", array, like=source)
    np.testing.assert_array_equal(read_image(tmp_path / "one.png").array, array[0])


# ----------------------------------------------------------------------------------- Slicer sequences

def test_slicer_sequence_round_trip_10_frames(tmp_path):
    frames = RNG.integers(0, 256, (10, 24, 32), dtype=np.uint8)
    source = read_image(slicer_sequence(tmp_path / "in.seq.nrrd", frames))
    assert source.kind == "sequence" and source.array.shape == (10, 24, 32) and source.slices_per_frame == 1
    np.testing.assert_array_equal(source.array, frames)
    assert source.spacing == pytest.approx((0.3, 0.4, 2.0)) and source.origin == pytest.approx((10, 20, 30))

    write_image(tmp_path / "out.seq.nrrd", source.array, like=source)
    header = (tmp_path / "out.seq.nrrd").read_bytes().split(b"\n\n")[0].decode()
    assert "kinds: list domain domain domain" in header and "sizes: 10 32 24 1" in header
    assert 'labels: "time" "" "" ""' in header and 'units: "s" "" "" ""' in header
    back = read_image(tmp_path / "out.seq.nrrd")
    np.testing.assert_array_equal(back.array, frames)
    assert_same_geometry(back, source)
    assert back.metadata["axis 0 index values"] == source.metadata["axis 3 index values"]
    assert back.metadata["axis 0 index type"] == "numeric"
    assert back.metadata["DataNodeClassName"] == "vtkMRMLScalarVolumeNode"


def test_sequence_of_volumes_is_read_as_slices_frame_after_frame(tmp_path):
    volumes = RNG.integers(0, 256, (4, 3, 10, 12), dtype=np.uint8)  # N, D, H, W
    source = read_image(slicer_sequence(tmp_path / "v.seq.nrrd", volumes, slices=3, list_axis_last=False))
    assert source.array.shape == (12, 10, 12) and source.slices_per_frame == 3
    np.testing.assert_array_equal(source.array, volumes.reshape(12, 10, 12))
    write_image(tmp_path / "out.seq.nrrd", source.array, like=source)
    back = read_image(tmp_path / "out.seq.nrrd")
    np.testing.assert_array_equal(back.array, source.array)
    assert back.slices_per_frame == 3
    assert_same_geometry(back, source)


def test_slicer_reopens_written_sequence(tmp_path):
    slicer = pytest.importorskip("slicer_core", reason="slicer-core (the [test] extra) is not installed")
    from vtkmodules.util.numpy_support import vtk_to_numpy

    frames = RNG.integers(0, 256, (10, 24, 32), dtype=np.uint8)
    source = read_image(slicer_sequence(tmp_path / "in.seq.nrrd", frames))
    write_image(tmp_path / "out.seq.nrrd", source.array, like=source)
    scene, sequence = slicer.vtkMRMLScene(), slicer.vtkMRMLSequenceNode()
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    scene.AddNode(sequence)
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "out.seq.nrrd"))
    assert storage.ReadData(sequence) == 1
    assert sequence.GetNumberOfDataNodes() == 10 and sequence.GetIndexName() == "time"
    assert [sequence.GetNthIndexValue(i) for i in range(10)] == source.metadata["axis 3 index values"].split()
    for i in (0, 9):
        image = sequence.GetNthDataNode(i).GetImageData()
        np.testing.assert_array_equal(vtk_to_numpy(image.GetPointData().GetScalars()).reshape(24, 32), frames[i])


# -------------------------------------------------------------------------------------- shared data

@needs_shared_data
def test_plus_sequence_keeps_its_frame_metadata(tmp_path):
    source = read_image(shared_data / "pluslibdata" / "UltrasonixCurvilinearScanConvertedData.igs.mha")
    assert source.kind == "sequence" and source.array.shape == (5, 616, 820) and source.array.dtype == np.uint8
    assert source.metadata["Seq_Frame0000_Timestamp"] == "98.000000"
    write_image(tmp_path / "out.igs.mha", source.array, like=source)
    assert b"Seq_Frame0004_ImageStatus = OK" in (tmp_path / "out.igs.mha").read_bytes()[:4000]
    back = read_image(tmp_path / "out.igs.mha")
    np.testing.assert_array_equal(back.array, source.array)
    assert back.metadata == source.metadata
    assert_same_geometry(back, source)


@needs_shared_data
def test_plus_detached_sequence_round_trip(tmp_path):
    source = read_image(shared_data / "pluslibdata" / "Prostate10_video.igs.mhd")
    assert source.array.shape == (10, 480, 640) and source.spacing == pytest.approx((0.3, 0.3, 1.0))
    write_image(tmp_path / "p.igs.mhd", source.array, like=source)
    assert listing(tmp_path) == {"p.igs.mhd", "p.igs.zraw"}
    assert "ElementDataFile = p.igs.zraw" in (tmp_path / "p.igs.mhd").read_text()
    back = read_image(tmp_path / "p.igs.mhd")
    np.testing.assert_array_equal(back.array, source.array)
    assert back.metadata == source.metadata
    assert_same_geometry(back, source)


@needs_shared_data
def test_mat_cine_has_time_first():
    from scipy.io import loadmat

    image = read_image(shared_data / "pymust_examples" / "bmode_PWI_disk.mat")
    assert image.array.shape == (32, 251, 251) and image.kind == "sequence" and image.spacing is None
    original = loadmat(str(shared_data / "pymust_examples" / "bmode_PWI_disk.mat"))["I"]
    np.testing.assert_array_equal(image.array[5], original[:, :, 5])


@needs_shared_data
def test_jpeg_colour():
    image = read_image(shared_data / "pymust_examples" / "carotid.jpg")
    assert image.array.shape == (251, 385, 3) and image.array.dtype == np.uint8 and image.kind == "image"


# ------------------------------------------------------------------------------------------- atomic

def test_detached_header_names_its_data_and_leaves_nothing_else(tmp_path):
    write_image(tmp_path / "x.nhdr", np.zeros((3, 20, 30), np.uint8))
    assert listing(tmp_path) == {"x.nhdr", "x.raw.gz"}
    assert "data file: x.raw.gz" in (tmp_path / "x.nhdr").read_text(errors="replace")


def test_refused_write_leaves_no_output_and_no_temp_folder(tmp_path):
    user_error(write_image, tmp_path / "x.png", np.zeros((20, 30), np.float32))
    assert listing(tmp_path) == set()


def test_failure_after_writing_rolls_back(tmp_path):
    (tmp_path / "x.raw.gz").write_bytes(b"keep")  # the data file x.nhdr would need
    assert "x.raw.gz already exists" in user_error(write_image, tmp_path / "x.nhdr", np.zeros((20, 30), np.uint8))
    assert listing(tmp_path) == {"x.raw.gz"} and (tmp_path / "x.raw.gz").read_bytes() == b"keep"


def test_force_overwrites(tmp_path):
    write_image(tmp_path / "x.nrrd", np.zeros((20, 30), np.uint8))
    user_error(write_image, tmp_path / "x.nrrd", np.ones((20, 30), np.uint8))
    write_image(tmp_path / "x.nrrd", np.ones((20, 30), np.uint8), force=True)
    assert read_image(tmp_path / "x.nrrd").array.min() == 1 and listing(tmp_path) == {"x.nrrd"}


def test_check_only_writes_nothing(tmp_path):
    write_image(tmp_path / "x.nrrd", np.zeros((20, 30), np.uint8), check_only=True)
    assert listing(tmp_path) == set()


# ------------------------------------------------------------------------------------- read errors

def _truncated(path: Path, ext: str) -> Path:
    image = sitk.GetImageFromArray(np.arange(4 * 30 * 40, dtype=np.uint16).reshape(4, 30, 40))
    sitk.WriteImage(image, str(path.with_name("whole" + ext)))
    data = path.with_name("whole" + ext).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _vector_nrrd(path: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 20, 30, 6), np.uint8), isVector=True), str(path))
    return path


def _four_d_nifti(path: Path) -> Path:
    volume = sitk.GetImageFromArray(np.zeros((3, 20, 30), np.uint8))
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(path))
    return path


def _mat_without_image(path: Path) -> Path:
    from scipy.io import savemat

    savemat(str(path), {"name": "probe", "depths": np.arange(5.0), "iq": np.ones((4, 4)) * 1j})
    return path




def _npy(array):
    def make(path: Path) -> Path:
        np.save(path, array, allow_pickle=True)
        return path
    return make


@pytest.mark.parametrize("name, make, words", [
    ("missing.nrrd", lambda p: p, "does not exist"),
    ("folder.nrrd", lambda p: p.mkdir() or p, "is a folder"),
    ("zero.nrrd", file_with(b""), "empty (0 bytes)"),
    ("cut.nrrd", lambda p: _truncated(p, ".nrrd"), "truncated"),
    ("cut.mha", lambda p: _truncated(p, ".mha"), "truncated"),
    ("cut.nii.gz", lambda p: _truncated(p, ".nii.gz"), "truncated"),
    ("cut.nii", lambda p: _truncated(p, ".nii"), "truncated"),
    ("cut.png", lambda p: _truncated(p, ".png"), "truncated"),
    ("text.nrrd", file_with(b"not an image\n"), "not really a .nrrd file"),
    ("noise.mha", file_with(RNG.bytes(500)), "corrupt"),
    ("lost.mhd", file_with(b"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\n"
                       b"ElementDataFile = lost.raw\n"), "data file"),
    ("picture.gif", file_with(b"GIF89a"), "Unsupported file type '.gif'"),
    ("empty.npy", _npy(np.zeros((0, 5))), "empty image"),
    ("objects.npy", _npy(np.array([{"a": 1}], dtype=object)), "corrupt"),
    ("line.npy", _npy(np.zeros(5)), "1-D"),
    ("four.npy", _npy(np.zeros((2, 3, 4, 5))), "4-D"),
    ("four.nii.gz", _four_d_nifti, "4-D image, which is not supported"),
    ("vectors.nrrd", _vector_nrrd, "6 values per pixel"),
    ("strings.mat", _mat_without_image, "no real 2-D or 3-D numeric array"),
    ("junk.mat", file_with(b"MATLAB 5.0 MAT-file" + RNG.bytes(200)), "corrupt"),
])
def test_read_errors(tmp_path, name, make, words):
    assert words in user_error(read_image, make(tmp_path / name))


def test_unsupported_extension_lists_supported_ones(tmp_path):
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    message = user_error(read_image, tmp_path / "x.gif")
    assert all(ext in message for ext in SUPPORTED_EXTENSIONS)


def test_unreadablefile_with(tmp_path):
    path = tmp_path / "secret.nrrd"
    write_image(path, np.zeros((20, 30), np.uint8))
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("running as root: file permissions do not stop reading")
    assert "permission denied" in user_error(read_image, path)


# ------------------------------------------------------------------------------------ write errors

def test_output_exists(tmp_path):
    (tmp_path / "x.nrrd").write_bytes(b"old")
    assert "already exists" in user_error(write_image, tmp_path / "x.nrrd", np.zeros((20, 30), np.uint8))
    assert (tmp_path / "x.nrrd").read_bytes() == b"old"


def test_output_folder_missing(tmp_path):
    assert "does not exist" in user_error(write_image, tmp_path / "no" / "x.nrrd", np.zeros((20, 30), np.uint8))


def test_output_folder_not_writable(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: folder permissions do not stop writing")
        assert "not writable" in user_error(write_image, folder / "x.nrrd", np.zeros((20, 30), np.uint8))
    finally:
        folder.chmod(0o700)


def test_output_is_the_input_even_with_force(tmp_path):
    write_image(tmp_path / "x.nrrd", np.zeros((20, 30), np.uint8))
    source = read_image(tmp_path / "x.nrrd")
    same = tmp_path / "sub" / ".." / "x.nrrd"
    (tmp_path / "sub").mkdir()
    assert "is the input file" in user_error(write_image, same, source.array, like=source, force=True)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp"])
def test_stack_to_2d_format(tmp_path, ext):
    message = user_error(write_image, tmp_path / f"x{ext}", np.zeros((3, 20, 30), np.uint8))
    assert "3 frames" in message and ".nrrd" in message and ".nii.gz" in message


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_float_to_8_bit_format(tmp_path, ext):
    message = user_error(write_image, tmp_path / f"x{ext}", np.zeros((20, 30), np.float32))
    assert "cannot store float32 pixels" in message


@pytest.mark.parametrize("name, array, words", [
    ("x.gif", np.zeros((20, 30), np.uint8), "Cannot write '.gif' files"),
    ("x.mat", np.zeros((20, 30), np.uint8), "Cannot write '.mat' files"),
    ("x.nrrd", np.zeros((20, 30), np.bool_), "cannot store bool pixels"),
    ("x.jpg", np.zeros((20, 30, 4), np.uint8), "alpha channel"),
    ("x.seq.nrrd", np.zeros((20, 30), np.uint8), "(N, H, W) grey frames"),
    ("x.nrrd", np.zeros((5,), np.uint8), "1-D"),
])
def test_write_errors(tmp_path, name, array, words):
    assert words in user_error(write_image, tmp_path / name, array)
    assert listing(tmp_path) == set()


def test_array_must_match_its_source(tmp_path):
    source = ImageData(np.zeros((3, 20, 30), np.uint8), None, "volume", (1.0, 1.0, 1.0), (0.0,) * 3, ROTATION)
    assert "shape" in user_error(write_image, tmp_path / "x.nrrd", np.zeros((2, 20, 30), np.uint8), like=source)


def test_gzip_truncation_is_caught_for_nifti(tmp_path):
    path = tmp_path / "v.nii.gz"
    write_image(path, np.ones((4, 20, 30), np.float32))
    whole = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(whole[: len(whole) - 100]))  # a valid gzip stream, but short
    assert "truncated" in user_error(read_image, path)


def test_large_outputs_are_written_raw_unless_compression_is_asked_for(tmp_path):
    from speckle2self.image_io import COMPRESS_LIMIT

    small = np.random.default_rng(0).integers(0, 255, (4, 64, 64), dtype=np.uint8)
    large = np.zeros((COMPRESS_LIMIT // (256 * 256) + 1, 256, 256), np.uint8)
    cases = {"small.mha": (small, None, True), "large.mha": (large, None, False), "forced.mha": (large, True, True),
             "raw.mha": (small, False, False)}
    for name, (array, compress, expected) in cases.items():
        write_image(tmp_path / name, array, compress=compress)
        header = (tmp_path / name).read_bytes()[:1000]
        assert (b"CompressedData = True" in header) == expected, name
        np.testing.assert_array_equal(read_image(tmp_path / name).array, array)


def test_an_image_without_pixels_still_describes_the_output(tmp_path):
    source = tmp_path / "source.nrrd"
    array = np.arange(3 * 20 * 30, dtype=np.int16).reshape(3, 20, 30)
    write_image(source, array)
    image = read_image(source)
    bare = image.without_pixels()
    assert bare.array.shape == image.array.shape and bare.array.dtype == image.array.dtype
    assert bare.array.strides == (0, 0, 0) and bare.spacing == image.spacing
    write_image(tmp_path / "out.nrrd", array[::-1].copy(), like=bare)
    written = read_image(tmp_path / "out.nrrd")
    np.testing.assert_array_equal(written.array, array[::-1])
    assert written.spacing == image.spacing and written.origin == image.origin
