"""The exception hierarchy: every error the driver raises is a VirtError.

Messages say what was wrong and what to do; the CLI prints them as one line.
"""


class VirtError(Exception):
    """Base of every error virt-driver raises on purpose."""


class InvalidParameter(VirtError):
    """A caller-supplied value is malformed or out of range."""


class InvalidConfig(VirtError):
    """A configuration value is malformed; the message names the option."""


class ImageError(VirtError):
    """A qemu-img operation failed; carries the command's stderr."""

    def __init__(self, message: str, stderr: str = "", exit_code: int | None = None,
                 stdout: str = ""):
        self.stderr = stderr.strip()
        self.exit_code = exit_code
        self.stdout = stdout
        super().__init__(f"{message}: {self.stderr}" if self.stderr else message)


class UnsafeImage(ImageError):
    """An image from outside breaks a safety rule and must not be used."""

    def __init__(self, message: str):
        super().__init__(message)


class ImageNotFound(VirtError):
    """No image of that name in the store."""


class InstanceNotFound(VirtError):
    """No instance of that name on this host."""


class InstanceExists(VirtError):
    """An instance of that name is already defined."""


class InvalidState(VirtError):
    """The instance is not in a state that allows the operation."""


class SpawnError(VirtError):
    """A spawn step failed; whatever the spawn had created was removed."""

    def __init__(self, step: str, reason: str):
        self.step = step
        super().__init__(f"spawn failed at step '{step}': {reason}")


class HypervisorError(VirtError):
    """The hypervisor (libvirt or the Xen toolstack) refused or failed."""


class ToolstackError(HypervisorError):
    """The xm/xl toolstack failed or printed something unparsable."""


class BackendUnavailable(VirtError):
    """No backend can serve the configured virt_type on this host."""


class Timeout(VirtError):
    """An operation did not finish within its bound."""


class MigrationFailed(HypervisorError):
    """A migration failed or was stopped; the guest still runs on the source."""


class NotSupported(VirtError):
    """The backend cannot do this operation."""
