"""The contract every backend keeps: same inputs, same meaning, same errors, same states.

Run once per backend (see conftest.py): libvirt on test:///default, libvirt
on the real daemon with the demo guest, xm on the toolstack double.
"""

from __future__ import annotations

import pytest

from virt import capabilities, images
from virt import params as contract
from virt.errors import (
    InstanceNotFound,
    InvalidParameter,
    InvalidState,
    NotSupported,
    SpawnError,
)
from virt.objects import NIC, GuestKind, PowerState


def _calls(driver, instance):
    """Each method of capabilities.METHODS, called with arguments it accepts."""
    return {
        "snapshot": lambda: driver.snapshot(instance, "ct-snap"),
        "attach_volume": lambda: driver.attach_volume(instance, "ct-volume"),
        "detach_volume": lambda: driver.detach_volume(instance, "vdb"),
        "attach_interface": lambda: driver.attach_interface(instance, NIC("52:54:00:c7:00:02")),
        "detach_interface": lambda: driver.detach_interface(instance, instance.nics[0].mac),
        "pause": lambda: driver.pause(instance),
        "unpause": lambda: driver.unpause(instance),
        "suspend": lambda: driver.suspend(instance),
        "resume": lambda: driver.resume(instance),
        "get_console_output": lambda: driver.get_console_output(instance),
        "get_console_command": lambda: driver.get_console_command(instance),
        "resize": lambda: driver.resize(instance, vcpus=2),
    }


def test_a_capability_is_false_exactly_when_its_methods_raise_not_supported(backend):
    caps = backend.driver.capabilities
    calls = _calls(backend.driver, backend.instance("absent"))
    assert set(calls) == {m for methods in capabilities.METHODS.values() for m in methods}
    for capability, methods in capabilities.METHODS.items():
        for method in methods:
            try:
                calls[method]()
            except NotSupported:
                assert not getattr(caps, capability), f"{method} refused, {capability} True"
            except (InstanceNotFound, InvalidParameter, InvalidState):
                assert getattr(caps, capability), f"{method} tried, {capability} False"
            else:
                assert getattr(caps, capability), f"{method} worked, {capability} False"


def test_capabilities_describe_the_backend(backend):
    caps = backend.driver.capabilities
    assert caps.guest_kinds == frozenset(GuestKind)
    assert caps.seed_formats == {"nocloud", "configdrive"}
    assert caps.pause and caps.console_command and caps.live_migration
    for name, kinds in caps.params.items():
        assert kinds <= contract.BY_NAME[name].kinds, name


def test_unknown_params_are_refused_listing_the_known_ones(backend):
    for typo in ("kernle_path", "cpus", "vnc_passwd"):
        instance = backend.instance("typo", **{typo: "x"})
        for call in (backend.driver.describe_spawn, backend.driver.spawn):
            with pytest.raises(InvalidParameter, match=rf"params\['{typo}'\] is not a known "
                                                       r"param: use one of .*use_localtime"):
                call(instance, backend.image)
        assert not backend.driver.instance_exists(instance)
    with pytest.raises(InvalidParameter, match="pass use_localtime instead"):
        backend.driver.spawn(backend.instance("old", localtime="true"), backend.image)
    with pytest.raises(InvalidParameter, match="is not a known param for hvm guests"):
        backend.driver.spawn(backend.instance("pv-only", root_path="/dev/xvda1"), backend.image)
    assert backend.driver.list_instances() == []


def test_a_param_the_backend_cannot_honour_is_not_supported(backend, param_samples):
    honoured = backend.driver.capabilities.params
    refused = [p.name for p in contract.PARAMS
               if GuestKind.HVM in p.kinds and GuestKind.HVM not in honoured.get(p.name, ())]
    assert refused  # neither backend expresses every param
    for name in refused:
        instance = backend.instance("unsupported", **{name: param_samples[name]})
        with pytest.raises(NotSupported, match=rf"params\['{name}'\]: the \w+ backend cannot"):
            backend.driver.describe_spawn(instance, backend.image)
    first = refused[0]
    with pytest.raises(NotSupported):
        backend.driver.spawn(backend.instance("unsupported", **{first: param_samples[first]}),
                             backend.image)
    assert backend.driver.list_instances() == []


@pytest.mark.parametrize("params, message", [
    ({"on_crash": "explode"}, r"params\['on_crash'\] 'explode': use one of destroy"),
    ({"use_localtime": "maybe"}, r"params\['use_localtime'\] 'maybe': use true or false"),
    ({"boot_order": "cc"}, r"params\['boot_order'\] 'cc': use one or more of a, c, d, n"),
    ({"vnc_bind_address": "0.0.0.0"}, r"params\['vnc_bind_address'\] '0.0.0.0': VNC beyond "
                                      r"loopback needs a password"),
])
def test_bad_params_raise_invalid_parameter_never_a_spawn_error(backend, params, message):
    instance = backend.instance("bad", **params)
    with pytest.raises(InvalidParameter, match=message) as exc:
        backend.driver.spawn(instance, backend.image)
    assert not isinstance(exc.value, SpawnError)
    assert not backend.driver.instance_exists(instance)
    assert backend.driver.list_instances() == []


def test_a_spawned_guest_means_the_same_everywhere(backend):
    instance = backend.instance("same", use_localtime="true", on_crash="preserve")
    backend.driver.spawn(instance, backend.image)
    assert backend.driver.list_instances() == [instance.name]
    assert backend.driver.instance_exists(instance)
    info = backend.driver.get_info(instance)
    assert info.state in backend.up
    assert (info.max_mem_kb, info.num_cpu) == (instance.flavor.memory_mb * 1024, 1)
    back = backend.driver.get_instance(instance.name)
    assert (back.name, back.uuid, back.kind, back.flavor, back.image) == (
        instance.name, instance.uuid, instance.kind, instance.flavor, instance.image)
    assert {k: back.params.get(k) for k in ("use_localtime", "on_crash")} == {
        "use_localtime": "true", "on_crash": "preserve"}
    assert [nic.mac for nic in back.nics] == [backend.mac]


def test_root_gb_0_means_the_image_size(backend):
    instance = backend.instance("root0", root_gb=0)
    backend.driver.spawn(instance, backend.image)
    assert backend.driver.get_info(instance).state in backend.up
    backend.driver.power_off(instance, timeout=0)  # a running QEMU holds the disk's lock
    disk = backend.driver.instance_files(instance).disk
    assert images.info(disk, "qcow2").virtual_size == backend.image_size


def test_reboot_soft_then_hard_when_the_soft_one_is_not_seen(backend):
    instance = backend.instance("reboot")
    backend.driver.spawn(instance, backend.image)
    first = backend.driver.get_info(instance).id
    backend.driver.reboot(instance)
    assert backend.driver.get_info(instance).state in backend.up
    assert backend.driver.get_info(instance).id != first
    backend.driver.destroy(instance)

    deaf = backend.instance("deaf", deaf=True)
    backend.driver.spawn(deaf, backend.image)
    first = backend.driver.get_info(deaf).id
    backend.driver.reboot(deaf)  # the soft reboot is not seen: a hard one follows
    assert backend.driver.get_info(deaf).state in backend.up
    assert backend.driver.get_info(deaf).id != first


def test_a_stopped_guest_is_there_until_destroyed_and_destroy_is_idempotent(backend):
    instance = backend.instance("stopped")
    backend.driver.destroy(instance)  # never spawned: nothing to do
    backend.driver.spawn(instance, backend.image)
    backend.driver.power_off(instance, timeout=0)
    assert backend.driver.instance_exists(instance)
    assert backend.driver.list_instances() == [instance.name]
    info = backend.driver.get_info(instance)
    assert (info.state, info.max_mem_kb, info.num_cpu) == (
        PowerState.SHUTOFF, instance.flavor.memory_mb * 1024, 1)
    assert backend.driver.get_instance(instance.name).uuid == instance.uuid
    backend.driver.power_off(instance)  # off already: nothing to do
    with pytest.raises(InvalidState, match="while it is shutoff"):
        backend.driver.pause(instance)
    backend.driver.reboot(instance)  # a stopped guest is started
    assert backend.driver.get_info(instance).state in backend.up
    backend.driver.power_off(instance, timeout=0)
    backend.driver.power_on(instance)
    assert backend.driver.get_info(instance).state in backend.up

    backend.driver.destroy(instance)
    backend.driver.destroy(instance)
    assert not backend.driver.instance_exists(instance)
    assert backend.driver.list_instances() == []
    for call in (backend.driver.get_info, backend.driver.power_off, backend.driver.power_on,
                 backend.driver.pause, backend.driver.reboot):
        with pytest.raises(InstanceNotFound):
            call(instance)
    with pytest.raises(InstanceNotFound):
        backend.driver.get_instance(instance.name)
