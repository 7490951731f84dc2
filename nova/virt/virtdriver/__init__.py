"""Nova loads compute drivers from nova.virt: this names virt-driver's for it."""

from backends.nova.driver import VirtDriverComputeDriver

__all__ = ["VirtDriverComputeDriver"]
