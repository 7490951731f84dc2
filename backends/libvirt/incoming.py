"""What the destination of a block migration prepares besides the empty overlay.

libvirt copies only the overlay (the base must already be here, the same
bytes) and no read-only disk, so two things come from elsewhere:

- the image, when this host's store lacks it: the source exports the chain
  (`image export`, virt/chain.py) and it is imported here through the
  store's untrusted path (inspection, relinking, validation) before the
  base is made from it like any other;
- a seeded guest's seed volume: rebuilt here from the source's record
  (seed.json), checked again as outside input and bound to the incoming
  instance, so that the domain's seed disk exists here and a hard reboot
  here rebuilds it.
"""

from __future__ import annotations

from typing import BinaryIO

from virt import seed
from virt.errors import ImageNotFound, InvalidParameter
from virt.imagestore import LocalImageStore, StoredImage
from virt.instancefiles import SEED_RECORD_FILE
from virt.objects import Instance


def import_missing_image(store: LocalImageStore, name: str, chain_file: BinaryIO,
                         max_size: int) -> bool:
    """Import the exported chain as image `name` unless the store has it; whether it did.

    An image the store has is used as it is and the chain is not read.
    """
    try:
        store.get(name)
        return False
    except ImageNotFound:
        pass
    from virt import chain  # only a migration with the chain route needs tarfile and gzip

    chain.import_chain(chain_file, store, name, max_size=max_size)
    return True


def check_same_image(image: StoredImage, digest: str | None) -> None:
    """Refuse a stored image unless it holds the source's bytes: libvirt would lay
    the source's overlay over another base, and the guest would read a disk that
    never existed. A chain's leaf names its parents, which differ per store, so
    only a single-file image can be compared; a chain comes again by --chain."""
    again = ("give the source's 'image export' as --chain with an --image name this "
             "host's store does not use")
    if digest is None:
        raise InvalidParameter(f"image {image.name} is in this host's store: give the "
                               "source's image digest ('image list --json' there) to prove "
                               f"it holds the same bytes, or {again}")
    if image.backing_chain:
        raise InvalidParameter(f"image {image.name} here is a chain: its bytes cannot be "
                               f"compared with the source's digest; {again}")
    if not image.has_digest(digest):
        raise InvalidParameter(f"image {image.name} here is not the source's: digest "
                               f"{image.digest[:30]}... here, {digest[:30]}... there; {again}")


def seed_plan(instance: Instance, record: str) -> seed.SeedPlan:
    """The source's seed record checked again, and refused unless it is this instance's."""
    plan = seed.SeedPlan.from_record(record)
    if (plan.name, plan.instance_id) != (instance.name, instance.uuid):
        raise InvalidParameter(
            f"seed record of {plan.name} ({plan.instance_id}), not of the incoming "
            f"{instance.name} ({instance.uuid}): give the {SEED_RECORD_FILE} of the instance "
            "that migrates")
    return plan
