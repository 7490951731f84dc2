"""The guest's own copy of a volume, for every backend.

A volume comes from the image store (by name) or from an outside file
(raw or qcow2, by absolute path). Either way the guest gets a private
copy: an outside file is copied once and inspected like any untrusted
image before qemu-img converts it, so the guest never opens a path
someone else controls.
"""

from __future__ import annotations

import os

from virt import images
from virt.errors import InvalidParameter
from virt.fileutils import private_copy, remove_quietly

VOLUME_FORMATS = ("raw", "qcow2")


def make_copy(store, volume: str, fmt: str | None, staging: str,
              out_fmt: str = "qcow2") -> str:
    """The guest's own copy of `volume` (a store image or a file), made in `staging`
    in format `out_fmt`."""
    out = os.path.join(staging, f"volume.{out_fmt}")
    if not os.path.isabs(volume):
        if fmt is not None:
            raise InvalidParameter(f"format {fmt!r}: a store image has its own format; "
                                   "give a format only with a file path")
        with store.pinned(volume) as image:
            images.convert(image.path, image.format, out, out_fmt)
        return out
    if fmt not in VOLUME_FORMATS:
        raise InvalidParameter(f"volume file format {fmt!r}: use one of "
                               f"{', '.join(VOLUME_FORMATS)}")
    source = os.path.join(staging, "source")
    private_copy(volume, source)
    images.inspect_untrusted(source, fmt, store.max_virtual_size, store.limits)
    images.convert(source, fmt, out, out_fmt, untrusted=True)
    remove_quietly(source)
    return out
