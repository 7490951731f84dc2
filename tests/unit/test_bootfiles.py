"""Boot files (kernel, initrd, cdrom) come only from the store or allowed directories.

Real files, a real store and real links; the hostile cases are the ones a
tenant reached before: a host secret as initrd, a host disk as cdrom.
"""

import os

import pytest

from virt import images
from virt.bootfiles import resolve_boot_files
from virt.errors import ImageNotFound, InvalidParameter
from virt.imagestore import LocalImageStore


@pytest.fixture
def host(tmp_path):
    """(store, allowed directory with a kernel, an ISO and a link farm, a directory not allowed)."""
    store = LocalImageStore(str(tmp_path / "store"))
    kernel = tmp_path / "k.raw"
    kernel.write_bytes(b"\x7fELF-ish kernel" + b"\0" * 4096)
    store.import_image("vmlinuz", str(kernel), "raw")
    images.create_image("qcow2", str(tmp_path / "disk.qcow2"), "1M")
    store.import_image("disk", str(tmp_path / "disk.qcow2"), "qcow2")
    allowed = tmp_path / "kernels"
    allowed.mkdir()
    (allowed / "vmlinuz").write_bytes(b"kernel")
    (allowed / "install.iso").write_bytes(b"iso")
    (allowed / "sub").mkdir()
    os.symlink("/etc/shadow", allowed / "shadow-link")
    os.symlink("/dev/vda", allowed / "vda-link")
    os.symlink("vmlinuz", allowed / "current")
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret").write_text("host secret")
    return store, str(allowed), str(private)


@pytest.mark.parametrize("params, message", [
    ({"initrd_path": "/etc/shadow"}, "initrd_path'] '/etc/shadow': not inside a directory"),
    ({"cdrom_image_path": "/dev/vda"}, "cdrom_image_path'] '/dev/vda': not inside"),
    ({"kernel_path": "/dev/sda"}, "not inside"),
    ({"kernel_path": "ALLOWED/../private/secret"}, "not inside"),
    ({"kernel_path": "ALLOWED/shadow-link"}, "shadow-link': not inside"),
    ({"cdrom_image_path": "ALLOWED/vda-link"}, "vda-link': not inside"),
    ({"kernel_path": "PRIVATE/secret"}, "not inside"),
    ({"kernel_path": "ALLOWED"}, "not inside"),                  # the directory itself
    ({"kernel_path": "ALLOWED/sub"}, "not a regular file"),
    ({"kernel_path": "ALLOWED/missing"}, "No such file"),
    ({"kernel_path": "vmlinuz"}, "use an absolute path"),
    ({"kernel_path": "ALLOWED/vmlinuz\n"}, "use an absolute path without control"),
    ({"kernel_image": "disk"}, "kernel_image'] 'disk': the image is qcow2; import a kernel "
                               "with --format raw"),
    ({"cdrom_image": "../etc/shadow"}, "cdrom_image'] '../etc/shadow'"),
    ({"kernel_image": "vmlinuz", "kernel_path": "ALLOWED/vmlinuz"},
     "give kernel_image or kernel_path, not both"),
])
def test_host_files_are_refused(host, params, message):
    store, allowed, private = host
    params = {k: v.replace("ALLOWED", allowed).replace("PRIVATE", private)
              for k, v in params.items()}
    with pytest.raises(InvalidParameter) as err:
        resolve_boot_files(params, store, [allowed])
    assert message in str(err.value)


def test_a_block_device_inside_an_allowed_directory_is_refused(host):
    store, _, _ = host
    with pytest.raises(InvalidParameter, match="'/dev/null': not a regular file"):
        resolve_boot_files({"cdrom_image_path": "/dev/null"}, store, ["/dev"])


def test_without_allowed_directories_only_the_store_serves(host):
    store, allowed, _ = host
    with pytest.raises(InvalidParameter, match=r"\(none configured\)"):
        resolve_boot_files({"kernel_path": f"{allowed}/vmlinuz"}, store, [])
    assert resolve_boot_files({"kernel_image": "vmlinuz"}, store, []) == {
        "kernel_path": store.get("vmlinuz").path}


def test_allowed_files_resolve_to_their_canonical_path(host):
    store, allowed, _ = host
    params = {"kernel_path": f"{allowed}/current", "initrd_path": f"{allowed}/sub/../vmlinuz",
              "cdrom_image_path": f"{allowed}//install.iso", "kernel_args": "console=ttyS0"}
    assert resolve_boot_files(params, store, [allowed + "/"]) == {
        "kernel_path": f"{allowed}/vmlinuz", "initrd_path": f"{allowed}/vmlinuz",
        "cdrom_image_path": f"{allowed}/install.iso", "kernel_args": "console=ttyS0"}


def test_store_images_resolve_to_the_store_file_and_stay_valid(host):
    store, allowed, _ = host
    resolved = resolve_boot_files({"kernel_image": "vmlinuz", "cdrom_image": "vmlinuz"},
                                  store, [allowed])
    path = store.get("vmlinuz").path
    assert resolved == {"kernel_path": path, "cdrom_image_path": path}
    # A guest rebuilt from its definition carries the resolved path: still accepted.
    assert resolve_boot_files(resolved, store, [allowed]) == resolved
    with pytest.raises(ImageNotFound):
        resolve_boot_files({"initrd_image": "nothing"}, store, [allowed])
