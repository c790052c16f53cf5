"""Issue 7, reliability: fuzzed despeckling and geometry round trips, very large frames, bad weights and bad
files through the command line, no network at run time, determinism. Slicer logic: test_slicer_reliability.py."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import SAMPLE, file_with
from speckle2self import frames as fr
from speckle2self.cli import main
from speckle2self.errors import UserError
from speckle2self.image_io import ImageData, read_image, write_image
from speckle2self.inference import GIB, despeckle, despeckle_job, memory_needed
from speckle2self.network import Speckle2SelfNet
from speckle2self.weights import FORMAT, card_path, save_checkpoint

FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = ("uint8", "int16", "uint16", "int32", "float16", "float32", "float64", "bool")
LAYOUTS = ("image", "stack", "rgb", "rgba", "colour stack")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def one_line_error(err: str) -> bool:
    return err.startswith("speckle2self: error: ") and err.count("\n") == 1


def files(folder: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under `folder`, to show that nothing was written or changed."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in folder.rglob("*")}


# ------------------------------------------------------------------------------------------- fuzzing

def _values(rng, dtype: np.dtype, shape, fill: str, negative: bool, magnitude: float) -> np.ndarray:
    """Frames of `shape` in `dtype`: noise over the dtype's range (or +-magnitude for floats), a constant,
    zeros, noise with a zero 'outside the sector' block, or noise with a NaN or infinite pixel."""
    if dtype == np.bool_:
        array = rng.random(shape) < 0.5
    elif dtype.kind == "f":
        scale = min(magnitude, float(np.finfo(dtype).max))
        array = (rng.uniform(-1 if negative else 0, 1, shape) * scale).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min if negative else 0, info.max, shape, dtype=dtype, endpoint=True)
    if fill == "constant":
        array[...] = array.flat[0]
    elif fill == "zero":
        array[...] = 0
    elif fill == "sector":
        array[..., : shape[-2] // 2, : shape[-1] // 2] = 0
    elif fill == "special" and dtype.kind == "f":
        array.flat[rng.integers(array.size)] = rng.choice([np.nan, np.inf, -np.inf])
    return array


def _arrange(grey: np.ndarray, layout: str) -> np.ndarray:
    """(N, H, W) grey frames in one of the despeckler's layouts; colour channels differ (a rolled copy)."""
    if layout in ("image", "stack"):
        return grey[0] if layout == "image" else grey
    channels = 4 if layout == "rgba" else 3
    colour = np.stack([grey, np.roll(grey, 1, axis=-1), grey, grey[..., ::-1]][:channels], axis=-1)
    return colour[0] if layout in ("rgb", "rgba") else colour


@st.composite
def images(draw, max_side: int = 70):
    """An array of any supported dtype and layout with 1..max_side pixel sides (mostly at least the network's
    minimum) and awkward values."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    side = st.one_of(st.integers(1, fr.MIN_SIDE - 1), *[st.integers(fr.MIN_SIDE, max_side)] * 3)
    shape = (draw(st.integers(1, 3)), draw(side), draw(side))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    fills = ("noise", "noise", "constant", "zero", "sector", "special")
    grey = _values(rng, dtype, shape, draw(st.sampled_from(fills)),
                   draw(st.booleans()), draw(st.sampled_from((1.0, 255.0, 1e30, 3e38, 1e300, np.inf))))
    layout = draw(st.sampled_from(LAYOUTS))
    if layout in ("image", "rgb", "rgba"):
        grey = grey[:1]
    return _arrange(grey, layout), layout


EXTREMES = np.where(np.indices((32, 32)).sum(axis=0) % 3, np.finfo(np.float64).max, -np.finfo(np.float64).max)


@settings(FUZZ, max_examples=800)
@given(case=images())
@example(case=(EXTREMES, "image"))  # bugs the fuzzing found: overflow near the float limits,
@example(case=(np.arange(256, dtype=np.uint8).reshape(16, 16), "image"))  # a 16x16 frame crashed InstanceNorm,
@example(case=(np.full((2, 32, 32), 1826701615, np.int32), "stack"))  # int32 beyond float32 precision
def test_fuzzed_despeckle_gives_a_result_or_a_user_error(tiny_weights, case):
    array, layout = case
    before = array.copy()
    h, w = array.shape[-3:-1] if layout in ("rgb", "rgba", "colour stack") else array.shape[-2:]
    bad = min(h, w) < fr.MIN_SIDE or (array.dtype.kind == "f" and not np.isfinite(array).all())
    try:
        out = despeckle(array, weights=tiny_weights, device="cpu")
    except UserError as err:
        assert bad and "\n" not in str(err), err
        event("refused")
    else:
        assert not bad
        event(f"despeckled {layout}")
        assert out.shape == array.shape and out.dtype == array.dtype
        assert np.isfinite(out.astype(np.float64)).all()
        if layout in ("image", "stack"):
            for o, i in zip(out.reshape(-1, h, w), array.reshape(-1, h, w)):
                assert i.min() <= o.min() and o.max() <= i.max()
                if i.min() == i.max():
                    np.testing.assert_array_equal(o, i)  # constant and all-zero frames come back unchanged
        else:
            np.testing.assert_array_equal(out[..., 0], out[..., 1])
            np.testing.assert_array_equal(out[..., 0], out[..., 2])
            np.testing.assert_array_equal(out[..., 3:], array[..., 3:])  # alpha kept
    assert array.dtype == before.dtype and array.tobytes() == before.tobytes()


ODD_DTYPES = ("uint8", "int64", "float16", "float64", "complex64", "bool", "U2", "datetime64[s]")


@settings(FUZZ, max_examples=300)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=20), dtype=st.sampled_from(ODD_DTYPES),
       nan=st.booleans())
def test_fuzzed_validate_returns_a_layout_or_a_user_error(shape, dtype, nan):
    array = np.ones(shape, dtype)
    if nan and array.dtype.kind in "fc" and array.size:
        array.flat[-1] = np.nan
    try:
        layout = fr.validate(array)
    except UserError as err:
        assert "\n" not in str(err)
    else:
        assert array.dtype.kind in "biuf" and np.isfinite(array.astype(np.float64)).all()
        assert min(fr.frame_shape(array, layout)) >= fr.MIN_SIDE and 2 <= array.ndim <= 4


@pytest.mark.parametrize("value", [None, 3.0, [[1, 2], [3, 4]], "image.nrrd"])
def test_validate_refuses_what_is_not_an_array(value):
    with pytest.raises(UserError, match="numpy array"):
        fr.validate(value)


def _rotation(rng, dimension: int) -> tuple[float, ...]:
    """A random orthonormal direction matrix (rotation or reflection), row-major."""
    q, _ = np.linalg.qr(rng.normal(size=(dimension, dimension)))
    return tuple(q.ravel())


@settings(FUZZ, max_examples=60)
@given(ext=st.sampled_from((".nrrd", ".mha")), dimension=st.sampled_from((2, 3)),
       dtype=st.sampled_from(("uint8", "int16", "float32")), seed=st.integers(0, 2 ** 32 - 1),
       spacing=st.lists(st.floats(1e-3, 1e3), min_size=3, max_size=3),
       origin=st.lists(st.floats(-1e4, 1e4), min_size=3, max_size=3))
def test_fuzzed_geometry_survives_read_despeckle_write(tiny_weights, ext, dimension, dtype, seed, spacing, origin):
    rng = np.random.default_rng(seed)
    shape = (2,) * (dimension == 3) + tuple(rng.integers(16, 40, 2))
    array = _values(rng, np.dtype(dtype), shape, "noise", True, 1e4)
    source = ImageData(array, None, "image", tuple(spacing[:dimension]), tuple(origin[:dimension]),
                       _rotation(rng, dimension))
    with tempfile.TemporaryDirectory() as folder:
        write_image(Path(folder) / f"in{ext}", array, like=source)
        image = read_image(Path(folder) / f"in{ext}")
        np.testing.assert_array_equal(image.array, array)
        write_image(Path(folder) / f"out{ext}", despeckle(image.array, weights=tiny_weights), like=image)
        back = read_image(Path(folder) / f"out{ext}")
    assert back.array.shape == array.shape and back.array.dtype == array.dtype
    for name in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(back, name), getattr(source, name), rtol=1e-9, atol=1e-9, err_msg=name)


# --------------------------------------------------------------------------------------- large frames

def test_8192_frame_is_refused_before_allocating_with_the_memory_it_needs():
    huge = np.broadcast_to(np.uint8(7), (8192, 8192))  # a read-only view: no pixel memory
    net = Speckle2SelfNet(width=32).inference_path()
    tracemalloc.start()
    try:
        needed = f"8192x8192 frame would need about {memory_needed(8192, 8192, 32) / GIB:.1f} GiB"
        with pytest.raises(UserError, match=needed) as err:
            despeckle_job(huge, model=net, device="cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(err.value) and "--max-memory" in str(err.value)
    assert peak < 50 * 2 ** 20


def test_batches_shrink_to_fit_the_memory_limit(tiny_weights):
    stack = np.random.default_rng(2).random((5, 64, 64)).astype(np.float32)
    job = despeckle_job(stack, weights=tiny_weights, batch_size=4, memory_limit=2 * memory_needed(64, 64, 8), scale=1)
    assert [p.done for p in job] == [0, 2, 4, 5]
    np.testing.assert_array_equal(job.result, despeckle(stack, weights=tiny_weights, batch_size=2, scale=1))


def test_cli_max_memory_refuses_a_frame_that_needs_more_before_fine_tuning(tmp_path, tiny_weights, capsys):
    before = files(tmp_path)
    limit = memory_needed(400, 600, 8) / GIB / 2
    assert main(["despeckle", str(SAMPLE), "-o", str(tmp_path / "o.nrrd"), "--weights", str(tiny_weights),
                 "--max-memory", f"{limit:.4f}", "--finetune-steps", "2", "--finetune-size", "32"]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and "400x600 frame would need" in err  # no fine-tuning progress bar before it
    assert files(tmp_path) == before


# -------------------------------------------------------------------------------------------- weights

class Payload:
    """Unpickling it would create a folder: a stand-in for code run by a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _checkpoint(path: Path, **fields) -> Path:
    torch.save({"format": FORMAT, "width": 8, "state_dict": Speckle2SelfNet(8).state_dict(), **fields}, path)
    return path


def _bad_weights(folder: Path, tiny_weights: Path) -> dict[str, tuple[Path, str]]:
    """Each bad weights file with words its error must contain."""
    data = tiny_weights.read_bytes()
    (folder / "cut.pt").write_bytes(data[: len(data) // 2])
    (folder / "carded.pt").write_bytes(data[: len(data) // 2])
    card_path(folder / "carded.pt").write_bytes(card_path(tiny_weights).read_bytes())
    torch.save(Payload(folder / "pwned"), folder / "pickle.pt")
    torch.save(Speckle2SelfNet(8).state_dict(), folder / "bare.pt")
    (folder / "text.pt").write_text("not a checkpoint\n")
    (folder / "list_card.pt").write_bytes(data)
    card_path(folder / "list_card.pt").write_text("[1, 2]\n")
    (folder / "flipped.pt").write_bytes(_flipped(data))  # no card beside it: the tensor digest alone catches it
    with open(folder / "protocol4.pt", "wb") as stream:  # torch warns about the protocol before refusing it
        pickle.dump({"format": FORMAT}, stream, protocol=4)
    return {
        "missing": (folder / "missing.pt", "not found"),
        "truncated": (folder / "cut.pt", "truncated or damaged"),
        "sha256 mismatch": (folder / "carded.pt", "does not match the sha256"),
        "pickled object": (folder / "pickle.pt", "refused for safety"),
        "bare state dict": (folder / "bare.pt", "not a Speckle2Self checkpoint"),
        "text": (folder / "text.pt", "no checkpoint at all"),
        "card not an object": (folder / "list_card.pt", "Model card"),
        "width 16 as 8": (_checkpoint(folder / "w16.pt", state_dict=Speckle2SelfNet(16).state_dict()), "do not fit"),
        "other architecture": (_checkpoint(folder / "linear.pt", state_dict=torch.nn.Linear(2, 2).state_dict()),
                               "do not fit"),
        "no width": (_checkpoint(folder / "nowidth.pt", width=None), "do not fit"),
        "absurd width": (_checkpoint(folder / "absurd.pt", width=10 ** 9), "do not fit"),
        "text width": (_checkpoint(folder / "textwidth.pt", width="wide"), "do not fit"),
        "no state dict": (_checkpoint(folder / "nostate.pt", state_dict=[1, 2]), "do not fit"),
        "byte flipped": (folder / "flipped.pt", "do not match the digest"),
        "pickle protocol 4": (folder / "protocol4.pt", "no checkpoint at all"),
    }


def _flipped(data: bytes) -> bytes:
    """`data` with its middle byte inverted."""
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0xFF
    return bytes(changed)


WEIGHT_CASES = ("missing", "truncated", "sha256 mismatch", "pickled object", "bare state dict", "text",
                "card not an object", "width 16 as 8", "other architecture", "no width", "absurd width",
                "text width", "no state dict", "byte flipped", "pickle protocol 4")


@pytest.mark.parametrize("case", WEIGHT_CASES)
def test_bad_weights_exit_2_through_the_cli(tmp_path, tiny_weights, capsys, case):
    weights, words = _bad_weights(tmp_path, tiny_weights)[case]
    out = tmp_path / "out"
    out.mkdir()
    before = files(tmp_path)
    with warnings.catch_warnings(record=True) as warned:  # a warning would be a second line on stderr
        warnings.simplefilter("always")
        assert main(["despeckle", str(SAMPLE), "-o", str(out / "o.nrrd"), "--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and words in err, err
    assert [str(w.message) for w in warned] == []
    assert files(tmp_path) == before and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("case", ["byte flipped", "pickle protocol 4"])
def test_bad_weights_are_one_stderr_line_from_the_console_script(tmp_path, tiny_weights, case):
    weights, words = _bad_weights(tmp_path, tiny_weights)[case]
    run = subprocess.run([sys.executable, "-m", "speckle2self", "despeckle", str(SAMPLE), "-o",
                          str(tmp_path / "o.nrrd"), "--weights", str(weights)], capture_output=True, text=True)
    assert run.returncode == 2 and one_line_error(run.stderr) and words in run.stderr, run.stderr
    assert not (tmp_path / "o.nrrd").exists()


def test_tensor_digest_is_in_checkpoint_and_card_and_sees_values_names_and_order(tmp_path):
    from speckle2self.weights import TENSOR_DIGEST, read_card, tensor_digest

    card = save_checkpoint(Speckle2SelfNet(8), tmp_path / "w.pt", {})
    stored = torch.load(tmp_path / "w.pt", weights_only=True)
    assert card[TENSOR_DIGEST] == read_card(tmp_path / "w.pt")[TENSOR_DIGEST] == stored[TENSOR_DIGEST]
    state = stored["state_dict"]
    assert tensor_digest(state) == card[TENSOR_DIGEST]
    first, second = list(state)[:2]
    changed = dict(state, **{first: state[first].clone()})
    changed[first].view(-1)[0] += 1
    renamed = {("x" + k if k == first else k): v for k, v in state.items()}
    reordered = {second: state[second], first: state[first], **state}
    assert len({tensor_digest(s) for s in (state, changed, renamed, reordered)}) == 4


def test_a_checkpoint_without_a_tensor_digest_still_loads(tmp_path):
    """Checkpoints written before the digest keep loading."""
    from speckle2self.weights import load_checkpoint

    path = _checkpoint(tmp_path / "old.pt")
    assert load_checkpoint(path)[0].width == 8


@pytest.mark.parametrize("name", ["default", "fast"])
def test_every_shipped_checkpoint_carries_its_tensor_digest_in_file_and_card(name):
    from speckle2self.weights import SHIPPED, TENSOR_DIGEST, read_card, tensor_digest

    checkpoint = torch.load(SHIPPED[name], weights_only=True)
    card = read_card(SHIPPED[name])
    assert checkpoint[TENSOR_DIGEST] == tensor_digest(checkpoint["state_dict"]) == card[TENSOR_DIGEST]


def test_a_checkpoint_of_another_width_with_its_card_loads(tmp_path):
    save_checkpoint(Speckle2SelfNet(16), tmp_path / "wide.pt", {})
    assert despeckle(np.zeros((32, 32), np.uint8), weights=tmp_path / "wide.pt").shape == (32, 32)


# -------------------------------------------------------------------------------------------- files

def _truncated(path: Path) -> Path:
    image = sitk.GetImageFromArray(np.arange(4 * 30 * 40, dtype=np.uint16).reshape(4, 30, 40))
    sitk.WriteImage(image, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path




def _image(array: np.ndarray):
    def make(path: Path) -> Path:
        sitk.WriteImage(sitk.GetImageFromArray(array, isVector=False), str(path))
        return path
    return make


BAD_FILES = {
    "folder": ("folder.nrrd", lambda p: p.mkdir() or p, "is a folder"),
    "zero bytes": ("zero.nrrd", file_with(b""), "empty (0 bytes)"),
    "truncated nrrd": ("cut.nrrd", _truncated, "truncated"),
    "truncated mha": ("cut.mha", _truncated, "truncated"),
    "text named .nrrd": ("text.nrrd", file_with(b"hello\n"), "not really a .nrrd file"),
    "unsupported extension": ("scan.dcm", file_with(b"DICM"), "Unsupported file type '.dcm'"),
    "4-D": ("four.nrrd", _image(np.zeros((2, 3, 20, 30), np.uint8)), "4-D image"),
    "5-D": ("five.nrrd", _image(np.zeros((2, 2, 3, 20, 30), np.uint8)), "5-D image"),
    "1x1": ("dot.nrrd", _image(np.zeros((1, 1), np.uint8)), "1x1 pixels"),
    "1xN": ("line.nrrd", _image(np.zeros((1, 300), np.uint8)), "1x300 pixels"),
    "15x40": ("small.nrrd", _image(np.zeros((15, 40), np.uint8)), "network's minimum"),
    "NaN": ("nan.nrrd", _image(np.full((20, 30), np.nan, np.float32)), "NaN"),
    "Inf": ("inf.mha", _image(np.full((20, 30), np.inf)), "infinite"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_input_files_exit_2_and_change_nothing(tmp_path, tiny_weights, capfd, case):
    """capfd: what native code (ITK) prints on the process's stderr counts as well."""
    name, make, words = BAD_FILES[case]
    source = make(tmp_path / name)
    before = files(tmp_path)
    assert main(["despeckle", str(source), "-o", str(tmp_path / "out.nrrd"), "--weights", str(tiny_weights)]) == 2
    err = capfd.readouterr().err
    assert one_line_error(err) and words in err, err
    assert files(tmp_path) == before


def test_unreadable_input_exits_2(tmp_path, tiny_weights, capsys):
    source = tmp_path / "secret.nrrd"
    source.write_bytes(SAMPLE.read_bytes())
    source.chmod(0)
    if os.access(source, os.R_OK):
        pytest.skip("running as root: file permissions do not stop reading")
    assert main(["despeckle", str(source), "-o", str(tmp_path / "o.nrrd"), "--weights", str(tiny_weights)]) == 2
    assert "permission denied" in capsys.readouterr().err


def _target(tmp_path: Path, case: str) -> Path:
    if case == "read-only folder":
        (tmp_path / "locked").mkdir(mode=0o500)
        if os.access(tmp_path / "locked", os.W_OK):
            pytest.skip("running as root: folder permissions do not stop writing")
    return {"missing folder": tmp_path / "no" / "o.nrrd", "read-only folder": tmp_path / "locked" / "o.nrrd",
            "same file": tmp_path / "in.nrrd", "same file via ..": tmp_path / "sub" / ".." / "in.nrrd",
            "existing output": tmp_path / "old.nrrd"}[case]


@pytest.mark.parametrize("case, words, force", [
    ("missing folder", "does not exist", False), ("read-only folder", "not writable", False),
    ("same file", "is the input file", False), ("same file", "is the input file", True),
    ("same file via ..", "is the input file", True), ("existing output", "exists", False),
])
def test_bad_outputs_exit_2_and_change_nothing(tmp_path, tiny_weights, capsys, case, words, force):
    source = tmp_path / "in.nrrd"
    source.write_bytes(SAMPLE.read_bytes())
    (tmp_path / "old.nrrd").write_bytes(b"precious")
    (tmp_path / "sub").mkdir()
    target = _target(tmp_path, case)
    before = files(tmp_path)
    args = ["despeckle", str(source), "-o", str(target), "--weights", str(tiny_weights)] + ["--force"] * force
    assert main(args) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and words in err, err
    assert files(tmp_path) == before


# ------------------------------------------------------------------------------- network, determinism

NO_NETWORK = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
class NoSocket(socket.socket):
    __init__ = refuse
socket.socket, socket.create_connection, socket.getaddrinfo = NoSocket, refuse, refuse
from speckle2self.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_despeckling_needs_no_network(tmp_path, tiny_weights):
    out = tmp_path / "out.nrrd"
    run = subprocess.run([sys.executable, "-c", NO_NETWORK, "despeckle", str(SAMPLE), "-o", str(out),
                          "--weights", str(tiny_weights), "--device", "cpu"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert read_image(out).array.shape == (400, 600)


def test_same_input_and_weights_give_identical_files(tmp_path, tiny_weights):
    from speckle2self.inference import _cached_model

    for name in ("a.nrrd", "b.nrrd"):
        _cached_model.cache_clear()  # load the weights afresh each time
        assert main(["despeckle", str(SAMPLE), "-o", str(tmp_path / name), "--weights", str(tiny_weights)]) == 0
    assert (tmp_path / "a.nrrd").read_bytes() == (tmp_path / "b.nrrd").read_bytes()
