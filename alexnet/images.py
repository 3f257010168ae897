"""Decode one image file into the RGB pixels every stage agrees on.

Training (preprocess), evaluation and `alexnet predict` all call `load_rgb` + `resize`, so a
model sees at serving time exactly the pixels it was trained on: first frame of an animation,
EXIF orientation applied, any mode (CMYK, L, P, RGBA, I;16...) converted to RGB, transparency
composited on white.

Every decode in the pipeline (validate, preprocess, predict) opens files through `open_image`,
which lets Pillow try only the formats validate accepts: a PostScript file named photo.jpg would
otherwise make Pillow run Ghostscript (`gs`) on it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image, ImageOps

ResizePolicy = Literal["squash", "crop", "pad"]
BACKGROUND = (255, 255, 255)
ORIENTATION = 0x0112  # the EXIF tag exif_transpose reads
# Pillow decoders tried by content (a multi-picture JPEG opens through "JPEG" as MPO). Not every
# plugin: EPS runs Ghostscript, and TGA and friends have no magic bytes and would "recognise"
# text files.
OPEN_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
DEEP_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
BAND_PIXELS = 1 << 22  # pixels per band when scaling a deep greyscale image


def open_image(path: str | Path | BinaryIO) -> Image.Image:
    """Open `path` (a file name or a file object) lazily with the accepted decoders only
    (OPEN_FORMATS), whatever its name.

    Raises:
        PIL.UnidentifiedImageError: the content is none of OPEN_FORMATS.
    """
    return Image.open(path, formats=OPEN_FORMATS)


def _deep_grey_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit greyscale to 8 bits, scaled by the maximum (value * 255 // max) rather than
    clipped as PIL's convert("L") does. Integer arithmetic, a band of rows at a time, so memory
    stays at the image plus its 8-bit copy (float64 copies of a 9000x9000 image took 1.3 GB)."""
    hi = max(int(img.getextrema()[1]), 1)
    width, height = img.size
    out = np.empty((height, width), np.uint8)
    rows = max(1, BAND_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        band = np.asarray(img.crop((0, top, width, min(height, top + rows))), dtype=np.int64)
        np.clip(band, 0, None, out=band)
        out[top:top + rows] = band * 255 // hi
    return Image.fromarray(out, "L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Return `img` as RGB; alpha (RGBA, LA, P with transparency) is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if img.mode in DEEP_GREY_MODES:
        img = _deep_grey_to_l(img)
    return img.convert("RGB")


def load_rgb(path: str | Path | BinaryIO, max_pixels: int | None = None,
             draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Fully decode `path` to an RGB image (first frame, EXIF orientation applied).

    Args:
        max_pixels: reject images with more pixels (decompression bombs); Pillow's warning is
            raised as an error, never ignored. None: Pillow's own limit applies.
        draft_size: for JPEGs, let libjpeg decode at a reduced scale that is still at least
            this size (much faster when the target is far smaller than the file).

    Raises:
        OSError / PIL.UnidentifiedImageError / Image.DecompressionBombError for unusable files.
    """
    if max_pixels is None:
        # No cap of our own: leave Pillow's defaults and the process-wide warnings filters
        # alone, which also keeps this safe to call from several threads (preprocess does).
        return _decode(path, None, draft_size)
    # Pillow checks its own process-wide limit on open, before we can see the size: make it this
    # cap, so a cap above Pillow's default is honoured and one below it is enforced. Both this
    # and catch_warnings are process-wide: validation calls this from one thread per process.
    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return _decode(path, max_pixels, draft_size)


def _decode(path: str | Path | BinaryIO, max_pixels: int | None,
            draft_size: tuple[int, int] | None) -> Image.Image:
    with open_image(path) as img:
        if max_pixels is not None and img.width * img.height > max_pixels:
            raise Image.DecompressionBombError(
                f"{img.width}x{img.height} = {img.width * img.height} pixels exceeds "
                f"the limit of {max_pixels}")
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", draft_size)
        img.seek(0)
        img.load()  # the pixels are in memory from here on; closing the file keeps them
        # exif_transpose copies the image even when there is nothing to rotate: ask first.
        if img.getexif().get(ORIENTATION, 1) not in (1, None):
            img = ImageOps.exif_transpose(img)
        if img.mode in DEEP_GREY_MODES:  # to 8 bits, and free the deep pixels before RGB
            deep, img = img, _deep_grey_to_l(img)
            deep.close()
        return to_rgb(img)


def resize(img: Image.Image, size: int, policy: ResizePolicy = "squash") -> np.ndarray:
    """Resize an RGB image to size x size uint8 pixels.

    squash: stretch to the square, as the reference does; crop: scale the short side to `size`
    and cut the centre; pad: scale the long side to `size` and pad with the background colour.
    """
    if policy == "squash":
        out = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    elif policy == "crop":
        out = ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
    elif policy == "pad":
        out = ImageOps.pad(img, (size, size), Image.Resampling.BILINEAR, color=BACKGROUND)
    else:
        raise ValueError(f"unknown resize policy {policy!r}")
    arr = np.asarray(out, dtype=np.uint8)
    assert arr.shape == (size, size, 3), arr.shape
    return arr
