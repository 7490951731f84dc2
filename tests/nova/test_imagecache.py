"""Nova's image cache manager pass on this driver: unused Glance images go, used stay."""

from __future__ import annotations

import os
import time

# isort: off
# tests.nova.base first: it sets Nova's threading mode before Nova is imported.
from tests.nova.base import NovaTestCase
from nova import context as nova_context
# isort: on


class TestImageCache(NovaTestCase):

    def cache_pass(self):
        self.compute.manager._run_image_cache_manager_pass(nova_context.get_admin_context())

    def kept(self) -> set[str]:
        return self.compute.manager.driver.glance_images.present()

    def bases(self) -> list[str]:
        cache = self.compute.manager.driver.conf.images.cache_path
        return [n for n in os.listdir(cache) if not n.startswith(".")] \
            if os.path.isdir(cache) else []

    def post(self, image: str, flavor: str):
        return self.api.post_server({"server": self._build_server(
            image_uuid=image, flavor_id=flavor, networks="none")})

    def images_of(self, image_id: str) -> set[str]:
        props = self.glance.show(None, image_id)["properties"]
        return {image_id, props["kernel_id"], props["ramdisk_id"]}

    def test_unused_images_go_used_and_spawning_ones_stay(self):
        self.flags(remove_unused_original_minimum_age_seconds=0, group="image_cache")
        flavor = self.demo_flavor()
        used, other = self.upload_demo_guest(), self.upload_demo_guest()
        server = self.boot(used, flavor)
        self._delete_server(self.wait_for_status(self.post(other, flavor), "ACTIVE"))
        images = self.compute.manager.driver.glance_images
        self.assertEqual(self.images_of(used) | self.images_of(other), self.kept())

        # A spawn of `other` waits for the image's lock: the pass must leave its images.
        with images.lock(other):
            waiting = self.post(other, flavor)
            deadline = time.monotonic() + 60
            while not images.spawning(other):
                self.assertLess(time.monotonic(), deadline, "the spawn never started")
                time.sleep(0.05)
            self.cache_pass()
            self.assertEqual(self.images_of(used) | self.images_of(other), self.kept())
        self._delete_server(self.wait_for_status(waiting, "ACTIVE"))

        self.flags(remove_unused_base_images=False, group="image_cache")
        self.cache_pass()
        self.assertEqual(self.images_of(used) | self.images_of(other), self.kept())
        self.flags(remove_unused_base_images=True,
                   remove_unused_original_minimum_age_seconds=3600, group="image_cache")
        self.cache_pass()  # `other` was used by the last spawn moments ago
        self.assertEqual(self.images_of(used) | self.images_of(other), self.kept())

        self.flags(remove_unused_original_minimum_age_seconds=0, group="image_cache")
        self.cache_pass()
        self.assertEqual(self.images_of(used), self.kept())
        self.assertNotEqual([], self.bases())  # the running server's disk needs its base
        self.console(server)  # still running
        self._delete_server(server)
        self.cache_pass()
        self.assertEqual((set(), []), (self.kept(), self.bases()))
        self.assert_nothing_left()
