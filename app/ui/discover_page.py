"""The Discover page: search the Hub's GGUF repos, see a repo's variants with fit verdicts, its card and
chat template. The widgets are in app.ui.discover; this page wires them and runs every Hub call off the
GUI thread. The newest request wins; failures are a banner over the last results saved.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Slot
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QSplitter, QVBoxLayout, QWidget

from app.errors import AppError
from app.hub.client import HubClient, ModelDetails, ModelSummary, SearchPages
from app.hub.fit import Machine
from app.hub.quants import Variant
from app.hub.token import save_token
from app.runtime.gguf_header import GGUFHeader
from app.runtime.memory import free_ram
from app.ui.background import Background
from app.ui.discover.banner import Banner
from app.ui.discover.details import DetailsPanel
from app.ui.discover.results import ResultsList
from app.ui.discover.search_bar import SearchBar

ROWS_PER_FETCH = 100


class DiscoverPage(QWidget):
    def __init__(
        self,
        client_factory: Callable[[], HubClient],
        background: Background,
        download: Callable[[HubClient, ModelDetails, Variant], None],
    ) -> None:
        super().__init__()
        self.download = download
        self.client_factory = client_factory
        self.client = client_factory()
        self.background = background
        # Free RAM now (a file read); the GPU's memory (nvidia-smi, a process) is asked for off this thread.
        self.machine = Machine(free_ram(), None)
        self.pages: SearchPages | None = None
        self.search_serial = 0  # the newest search; answers to older ones are dropped
        self.token_serial = 0  # the newest token entered: the one kept
        self._token_lock = threading.Lock()  # one keyring write at a time
        self.details_serial = 0

        self.search_bar = SearchBar()
        self.search_bar.changed.connect(self.search)
        self.search_bar.token_entered.connect(self.set_token)
        self.banner = Banner()
        self.banner.retry_clicked.connect(self.search)
        self.result_list = ResultsList()
        self.result_list.more_requested.connect(self._fetch_more)
        self.result_list.model_chosen.connect(self.open_model)
        self.details_panel = DetailsPanel(self.machine)
        self.details_panel.download_wanted.connect(self._download)
        splitter = QSplitter()
        splitter.addWidget(self.result_list)
        splitter.addWidget(self.details_panel)
        splitter.setSizes([700, 600])
        layout = QVBoxLayout(self)
        layout.addWidget(self.search_bar)
        layout.addWidget(self.banner)
        layout.addWidget(splitter, 1)

        # The parts under the names the window and the tests have always used.
        self.search_box = self.search_bar.search_box
        self.sort = self.search_bar.sort
        self.min_params = self.search_bar.min_params
        self.max_params = self.search_bar.max_params
        self.architecture = self.search_bar.architecture
        self.fits_only = self.search_bar.fits_only
        self.gated = self.search_bar.gated
        self.banner_text = self.banner.text
        self.results = self.result_list.results
        self.results_view = self.result_list.results_view
        self.status = self.result_list.status
        self.title = self.details_panel.title
        self.facts = self.details_panel.facts
        self.context = self.details_panel.context
        self.context_label = self.details_panel.context_label
        self.variants = self.details_panel.variants
        self.variants_view = self.details_panel.variants_view
        self.estimate_note = self.details_panel.estimate_note
        self.card = self.details_panel.card
        self.template = self.details_panel.template
        self.link_bar = self.details_panel.link_bar
        self.link_text = self.link_bar.text

    @property
    def details(self) -> ModelDetails | None:
        return self.details_panel.details

    @property
    def header(self) -> GGUFHeader | None:
        return self.details_panel.header

    # --- search ------------------------------------------------------------------------------------
    @Slot()
    def search(self) -> None:
        self.search_bar.cancel_typing()
        self.search_serial += 1
        serial = self.search_serial
        if self.pages is not None:
            self.pages.cancel()  # the newest search wins: the one it replaces stops asking the Hub
        pages = self.client.search(self.search_bar.query(self.machine))
        self.pages = pages
        self.results.loading = True
        self.status.setText("Searching…")
        self.background.run(
            lambda: pages.next(ROWS_PER_FETCH), lambda rows, error: self._found(serial, rows, error)
        )

    def _found(self, serial: int, rows: list[ModelSummary] | None, error: AppError | None) -> None:
        if serial != self.search_serial or self.pages is None:
            return  # an older search: the newest wins
        if error is not None:
            self.results.loading = False
            self.banner.show_message(error.user_message)
            self.status.setText("")
            return
        if self.pages.stale:
            self.banner.show_message(
                "Can't reach the Hub (offline?). These are the results saved the last time."
            )
        else:
            self.banner.hide()
        self.results.reset(rows or [], not self.pages.done, self.pages.capped)
        self.result_list.show_count()

    @Slot()
    def _fetch_more(self) -> None:
        pages, serial = self.pages, self.search_serial
        if pages is None:
            return
        self.status.setText("Loading more…")
        self.background.run(
            lambda: pages.next(ROWS_PER_FETCH), lambda rows, error: self._more(serial, rows, error)
        )

    def _more(self, serial: int, rows: list[ModelSummary] | None, error: AppError | None) -> None:
        if serial != self.search_serial or self.pages is None:
            return
        if error is not None:  # nothing more is asked until the user searches again (Retry)
            self.results.append([], False)
            self.result_list.show_count()
            self.banner.show_message(error.user_message)
            return
        self.results.append(rows or [], not self.pages.done, self.pages.capped)
        self.result_list.show_count()

    @Slot()
    def shutdown(self) -> None:
        """The app is quitting: the search under way stops asking the Hub."""
        if self.pages is not None:
            self.pages.cancel()

    # --- one repo ----------------------------------------------------------------------------------
    @Slot(str)
    def open_model(self, repo: str) -> None:
        self.details_serial += 1
        serial = self.details_serial
        self.details_panel.clear(repo)
        client = self.client
        self.background.run(
            lambda: client.details(repo), lambda got, error: self._got_details(serial, got, error)
        )

    def _got_details(self, serial: int, fetched: Any, error: AppError | None) -> None:
        if serial != self.details_serial:
            return
        if error is not None:
            self.details_panel.show_problem(error.user_message)
            return
        details: ModelDetails = fetched.value
        self.results.learn(details)
        if fetched.stale:
            self.banner.show_message(f"{fetched.problem} Showing what was saved the last time.")
        self.details_panel.show_details(details)
        client = self.client
        if details.variants:  # the first variant's header tells the estimates the context cache's size
            first = details.variants[0].files[0]
            self.background.run(
                lambda: client.header(details, first), lambda got, err: self._got_header(serial, got, err)
            )
        self.background.run(lambda: client.card(details), lambda got, err: self._got_card(serial, got, err))

    def _got_header(self, serial: int, header: GGUFHeader | None, error: AppError | None) -> None:
        if serial == self.details_serial:
            self.details_panel.show_header(header, error.user_message if error is not None else None)

    def _got_card(self, serial: int, fetched: Any, error: AppError | None) -> None:
        if serial != self.details_serial:
            return
        if error is not None:
            self.details_panel.show_card_problem(error.user_message)
        else:
            self.details_panel.show_card(fetched.value)

    @Slot(object)
    def _download(self, variant: Variant) -> None:
        details = self.details
        if details is None:
            return
        try:
            self.download(self.client, details, variant)
        except AppError as exc:
            self.banner.show_message(exc.user_message)
            return
        self.status.setText(f"{variant.title} of {details.id} is downloading (see Downloads).")

    # --- token and machine -------------------------------------------------------------------------
    @Slot(str)
    def set_token(self, token: str) -> None:
        """Keep the token in the keyring off the GUI thread: an OS keyring can take seconds (its daemon,
        an unlock prompt). A token entered while an older one is being saved is the one kept."""
        self.token_serial += 1
        serial = self.token_serial

        def save() -> None:
            with self._token_lock:  # writes in turn, so an older token never lands after a newer one
                if serial == self.token_serial:
                    save_token(token)

        self.background.run(save, lambda _, error: self._token_saved(serial, error))

    def _token_saved(self, serial: int, error: AppError | None) -> None:
        if serial != self.token_serial:
            return  # a newer token is on its way
        if error is not None:
            self.banner.show_message(error.user_message)
            return
        self.client = self.client_factory()
        self.banner.hide()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self.search_serial == 0:  # the first visit shows what is trending
            self.background.run(Machine.now, self._measured)
            self.search()

    def _measured(self, machine: Machine | None, error: AppError | None) -> None:
        if machine is not None:
            self.machine = machine
            self.details_panel.set_machine(machine)
