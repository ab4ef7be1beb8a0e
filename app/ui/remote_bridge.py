"""Models served elsewhere in the chat: the remote models the endpoints offer (listed off the GUI thread),
and a bridge over whichever one is loaded, with the same signals as the engine's (EngineBridge)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import QComboBox

from app.errors import AppError, ErrorKind
from app.remote.endpoints import PREFIX, Endpoint, EndpointStore, RemoteModel
from app.runtime.protocol import Event, GenerateRequest, LoadedModel, LoadParams
from app.ui.engine_bridge import Bridge

if TYPE_CHECKING:
    from app.remote.engine import RemoteEngine

log = logging.getLogger(__name__)
# Request ids of remote replies start here, so that a late chunk of a local reply (ids from 1) can never
# pass for one of a remote reply, and the other way round. Signals carry a C int: below 2**31.
FIRST_REMOTE_ID = 1 << 30
SHUTDOWN_S = 1.0  # a remote reply stops at once (its stream is closed); above the bridge's kill reserve


def is_remote(spec: str | None) -> bool:
    return bool(spec) and str(spec).startswith(PREFIX)


def remote_label(model: LoadedModel) -> str:
    """remote:NAME/MODEL_ID of a loaded remote model, exactly (its path folds a model id's '//')."""
    return f"{PREFIX}{str(model.path).removeprefix(PREFIX).partition('/')[0]}/{model.name}"


def shown_name(spec: str) -> str:
    """`remote:NAME/MODEL` as the picker shows it: 'remote: NAME/MODEL'."""
    return f"remote: {spec.removeprefix(PREFIX)}"


def offer_remote(picker: QComboBox, offers: list[Offer]) -> None:
    """Put `offers` in a model picker after its local models, marked as remote; an endpoint that cannot
    be reached is shown unavailable (not selectable, the reason in its tooltip). The choice stays."""
    chosen = picker.currentData()
    for index in reversed(range(picker.count())):
        if is_remote(picker.itemData(index)):
            picker.removeItem(index)
    items = picker.model()
    assert isinstance(items, QStandardItemModel)
    for offer in offers:
        picker.addItem(shown_name(offer.spec) + (" (unavailable)" if offer.problem else ""), offer.spec)
        item = items.item(picker.count() - 1)
        item.setToolTip(offer.problem or f"Served by {offer.where}")
        item.setEnabled(not offer.problem)
    if chosen is not None and (index := picker.findData(chosen)) >= 0:
        picker.setCurrentIndex(index)


def unavailable_reason(picker: QComboBox) -> str:
    """Why the remote model chosen in `picker` cannot be used now ("" when it can)."""
    items, index = picker.model(), picker.currentIndex()
    if isinstance(items, QStandardItemModel) and index >= 0 and not items.item(index).isEnabled():
        return items.item(index).toolTip()
    return ""


@dataclass(frozen=True)
class Offer:
    """A remote model the picker offers, or (with a problem) an endpoint that cannot be reached now."""

    spec: str  # remote:NAME/MODEL_ID, or remote:NAME when unavailable
    where: str  # the endpoint's URL
    problem: str = ""


def list_offers(store: EndpointStore) -> list[Offer]:
    """Every endpoint's models, asked at once (one unreachable endpoint costs its timeout, not the sum)."""
    endpoints = store.all()
    found: list[list[Offer]] = [[] for _ in endpoints]

    def ask(number: int, endpoint: Endpoint) -> None:
        found[number] = _offers_of(store, endpoint)

    # Daemon threads, not an executor: Python joins an executor's threads at exit (a silent server: 30 s).
    askers = [threading.Thread(target=ask, args=pair, daemon=True) for pair in enumerate(endpoints)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join()
    return [offer for offers in found for offer in offers]


def _offers_of(store: EndpointStore, endpoint: Endpoint) -> list[Offer]:
    try:
        ids = endpoint_models(store, endpoint, None)
    except AppError as exc:
        log.info("endpoint %s unavailable: %s", endpoint.name, exc.user_message)
        return [Offer(f"{PREFIX}{endpoint.name}", endpoint.url, exc.user_message)]
    return [Offer(f"{PREFIX}{endpoint.name}/{model_id}", endpoint.url) for model_id in ids]


def endpoint_models(store: EndpointStore, endpoint: Endpoint, typed_key: str | None) -> list[str]:
    """The models `endpoint` offers (GET /models), with the key typed or the one kept for it."""
    from app.remote.client import Client  # requests: loaded when an endpoint is first asked, not at start

    key = typed_key or store.api_key(endpoint)
    client = Client(RemoteModel(endpoint, "", key))
    try:
        return client.models()
    finally:
        client.close()


class RemoteEngines:
    """Engine's calls over the remote model loaded now. `load` resolves remote:NAME/MODEL (the key read
    from the keyring or the environment) and asks the endpoint for the model: in the bridge's thread."""

    def __init__(self, store: EndpointStore) -> None:
        self.store = store
        self.current: RemoteEngine | None = None
        self._ids = itertools.count(FIRST_REMOTE_ID)
        self._given_up = threading.Event()  # a load under way is abandoned (Cancel, quit)
        self.wanted = ""  # the remote:NAME/MODEL_ID to load, exactly (a Path would fold its '//')

    @property
    def model(self) -> LoadedModel | None:
        return self.current.model if self.current else None

    @model.setter
    def model(self, value: LoadedModel | None) -> None:
        pass  # the remote engine keeps its own

    @property
    def alive(self) -> bool:
        return self.current is not None

    def load(self, params: LoadParams) -> LoadedModel:
        """Ask the endpoint for the model in a daemon thread and wait for it or for `kill` (Cancel, quit):
        a server that accepts and never answers holds no thread the window must wait for."""
        from app.remote.engine import RemoteEngine

        self.unload()
        self._given_up.clear()
        answer: queue.Queue[LoadedModel | Exception] = queue.Queue()
        engine = RemoteEngine(self.store.resolve(self.wanted or str(params.model_path)))

        def ask() -> None:
            try:
                answer.put(engine.load())
            except Exception as exc:  # handed to the bridge's thread below
                answer.put(exc)

        threading.Thread(target=ask, name="remote-load", daemon=True).start()
        while not self._given_up.is_set():
            try:
                got = answer.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(got, Exception):
                raise got
            self.current = engine
            return got
        raise AppError(ErrorKind.NETWORK, "The remote model was not loaded (cancelled).")

    def generate(self, request: GenerateRequest) -> Iterator[Event]:
        if self.current is None:
            raise AppError(ErrorKind.BAD_INPUT, "Load a remote model first.")
        return self.current.generate(request)

    def new_request_id(self) -> int:
        return next(self._ids)

    def stop(self, request_id: int | None = None) -> None:
        if self.current is not None:
            self.current.stop(request_id)

    def unload(self) -> None:
        engine, self.current = self.current, None
        if engine is not None:
            engine.close()

    def kill(self) -> None:
        self._given_up.set()
        self.stop()

    def close(self, timeout_s: float = 0.0) -> None:
        self._given_up.set()
        self.unload()


class RemoteModels(QObject):
    """The chat's remote side: a bridge for replies and the offers of every endpoint, listed again on
    `refresh` (at start, and after the endpoints changed)."""

    offers_changed = Signal(object)  # list[Offer]
    _listed = Signal(int, object)  # listing number, list[Offer]: from the listing's thread

    def __init__(self, store: EndpointStore, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.engines = RemoteEngines(store)
        self.bridge = Bridge(self.engines)
        self._asked = 0  # newest listing wins
        self._listed.connect(self._on_listed)

    def refresh(self) -> None:
        """List the endpoints' models again, in a daemon thread: an endpoint that accepts and never
        answers (30 s) must not hold the quit, as a pool thread would."""
        self._asked += 1
        number = self._asked

        def listing() -> None:
            try:
                offers = list_offers(self.store)
            except Exception:  # the file unreadable: no remote models offered, the chat goes on
                log.exception("listing the endpoints' models failed")
                offers = []
            with contextlib.suppress(RuntimeError):  # the window closed meanwhile
                self._listed.emit(number, offers)

        threading.Thread(target=listing, name="remote-offers", daemon=True).start()

    @Slot(int, object)
    def _on_listed(self, number: int, offers: list[Offer]) -> None:
        if number == self._asked:
            self.offers_changed.emit(offers)

    def load(self, spec: str) -> None:
        self.engines.wanted = spec  # read by the bridge's thread after the load signal reaches it
        self.bridge.load(LoadParams(Path(spec)))

    def shutdown(self) -> None:
        self.bridge.shutdown(SHUTDOWN_S)
