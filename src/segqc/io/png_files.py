"""PNG files: their colour type from the header, and palette (indexed-colour) PNGs.

ITK expands a palette PNG to its colours and cannot describe a grey + alpha PNG at all; the
header is read here to say what a file holds, and a palette PNG is decoded with Pillow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from segqc.errors import InputError

__all__ = ["PNG_PALETTE", "palette_png", "png_channels", "png_colour_type"]

#: PNG colour types (IHDR byte 9) -> channels: grey, RGB, palette, grey + alpha, RGB + alpha.
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
PNG_PALETTE = 3


def png_colour_type(path: Path) -> int | None:
    """The colour type stored in a PNG file's header, or None when the header is not a PNG's."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[25]


def png_channels(path: Path) -> int | None:
    """Channels per pixel of a PNG file from its header, or None when the header is not a PNG's.
    ITK cannot even describe a grey + alpha PNG ("Unknown PixelType"), so its channel count is
    read here to say what is wrong."""
    colour_type = png_colour_type(path)
    return None if colour_type is None else PNG_CHANNELS.get(colour_type)


def palette_png(path: Path, *, indices: bool) -> sitk.Image:
    """A palette PNG as a one-channel image (origin 0, spacing 1, as ITK gives PNGs): its palette
    indices (``indices``), or the grey level each index stands for when the palette is grey; a
    palette with colours is refused (it holds no intensities)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as picture:
            picture.load()
            mode = picture.mode
            array = np.array(picture, dtype=np.uint8)
            palette = np.array(picture.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is an unreadable file
        raise InputError(f"unreadable PNG file ({exc})", path) from None
    if mode != "P":
        raise InputError(f"palette PNG decoded as mode {mode}", path)
    if not indices:
        if palette.size == 0 or (palette != palette[:, :1]).any():
            raise InputError("is a palette PNG with colours, not grey levels; save the image as a "
                             "greyscale PNG", path)
        if array.size and int(array.max()) >= len(palette):
            raise InputError(f"palette index {int(array.max())} beyond the {len(palette)} palette "
                             "entries", path)
        array = palette[:, 0][array]
    return sitk.GetImageFromArray(array)
