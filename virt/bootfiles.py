"""Kernels, initrds and cdroms: the only host files an instance's params may name.

A tenant's params never reach a host path unchecked. A boot file is either an
image in the store (params kernel_image, initrd_image, cdrom_image) or a
regular file inside a directory the operator allows ([DEFAULT]
boot_file_dirs), once links are resolved. `resolve_boot_files` turns either
form into the canonical path param both backends read (kernel_path,
initrd_path, cdrom_image_path), so one check serves libvirt and xm alike.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from virt.errors import InvalidParameter
from virt.validation import check_absolute_path, check_image_name


@dataclass(frozen=True)
class BootFile:
    """One kind of boot file: the param naming a store image, the path param it becomes."""

    what: str
    image_param: str
    path_param: str


BOOT_FILES = (
    BootFile("kernel", "kernel_image", "kernel_path"),
    BootFile("initrd", "initrd_image", "initrd_path"),
    BootFile("cdrom", "cdrom_image", "cdrom_image_path"),
)


def resolve_boot_files(params: Mapping[str, str], store,
                       allowed_dirs: Sequence[str]) -> dict[str, str]:
    """params with every boot file as the canonical path of a checked regular file.

    store: the image store (its directory is allowed too: a path that a store
    image resolved to stays valid when the guest is rebuilt from it).
    """
    resolved = dict(params)
    roots = [*allowed_dirs, store.directory]
    for boot in BOOT_FILES:
        image = resolved.pop(boot.image_param, None)
        path = resolved.get(boot.path_param)
        if image is not None and path is not None:
            raise InvalidParameter(f"params: give {boot.image_param} or {boot.path_param}, "
                                   "not both")
        if image is not None:
            resolved[boot.path_param] = _store_file(boot, image, store)
        elif path is not None:
            resolved[boot.path_param] = allowed_file(path, roots, allowed_dirs,
                                                     f"params[{boot.path_param!r}]")
    return resolved


def _store_file(boot: BootFile, name: str, store) -> str:
    field = f"params[{boot.image_param!r}]"
    check_image_name(name, field)
    image = store.get(name)
    if image.format != "raw" or image.backing_chain:
        raise InvalidParameter(f"{field} {name!r}: the image is {image.format}; import a "
                               f"{boot.what} with --format raw")
    return allowed_file(image.path, [store.directory], [], field)


def allowed_file(path: str, roots: Sequence[str], configured: Sequence[str],
                 field: str) -> str:
    """The canonical path of a regular file inside one of roots, or InvalidParameter.

    configured: the operator's directories, named in the message.
    """
    check_absolute_path(path, field)
    real = os.path.realpath(path)
    if not any(_inside(real, root) for root in roots):
        allowed = ", ".join(configured) or "none configured"
        raise InvalidParameter(
            f"{field} {path!r}: not inside a directory allowed for boot files ({allowed}); "
            "import it into the image store and name the image, or add its directory to "
            "[DEFAULT] boot_file_dirs")
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise InvalidParameter(f"{field} {path!r}: cannot use it ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise InvalidParameter(f"{field} {path!r}: not a regular file; block devices, "
                               "directories and other special files are never used")
    return real


def _inside(real: str, root: str) -> bool:
    root = os.path.realpath(root)
    return real != root and os.path.commonpath([real, root]) == root
