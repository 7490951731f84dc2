"""Live and block migration of one domain, steered while it runs.

libvirt does the copying (peer-to-peer: the source libvirtd talks to the
destination's); this module chooses the flags, rewrites what the destination
must see differently (the owner and instance paths, through the destination
XML), watches the job for progress, applies the completion-timeout policy
(auto-converge from the start, then post-copy or abort), honours an abort
request, and reads the figures of the finished job from the destination.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import libvirt
from lxml import etree

from virt.domain import METADATA_NS

LOG = logging.getLogger(__name__)

POLL_INTERVAL = 0.2
EVENT_WAIT = 2.0   # seconds the JOB_COMPLETED event may trail the call's return
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


class TimeoutAction(enum.Enum):
    ABORT = "abort"
    POSTCOPY = "postcopy"


@dataclass(frozen=True)
class MigrationPolicy:
    """How a migration that does not finish in time is handled."""

    completion_timeout: float = 0.0          # seconds; 0: no limit
    timeout_action: TimeoutAction = TimeoutAction.ABORT
    auto_converge: bool = True
    max_bandwidth_mib: int = 0               # MiB/s; 0: as fast as the link goes

    @classmethod
    def from_conf(cls, conf) -> MigrationPolicy:
        lv = conf.libvirt
        return cls(completion_timeout=float(lv.migration_completion_timeout),
                   timeout_action=TimeoutAction(lv.migration_timeout_action),
                   auto_converge=lv.migration_auto_converge,
                   max_bandwidth_mib=lv.migration_max_bandwidth)


@dataclass(frozen=True)
class MigrationResult:
    """libvirt's figures for a finished migration (None where it gave none)."""

    time_elapsed_ms: int | None
    downtime_ms: int | None
    data_processed: int | None
    memory_iterations: int | None
    postcopy: bool
    wall_seconds: float


class MigrationAborted(Exception):
    """The migration was aborted (on request or at the timeout); the guest stayed."""


# Flags every migration uses: libvirtd to libvirtd, defined only on the destination.
BASE_FLAGS = (libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
              | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)


def migration_flags(live: bool = True, block: bool = False,
                    policy: MigrationPolicy | None = None, offline: bool = False) -> int:
    """The flags for a migration; block copies the overlay only (the base must be there).

    offline: a stopped guest, of which only the definition moves (libvirt
    copies no disk then, so it cannot be a block migration).
    """
    policy = policy or MigrationPolicy()
    flags = BASE_FLAGS
    if offline:
        if block:
            raise ValueError("an offline migration copies no disk: it cannot be a block one")
        return flags | libvirt.VIR_MIGRATE_OFFLINE
    if live:
        flags |= libvirt.VIR_MIGRATE_LIVE
        if policy.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if policy.timeout_action is TimeoutAction.POSTCOPY:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY   # allows the switch; does not start it
    if block:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
    return flags


def relocated_xml(domain_xml: str, source_dir: str, dest_dir: str) -> str:
    """The domain XML with every path under source_dir moved under dest_dir.

    That covers the disks, the console log and the owner in the metadata (the
    owner is the instances path itself), so the destination's driver owns the
    guest and finds its files in its own instances path.
    """
    source_dir, dest_dir = source_dir.rstrip("/"), dest_dir.rstrip("/")
    root = etree.fromstring(domain_xml.encode(), _PARSER)

    def moved(value: str) -> str:
        if value == source_dir or value.startswith(source_dir + "/"):
            return dest_dir + value[len(source_dir):]
        return value

    for element in root.iter(tag=etree.Element):
        for key, value in element.attrib.items():
            element.set(key, moved(value))
        if element.text and element.tag == f"{{{METADATA_NS}}}owner":
            element.text = moved(element.text.strip())
    return etree.tostring(root, encoding="unicode")


def progress_of(info: list[int]) -> float | None:
    """Fraction done from virDomainGetJobInfo's list; None when it tells nothing yet.

    Memory copying repeats while the guest dirties pages: processed/(processed
    + remaining) keeps the bar moving forwards instead of jumping back.
    """
    if not info or info[0] == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    processed, remaining = info[4], info[5]
    if processed + remaining <= 0:
        return None
    return processed / (processed + remaining)


class Migration:
    """One migration of `dom` to `dest_uri`: run() blocks; abort() may come from any thread."""

    def __init__(self, dom: libvirt.virDomain, dest_uri: str, flags: int,
                 policy: MigrationPolicy, dest_xml: str | None = None,
                 persist_xml: str | None = None,
                 progress: Callable[[float], None] | None = None):
        self.dom = dom
        self.dest_uri = dest_uri
        self.flags = flags
        self.policy = policy
        self.dest_xml = dest_xml
        self.persist_xml = persist_xml
        self.progress = progress
        self._abort = threading.Event()
        self.aborted_because: str | None = None
        self.postcopy = False
        self._unwatch: Callable[[], object] = lambda: None

    def abort(self) -> None:
        self._abort.set()

    def run(self) -> MigrationResult:
        """Migrate; MigrationAborted on abort or timeout, libvirtError on failure."""
        params: dict = {}
        if self.dest_xml:
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = self.dest_xml
        if self.persist_xml:
            params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = self.persist_xml
        if self.policy.max_bandwidth_mib:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = self.policy.max_bandwidth_mib
        outcome: dict[str, BaseException | None] = {"error": None}

        finished = threading.Event()

        def work() -> None:
            try:
                self.dom.migrateToURI3(self.dest_uri, params, self.flags)
            except BaseException as e:  # handed to the caller's thread
                outcome["error"] = e
            finally:
                finished.set()

        completed = self._watch_completion()
        started = time.monotonic()
        threading.Thread(target=work, name="migration", daemon=True).start()
        # Event.wait, not Thread.join: a join interrupted by Ctrl-C can report a
        # live thread as finished (CPython bpo-45274)
        while not finished.is_set():
            try:
                if not finished.wait(POLL_INTERVAL):
                    self._steer(time.monotonic() - started)
            except KeyboardInterrupt:  # Ctrl-C on a terminal: abort, then report it
                self.abort()
        wall = time.monotonic() - started
        try:
            error = outcome["error"]
            if error is not None:
                if self.aborted_because:
                    raise MigrationAborted(self.aborted_because) from None
                raise error
            if self.progress:
                self.progress(1.0)
            return self._result(wall, completed)
        finally:
            self._stop_watching()

    def _steer(self, elapsed: float) -> None:
        """One look at the job: progress, abort request, timeout policy."""
        try:
            if self.progress and (done := progress_of(self.dom.jobInfo())) is not None:
                self.progress(min(done, 0.99))
            if self._abort.is_set() and not self.aborted_because:
                self._stop("aborted on request")
            limit = self.policy.completion_timeout
            if limit and elapsed > limit and not self.aborted_because and not self.postcopy:
                if self.policy.timeout_action is TimeoutAction.POSTCOPY:
                    LOG.info("migration of %s past %gs: switching to post-copy",
                             self.dom.name(), limit)
                    self.dom.migrateStartPostCopy()
                    self.postcopy = True
                else:
                    self._stop(f"completion timeout of {limit:g}s reached")
        except libvirt.libvirtError as e:  # the job may end between two looks
            LOG.debug("migration job of %s: %s", self.dom.name(), e.get_error_message())

    def _stop_watching(self) -> None:
        try:
            self._unwatch()
        except libvirt.libvirtError:
            pass  # the connection went: so did the callback

    def _stop(self, reason: str) -> None:
        self.aborted_because = reason
        self.dom.abortJob()

    def _watch_completion(self) -> tuple[threading.Event, dict]:
        """The source's JOB_COMPLETED event: the only figures a post-copy leaves."""
        heard, stats = threading.Event(), {}
        uuid = self.dom.UUIDString()

        def on_completed(_conn, dom, params, _opaque) -> None:
            if dom.UUIDString() == uuid:
                stats.update(params)
                heard.set()
        conn = self.dom.connect()
        try:
            callback = conn.domainEventRegisterAny(
                self.dom, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, on_completed, None)
            self._unwatch = lambda: conn.domainEventDeregisterAny(callback)
        except libvirt.libvirtError as e:  # no event loop here: the destination's copy then
            LOG.debug("no job events for %s: %s", self.dom.name(), e.get_error_message())
        return heard, stats

    def _result(self, wall: float, completed: tuple[threading.Event, dict]) -> MigrationResult:
        heard, stats = completed
        if self.flags & libvirt.VIR_MIGRATE_OFFLINE:
            stats = {}  # no job ran: only the definition moved
        elif not heard.wait(EVENT_WAIT):
            stats = completed_stats(self.dest_uri, self.dom.UUIDString())
        return MigrationResult(
            time_elapsed_ms=stats.get("time_elapsed"), downtime_ms=stats.get("downtime"),
            data_processed=stats.get("data_processed"),
            memory_iterations=stats.get("memory_iteration"), postcopy=self.postcopy,
            wall_seconds=round(wall, 3))


def completed_stats(dest_uri: str, uuid: str) -> dict:
    """The finished job's statistics as the destination keeps them ({} if unreadable).

    The source domain is undefined by then; the destination's copy holds the
    completed job, downtime included.
    """
    try:
        conn = libvirt.open(dest_uri)
    except libvirt.libvirtError as e:
        LOG.warning("cannot read migration statistics from %s: %s", dest_uri,
                    e.get_error_message())
        return {}
    try:
        return conn.lookupByUUIDString(uuid).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError as e:
        LOG.warning("cannot read migration statistics from %s: %s", dest_uri,
                    e.get_error_message())
        return {}
    finally:
        conn.close()
