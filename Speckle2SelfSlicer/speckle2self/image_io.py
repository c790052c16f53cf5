"""Read and write images, volumes and sequences, keeping their geometry and metadata.

Every format except .npy and .mat goes through SimpleITK. Arrays come back in the despeckler's layouts
(see frames.py): (H, W), (N, H, W), (H, W, C) or (N, H, W, C) with C = 3 or 4. 3-D files are frames or
slices along their slowest axis (numpy axis 0, as SimpleITK gives it).

Slicer volume sequences (.seq.nrrd) are 4-D NRRD files with a `list` frame axis; SimpleITK reads them as
a 3-D vector image whose components are the frames. They become (N, H, W) frames, or, when each frame is
a volume of D slices, (N * D, H, W) slices frame after frame. They are written back the same way, with
the frame axis first (`kinds: list domain domain domain`, `axis 0 index ...`), as Slicer documents it.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import UserError
from .frames import is_colour

SUPPORTED_EXTENSIONS = (".seq.nrrd", ".nrrd", ".nhdr", ".nii.gz", ".nii", ".igs.mha", ".igs.mhd", ".mha",
                        ".mhd", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy", ".mat")
READ_ONLY = (".mat",)
NRRD = (".seq.nrrd", ".nrrd", ".nhdr")
METAIMAGE = (".igs.mha", ".igs.mhd", ".mha", ".mhd")
NIFTI = (".nii.gz", ".nii")
FLAT = (".png", ".jpg", ".jpeg", ".bmp")
"""Formats that hold a single 2-D image."""
SITK_TYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64")
PIXEL_TYPES = {".png": ("uint8", "uint16"), ".jpg": ("uint8",), ".jpeg": ("uint8",), ".bmp": ("uint8",),
               ".tif": SITK_TYPES[:6] + ("float32",), ".tiff": SITK_TYPES[:6] + ("float32",)}
STACK_FORMATS = ".nrrd, .mha or .nii.gz"


@dataclass
class ImageData:
    """Pixels in a despeckler layout plus what it takes to write a result the same way.

    Geometry is in SimpleITK order (x, y[, z]) and None for .npy and .mat. `metadata` holds the file's
    key/value pairs except ITK's own bookkeeping (ITK_*). `slices_per_frame` is D for a .seq.nrrd of
    volumes (the array then holds N * D slices, frame after frame) and 1 otherwise.
    """

    array: np.ndarray
    path: Path | None = None
    kind: str = "image"
    """"image" (one 2-D frame), "volume" (slices) or "sequence" (frames in time)."""
    spacing: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    slices_per_frame: int = 1

    def without_pixels(self) -> "ImageData":
        """This image's description with a zero-size stand-in of the same shape and dtype for the pixels:
        enough for `write_image(like=...)`, so a caller can free the input before writing a result."""
        return replace(self, array=np.broadcast_to(np.zeros((), self.array.dtype), self.array.shape))


def extension(path: Path) -> str:
    name = Path(path).name.lower()
    return next((e for e in SUPPORTED_EXTENSIONS if name.endswith(e)), Path(name).suffix)


def _check_layout(array: np.ndarray, name: str) -> None:
    """Raise UserError unless `array` is a non-empty numeric array in a despeckler layout."""
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) \
            or np.issubdtype(array.dtype, np.complexfloating):
        raise UserError(f"{name} holds {array.dtype} values, not real numeric pixels",
                        "store integer or floating-point pixels")
    if array.size == 0:
        raise UserError(f"{name} is an empty image (shape {array.shape})", "check that it holds pixel data")
    if array.ndim == 4 and not is_colour(array) or array.ndim > 4:
        raise UserError(f"{name} is {array.ndim}-D (shape {array.shape}), which is not supported",
                        "split it into 3-D volumes or 2-D frames")
    if array.ndim < 2:
        raise UserError(f"{name} is {array.ndim}-D (shape {array.shape}), not an image",
                        "give a 2-D image or a stack of frames")


# ----------------------------------------------------------------------------------------------- reading

def read_image(path) -> ImageData:
    """Read an image, volume or sequence; raise UserError (one line) for anything unreadable."""
    path = Path(path)
    ext = extension(path)
    if not path.exists():
        raise UserError(f"{path} does not exist", "check the path")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an image file", "give a file inside it")
    if ext not in SUPPORTED_EXTENSIONS:
        raise UserError(f"Unsupported file type '{ext or path.name}'",
                        f"use one of {' '.join(SUPPORTED_EXTENSIONS)}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path} cannot be read (permission denied)", "check the file's permissions")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes)", "check that it was copied or saved completely")
    if ext == ".npy":
        return _read_npy(path)
    if ext == ".mat":
        return _read_mat(path)
    return _read_sitk(path, ext)


def _corrupt(path: Path, ext: str) -> UserError:
    detached = ext in (".nhdr", ".mhd", ".igs.mhd")
    return UserError(f"Cannot read {path.name}: it is truncated, corrupt or not really a {ext} file",
                     "check that its data file lies beside it, complete" if detached else "copy or export it again")


def _read_npy(path: Path) -> ImageData:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise _corrupt(path, ".npy") from None
    _check_layout(array, path.name)
    return ImageData(array, path, "image" if array.ndim == 2 or array.ndim == 3 and is_colour(array)
                     else "volume")


def _read_mat(path: Path) -> ImageData:
    """The largest real 2-D or 3-D numeric variable; MATLAB keeps frames on the last axis."""
    from scipy.io import loadmat

    try:
        variables = loadmat(str(path))
    except NotImplementedError:
        raise UserError(f"{path.name} is a MATLAB v7.3 (HDF5) file, which is not supported",
                        "save it with save(..., '-v7') in MATLAB or export it to .nrrd") from None
    except Exception:  # scipy raises many types for a damaged file
        raise _corrupt(path, ".mat") from None
    images = [v for k, v in variables.items() if not k.startswith("__") and isinstance(v, np.ndarray)
              and v.ndim in (2, 3) and min(v.shape) > 0 and v.shape[0] > 1 and v.shape[1] > 1
              and (np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)
                   or v.dtype == np.bool_)]
    if not images:
        raise UserError(f"{path.name} holds no real 2-D or 3-D numeric array",
                        "save the image as a real numeric matrix (e.g. abs() of IQ data)")
    array = max(images, key=lambda v: v.size)
    if array.ndim == 2:
        return ImageData(array, path, "image")
    return ImageData(np.ascontiguousarray(np.moveaxis(array, -1, 0)), path, "sequence")


@contextlib.contextmanager
def _native_stderr_silenced():
    """Drop what native code prints on the process's stderr meanwhile (MetaIO reports a truncated file there,
    beside the exception that becomes our one-line error)."""
    saved = os.dup(2)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _read_sitk(path: Path, ext: str) -> ImageData:
    try:
        with _native_stderr_silenced():
            image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise _corrupt(path, ext) from None
    metadata = {k: image.GetMetaData(k) for k in image.GetMetaDataKeys() if not k.startswith("ITK_")}
    if ext in NIFTI:
        _check_nifti_complete(path, metadata)
    dimension, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    if dimension > 3:
        raise UserError(f"{path.name} is a {dimension}-D image, which is not supported",
                        "split it into 3-D volumes (or save a Slicer sequence as .seq.nrrd)")
    array = sitk.GetArrayFromImage(image)
    slices = 1
    if ext == ".seq.nrrd":
        if dimension != 3:
            raise UserError(f"{path.name} is not a Slicer volume sequence (it has {dimension} spatial axes)",
                            "name it .nrrd")
        if components == 1:  # a one-frame sequence is written as a plain volume
            array = array[..., None]
        slices = array.shape[0]
        array = np.moveaxis(array, -1, 0).reshape(-1, *array.shape[1:3])
    elif components > 1 and (components not in (3, 4) or metadata.get("NRRD_kinds[pixel]") == "list"):
        raise UserError(f"{path.name} has {components} values per pixel (4-D or multi-channel data), "
                        "which is not supported", "split it into 3-D volumes, or name a Slicer sequence .seq.nrrd")
    _check_layout(array, path.name)
    if dimension == 2:
        kind = "image"
    elif ext == ".seq.nrrd" or ext.startswith(".igs") or any(k.startswith("Seq_Frame") for k in metadata):
        kind = "sequence"
    else:
        kind = "volume"
    return ImageData(array, path, kind, image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
                     metadata, slices)


def _check_nifti_complete(path: Path, metadata: dict[str, str]) -> None:
    """ITK zero-fills a truncated NIfTI without complaint, so compare the data size with the header's."""
    if "vox_offset" not in metadata:  # older ITK versions do not report the header
        return
    shape = [int(metadata[f"dim[{i}]"]) for i in range(1, int(metadata["dim[0]"]) + 1)]
    expected = int(float(metadata["vox_offset"])) + int(np.prod(shape)) * int(metadata["bitpix"]) // 8
    if not path.name.lower().endswith(".gz"):
        size = path.stat().st_size
    else:
        try:
            with gzip.open(path) as stream:
                size = sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 24), b""))
        except (OSError, EOFError, zlib.error):
            size = -1
    if size < expected:
        raise _corrupt(path, extension(path))


# ----------------------------------------------------------------------------------------------- writing

COMPRESS_LIMIT = 16 * 2 ** 20
"""NRRD and MetaImage pixel data up to this many bytes is compressed by default. ITK compresses a file
whole, in memory (about four times the pixel data, measured) and at tens of MB/s on one core, so a long
cine is written raw unless compression is asked for: memory stays flat in the number of frames."""


def write_image(path, array: np.ndarray, like: ImageData | None = None, force: bool = False,
                check_only: bool = False, compress: bool | None = None) -> None:
    """Write `array` atomically, with the geometry and metadata of `like` (the image it came from).

    `array` has the layout of `like.array` (or any despeckler layout without `like`); its dtype is kept.
    With `check_only`, only check that the write would be accepted (before a long computation).
    `compress` (NRRD, MetaImage): None compresses up to COMPRESS_LIMIT bytes of pixels.
    """
    path = Path(path)
    ext = _check_target(path, like, force)
    array = np.asarray(array)
    if like is not None and array.shape != like.array.shape:
        raise UserError(f"The array to write has shape {array.shape} but the source image has "
                        f"{like.array.shape}", "write it without the source image (like=None)")
    array, colour = _check_pixels(array, ext, like)
    if check_only:
        return
    if ext == ".npy":
        _write_atomically(path, lambda target: _save_npy(target, array), like, force)
    else:
        image = _to_sitk(array, colour, ext, like)
        compress = (array.nbytes <= COMPRESS_LIMIT if compress is None else compress) and ext in NRRD + METAIMAGE
        _write_atomically(path, lambda target: _save_sitk(target, image, ext, like, compress), like, force)


def _check_target(path: Path, like: ImageData | None, force: bool) -> str:
    ext = extension(path)
    if ext not in SUPPORTED_EXTENSIONS or ext in READ_ONLY:
        writable = " ".join(e for e in SUPPORTED_EXTENSIONS if e not in READ_ONLY)
        raise UserError(f"Cannot write '{ext or path.name}' files", f"use one of {writable}")
    if like is not None and like.path is not None and path.resolve() == Path(like.path).resolve():
        raise UserError(f"The output {path} is the input file", "write the result to a new file")
    if path.is_dir():
        raise UserError(f"The output {path} is a folder", "give a file name")
    if not path.parent.is_dir():
        raise UserError(f"The output folder {path.parent} does not exist", "create it first")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UserError(f"The output folder {path.parent} is not writable", "choose another folder")
    if path.exists() and not force:
        raise UserError(f"{path} already exists", "choose another name or overwrite it with --force (force=True)")
    return ext


def _check_pixels(array: np.ndarray, ext: str, like: ImageData | None) -> tuple[np.ndarray, bool]:
    """Check that `ext` can store `array`; return it (a one-frame stack as one image for 2-D formats)
    and whether it is colour."""
    _check_layout(array, "The image to write")
    geometric = like is not None and like.spacing is not None
    colour = array.ndim == len(like.spacing) + 1 if geometric else is_colour(array)
    stacked = array.ndim == (4 if colour else 3)
    if ext == ".seq.nrrd" and (colour or not stacked):
        raise UserError(f"A .seq.nrrd sequence holds (N, H, W) grey frames, not shape {array.shape}",
                        f"write {STACK_FORMATS} instead")
    if ext in FLAT and stacked:
        if array.shape[0] > 1:
            raise UserError(f"A {ext} file holds one 2-D image but this one has {array.shape[0]} frames",
                            f"write {STACK_FORMATS} instead")
        array = array[0]
    if ext in (".jpg", ".jpeg") and colour and array.shape[-1] == 4:
        raise UserError("A JPEG file cannot store an alpha channel", "drop it or write .png")
    allowed = PIXEL_TYPES.get(ext, SITK_TYPES)
    if ext != ".npy" and array.dtype.name not in allowed:
        raise UserError(f"A {ext} file cannot store {array.dtype} pixels (only {', '.join(allowed)})",
                        "convert the pixels" + (f" or write {STACK_FORMATS}" if ext in PIXEL_TYPES else ""))
    return array, colour


def _to_sitk(array: np.ndarray, colour: bool, ext: str, like: ImageData | None) -> sitk.Image:
    if ext == ".seq.nrrd":  # frames become vector components: (N * D, H, W) -> (D, H, W, N)
        slices = like.slices_per_frame if like is not None else 1
        frames = array.reshape(-1, slices, *array.shape[1:])
        image = sitk.GetImageFromArray(np.moveaxis(frames, 0, -1), isVector=True)
    else:
        image = sitk.GetImageFromArray(array, isVector=colour)
    if like is not None and like.spacing is not None and len(like.spacing) == image.GetDimension():
        image.SetSpacing(like.spacing)
        image.SetOrigin(like.origin)
        image.SetDirection(like.direction)
    for key, value in _metadata_for(like, ext).items():
        image.SetMetaData(key, value)
    return image


def _metadata_for(like: ImageData | None, ext: str) -> dict[str, str]:
    """The source's metadata that still holds in the target file.

    Dropped: NRRD_* (the source's NRRD axis fields, rebuilt by the writer), everything from a NIfTI
    source (those keys are its binary header, which the writer rebuilds), and the Slicer sequence keys
    (DataNodeClassName, axis <A> index ...) unless writing a .seq.nrrd, whose frame axis is axis 0.
    """
    if like is None or like.path is not None and extension(like.path) in NIFTI:
        return {}
    kept = {}
    for key, value in like.metadata.items():
        if key.startswith("NRRD_"):
            continue
        if key == "DataNodeClassName" or re.match(r"axis \d+ index ", key):
            if ext != ".seq.nrrd":
                continue
            key = re.sub(r"^axis \d+", "axis 0", key)
        kept[key] = value
    return kept


def _save_npy(target: Path, array: np.ndarray) -> None:
    with open(target, "wb") as stream:  # np.save(name) would append .npy to an upper-case .NPY
        np.save(stream, array)


def _save_sitk(target: Path, image: sitk.Image, ext: str, like: ImageData | None, compress: bool) -> None:
    sitk.WriteImage(image, str(target), useCompression=compress)
    if ext == ".seq.nrrd":
        metadata = like.metadata if like is not None else {}
        _mark_frame_axis(target, metadata.get("NRRD_labels[pixel]", "frame"), metadata.get("NRRD_units[pixel]", ""))


def _mark_frame_axis(path: Path, label: str, unit: str) -> None:
    """SimpleITK writes the frames as `kinds: vector ...`; make that Slicer's `list` axis, named."""
    label, unit = label.replace('"', ""), unit.replace('"', "")
    staged = path.with_name(path.name + ".part")
    with open(path, "rb") as source, open(staged, "wb") as target:
        while (line := source.readline()) not in (b"\n", b""):
            if line.startswith(b"kinds: vector "):
                line = line.replace(b"vector", b"list", 1) + f'labels: "{label}" "" "" ""\n'.encode()
                if unit:
                    line += f'units: "{unit}" "" "" ""\n'.encode()
            target.write(line)
        target.write(line)
        shutil.copyfileobj(source, target)
    os.replace(staged, path)


def _write_atomically(path: Path, save, like: ImageData | None, force: bool) -> None:
    """Let `save` write into a temporary folder beside `path` under the final name (so a detached
    header names the right data file), then move data files and the header (last) into place."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as err:
        raise UserError(f"Cannot write in the folder {path.parent} ({err.strerror})",
                        "choose a writable output folder") from None
    source = Path(like.path).resolve() if like is not None and like.path is not None else None
    try:
        save(folder / path.name)
        produced = sorted(folder.iterdir(), key=lambda p: p.name == path.name)
        for file in produced:
            final = path.parent / file.name
            if final.resolve() == source:
                raise UserError(f"Writing {path.name} would overwrite the input file {final.name}",
                                "choose another output name")
            if final.exists() and not force:
                raise UserError(f"{final} already exists", "choose another name or overwrite it with --force")
        for file in produced:
            os.replace(file, path.parent / file.name)
    except RuntimeError as err:  # SimpleITK
        reason = str(err).strip().splitlines()[-1].split("): ")[-1]
        raise UserError(f"Could not write {path.name}: {reason}", "check the output folder and format") from None
    except OSError as err:
        raise UserError(f"Could not write {path.name}: {err.strerror or err}",
                        "check free disk space and permissions") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
