"""The model repository: every model version under a folder, loaded, swapped and unloaded while serving.

A version (service.operations.versions) takes traffic only once it is loaded, checked against its manifest and
warmed up. Requests hold a lease on the version they started on, so a swap never cuts one short: a
replaced or retired version stops only when its last request has finished. Every version on disk
serves unless CVAE_KEEP_VERSIONS keeps only each name's newest that load (a request naming one left
out is told so). A version loaded by request is kept until unloaded by request, and the other way
round. A version that fails its checks never takes traffic: it is listed with the reason, and tried
again only when its files change. Loading holds no lock that requests wait on: a version is checked and
warmed up in a worker thread while the others answer; of two loads of one version, the later is kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from service.failures import ModelLoadError, NotServed
from service.operations.versions import (
    Version,
    fingerprint,
    not_found,
    not_ready,
    prepare,
    unserved,
    version_key,
    versions_on_disk,
)
from service.settings import SHIPPED_NAME, Settings

log = logging.getLogger("cvae.repository")


class Repository:
    def __init__(self, settings: Settings, open_engine: Callable):
        """`open_engine(model)` makes what answers a loaded model's requests and has `async stop()`
        (the app passes service.engine.inference.Inference.open)."""
        self.settings = settings
        self.open_engine = open_engine
        self.serving: dict[tuple[str, str], Version] = {}  # ready versions, and failed or loading ones
        self.updates: dict[tuple[str, str], Version] = {}  # a replacement loading or failed behind a ready one
        self.draining: set[Version] = set()
        self.pinned: set[tuple[str, str]] = set()  # loaded by request
        self.unloaded: set[tuple[str, str]] = set()  # unloaded by request
        self.held_back: set[tuple[str, str]] = set()  # on disk, left unserved by keep_versions
        self.refused: dict[str, str] = {}  # folders that are not versions, with the reason
        self._scanning = asyncio.Lock()  # one scan at a time; nothing else waits on it
        self._poller: asyncio.Task | None = None
        self._drains: set[asyncio.Task] = set()

    def discover(self) -> dict[tuple[str, str], Path]:
        """(name, version) -> directory for every version folder (service.operations.versions.versions_on_disk)."""
        found, self.refused = versions_on_disk(self.settings)
        return found

    def default_name(self) -> str | None:
        """CVAE_DEFAULT_MODEL, else the shipped model's name (mnist-cvae) or else the first name with a ready
        version (the first name while none is), so that a model added beside it never takes the default from it,
        and a model whose versions all fail never takes the default from one that serves."""
        if self.settings.default_model:
            return self.settings.default_model
        names = sorted({name for name, _ in (*self.serving, *self.updates)})
        ready = sorted({name for (name, _), entry in self.serving.items() if entry.state == "ready"})
        return SHIPPED_NAME if SHIPPED_NAME in ready else (ready or names or [None])[0]

    async def _load(self, key: tuple[str, str], path: Path) -> Version:
        """Load `path` as version `key`; it takes traffic only when ready, and only if no unload, removal or
        later load of `key` came meanwhile (then it is dropped, "unloaded"). Returns the new Version."""
        current = self.serving.get(key)
        candidate = Version(*key, path, fingerprint(path))
        if current is not None and current.state == "ready":
            self.updates[key] = candidate  # the current one serves until the candidate is ready
        else:
            self.serving[key] = candidate
        log.info("loading model %s version %s from %s", *key, path)
        try:
            model = await asyncio.to_thread(prepare, self.settings, key, path)
        except Exception as error:  # every failure keeps the version out of traffic, with its reason
            candidate.state = "failed"
            candidate.reason = str(error) if isinstance(error, ModelLoadError) else f"{type(error).__name__}: {error}"
            log.error("model %s version %s refused: %s", *key, candidate.reason)
        else:
            self._take_over(candidate, model)
        return candidate

    def _take_over(self, candidate: Version, model) -> None:
        """Let a loaded candidate take traffic in place of the version it replaces, if it is still wanted."""
        key = candidate.key
        if candidate is not self.serving.get(key) and candidate is not self.updates.get(key):
            candidate.state = "unloaded"
            log.info("model %s version %s loaded but dropped: unloaded, removed or loaded again meanwhile", *key)
            return
        candidate.inference = self.open_engine(model)
        candidate.state, candidate.loaded_at = "ready", time.time()
        self.updates.pop(key, None)
        previous = self.serving.get(key)
        self.serving[key] = candidate
        if previous is not None and previous is not candidate:
            self._retire(previous)
        log.info("model %s version %s ready on %s", *key, model.active_providers)

    def _retire(self, version: Version) -> None:
        """Take a version out of traffic; stop it once its requests have finished."""
        if self.serving.get(version.key) is version:
            del self.serving[version.key]
        if version.inference is None:
            version.state = "unloaded"
            return
        version.state = "unloading"
        self.draining.add(version)

        async def drain():
            await version.idle.wait()
            await version.inference.stop()
            version.state = "unloaded"
            self.draining.discard(version)
            log.info("model %s version %s unloaded", *version.key)

        task = asyncio.get_running_loop().create_task(drain())
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def refresh(self) -> None:
        """Bring what serves in line with the repository and the policy."""
        async with self._scanning:
            found = self.discover()
            limit, held_back = self.settings.keep_versions, set()
            by_name: dict[str, list[tuple[str, str]]] = {}
            for key in found:
                by_name.setdefault(key[0], []).append(key)
            for keys in by_name.values():
                ready = 0
                for key in sorted(keys, key=lambda k: version_key(k[1]), reverse=True):
                    if key in self.unloaded:
                        continue
                    current = self.serving.get(key)
                    if limit and ready >= limit and key not in self.pinned:
                        held_back.add(key)
                        if current is not None:
                            self.updates.pop(key, None)
                            self._retire(current)
                        continue
                    latest = self.updates.get(key) or current  # a failed try is retried only with new files
                    if latest is None or latest.fingerprint != fingerprint(found[key]):
                        await self._load(key, found[key])
                    serving = self.serving.get(key)
                    if serving is not None and serving.state == "ready" and key not in self.pinned:
                        ready += 1
            for key, version in list(self.serving.items()):
                if key not in found:
                    log.info("model %s version %s: its folder is gone", *key)
                    self._retire(version)
            for key in [k for k in self.updates if k not in found]:
                del self.updates[key]
            self.held_back = held_back

    @property
    def unserved(self) -> dict[tuple[str, str], str]:
        """Why each version on disk that serves no request does not (service.operations.versions.unserved)."""
        return unserved(self.held_back, self.settings.keep_versions, self.unloaded)

    async def load(self, name: str, version: str) -> Version:
        """Load (or reload from disk) one version by request, and keep it until it is unloaded by request."""
        key = (name, version)
        found = self.discover()
        if key not in found:
            raise not_found(name, version, found, self.unserved, "name")
        self.unloaded.discard(key)
        self.pinned.add(key)
        return await self._load(key, found[key])

    async def unload(self, name: str, version: str) -> Version:
        """Take one version out of traffic by request (a load under way is dropped); it stays unloaded until
        it is loaded by request."""
        current = self.serving.get((name, version))
        if current is None:
            raise not_found(name, version, self.serving, self.unserved, "name")
        self.pinned.discard((name, version))
        self.unloaded.add((name, version))
        self.updates.pop((name, version), None)
        self._retire(current)
        return current

    def resolve(self, name: str | None = None, version: str | None = None) -> Version:
        """The ready version a request gets: the named one, or the newest ready version of the model
        (the default model when none is named)."""
        name = name or self.default_name()
        versions = {v: entry for (n, v), entry in self.serving.items() if n == name}
        if version is not None:
            entry = versions.get(version)
            if entry is None:
                raise not_found(name, version, self.serving, self.unserved)
            if entry.state != "ready":
                raise not_ready(entry, "version", f"Model {name!r} ")
            return entry
        if not versions:
            raise not_found(name, None, self.serving, self.unserved)
        ready = [v for v, entry in versions.items() if entry.state == "ready"]
        if ready:
            return versions[max(ready, key=version_key)]
        loading = [entry for entry in versions.values() if entry.state == "loading"]
        newest = loading[0] if loading else versions[max(versions, key=version_key)]
        raise not_ready(newest, "model", f"Model {name!r} has no version ready: ")

    def acquire(self, name: str | None = None, version: str | None = None) -> Version:
        """The version for a request, kept loaded until `release`: raises NotServed when none can answer."""
        return self.hold(self.resolve(name, version))

    @staticmethod
    def hold(entry: Version) -> Version:
        """Count a request on a resolved version, so that it is not stopped before `release`."""
        entry.in_flight += 1
        entry.idle.clear()
        return entry

    def release(self, entry: Version) -> None:
        entry.in_flight -= 1
        if entry.in_flight == 0:
            entry.idle.set()

    @property
    def ready(self) -> bool:
        """Whether a request that names no model gets an answer."""
        try:
            self.resolve()
        except NotServed:
            return False
        return True

    def default_rule(self) -> str:
        """What a request naming no model or version gets, and what becomes the default when a version arrives."""
        chosen = (
            "CVAE_DEFAULT_MODEL"
            if self.settings.default_model
            else f"{SHIPPED_NAME!r} while it has a ready version, else the first name with one"
        )
        return (
            f"A request naming no model gets {self.default_name()!r} ({chosen}); one naming no version gets the "
            "newest ready version of its model, so a newer version becomes the default as soon as it is ready, "
            "and an older one added never does. Name ?version= to pin one."
        )

    def listing(self) -> list[dict]:
        default = self.default_name()
        answering = None  # the version a request naming none gets
        try:
            answering = self.resolve().key
        except NotServed:
            pass
        rows = []
        for key in sorted({*self.serving, *self.updates}, key=lambda k: (k[0], version_key(k[1]))):
            entry = self.serving.get(key) or self.updates[key]
            row = entry.describe() | {"default": key == answering, "default_model": key[0] == default}
            row["pinned"] = key in self.pinned
            update = self.updates.get(key)
            if update is not None and update is not entry:
                row["update"] = {"state": update.state, "reason": update.reason}
            rows.append(row)
        draining = {entry.key: entry for entry in self.draining if entry.key not in self.serving}
        for key, entry in sorted(draining.items()):
            rows.append(entry.describe() | {"default": False, "default_model": key[0] == default, "pinned": False})
        left_out = self.unserved
        for key in sorted(set(left_out) - set(self.serving) - set(draining), key=lambda k: (k[0], version_key(k[1]))):
            rows.append(
                {"model": key[0], "version": key[1], "state": "unloaded", "reason": left_out[key],
                 "in_flight": 0, "default": False, "default_model": key[0] == default, "pinned": False}
            )  # fmt: skip
        return rows

    async def start(self) -> None:
        """Load what the repository holds; fail when the default model has no version that loads."""
        await self.refresh()
        if not self.ready:
            failed = [f"{v.name} {v.version}: {v.reason}" for v in self.serving.values() if v.state == "failed"]
            raise ModelLoadError(
                f"No version of the default model {self.default_name()!r} could be loaded"
                + (f" ({'; '.join(failed)})" if failed else f": {self.settings.model_repository} holds none")
            )
        if self.settings.repository_poll_s > 0 and self.settings.model_dir is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.repository_poll_s)
            try:
                await self.refresh()
            except Exception:  # a bad scan must not stop the next one
                log.exception("scanning the model repository failed")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        for task in list(self._drains):
            task.cancel()
        for entry in [*self.serving.values(), *self.draining]:
            if entry.inference is not None:
                await entry.inference.stop()
