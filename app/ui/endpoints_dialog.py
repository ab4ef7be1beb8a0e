"""Settings > Endpoints: models served elsewhere (llama-server, vLLM, Ollama, another Hubside). Add one by
name and URL, with a key typed (kept in the keyring, never in a file) or the name of an environment
variable holding it; test the connection (its models listed); edit; remove.

Every call that may wait (the network, the keyring) runs on the background pool; the newest test wins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QItemSelection, QStringListModel, Qt, Slot
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.errors import AppError
from app.remote.endpoints import DEFAULT_FIRST_TOKEN_S, Endpoint, EndpointStore, base_url
from app.ui.background import Background
from app.ui.remote_bridge import endpoint_models
from app.ui.widgets import named

KEY_HINT = "Typed here, kept in the keyring (empty: keep the saved one)"


class EndpointsDialog(QDialog):
    def __init__(
        self,
        store: EndpointStore,
        background: Background,
        changed: Callable[[], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("endpointsDialog")
        self.setWindowTitle("Endpoints: models served elsewhere")
        self.setMinimumSize(720, 420)
        self.store, self.background, self.changed = store, background, changed
        self._tests = 0  # numbers the connection tests: only the newest one's answer is shown
        self.names = QStringListModel(self)
        self.list = named(QListView(), "endpointList")
        self.list.setAccessibleName("Endpoints")
        self.list.setModel(self.names)
        self.list.setEditTriggers(QListView.EditTrigger.NoEditTriggers)
        self.list.selectionModel().selectionChanged.connect(self._chosen)
        self._build_form()
        self.models = QStringListModel(self)
        self.model_list = named(QListView(), "endpointModels")
        self.model_list.setAccessibleName("Models the endpoint offers")
        self.model_list.setModel(self.models)
        self.model_list.setEditTriggers(QListView.EditTrigger.NoEditTriggers)
        self.message = named(QLabel(""), "endpointMessage")
        self.message.setTextFormat(Qt.TextFormat.PlainText)  # server text is untrusted
        self.message.setWordWrap(True)
        right = QVBoxLayout()
        right.addLayout(self.form)
        right.addLayout(self._buttons())
        right.addWidget(QLabel("Models it offers"))
        right.addWidget(self.model_list, 1)
        right.addWidget(self.message)
        columns = QHBoxLayout()
        columns.addWidget(self.list, 1)
        columns.addLayout(right, 2)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(columns, 1)
        layout.addWidget(close)
        self._show_names()

    def _build_form(self) -> None:
        self.name = named(QLineEdit(placeholderText="cluster"), "endpointName")
        self.url = named(QLineEdit(placeholderText="http://gpu-box:8080/v1"), "endpointUrl")
        self.key = named(QLineEdit(placeholderText=KEY_HINT), "endpointKey")
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_env = named(QLineEdit(placeholderText="or a variable NAME: VLLM_KEY"), "endpointKeyEnv")
        self.first_token = named(QDoubleSpinBox(minimum=1.0, maximum=3600.0, decimals=0), "endpointTtft")
        self.first_token.setSuffix(" s")
        self.first_token.setToolTip("How long a reply may take to start (a big model on a busy server)")
        self.first_token.setValue(DEFAULT_FIRST_TOKEN_S)
        self.form = QFormLayout()
        rows = (
            (self.name, "Name"),
            (self.url, "URL"),
            (self.key, "API key"),
            (self.key_env, "Key from variable"),
            (self.first_token, "First token within"),
        )
        for widget, label in rows:
            widget.setAccessibleName(label)
            self.form.addRow(label, widget)

    def _buttons(self) -> QHBoxLayout:
        self.new_button = named(QPushButton("New"), "endpointNew")
        self.save_button = named(QPushButton("Save"), "endpointSave")
        self.test_button = named(QPushButton("Test connection"), "endpointTest")
        self.remove_button = named(QPushButton("Remove"), "endpointRemove")
        self.new_button.clicked.connect(self.clear_form)
        self.save_button.clicked.connect(self.save)
        self.test_button.clicked.connect(self.test_connection)
        self.remove_button.clicked.connect(self.remove)
        row = QHBoxLayout()
        for button in (self.new_button, self.save_button, self.test_button, self.remove_button):
            row.addWidget(button)
        row.addStretch(1)
        return row

    # --- the list ----------------------------------------------------------------------------------
    def _show_names(self) -> None:
        try:
            self.names.setStringList([e.name for e in self.store.all()])
        except AppError as exc:
            self.message.setText(exc.user_message)

    @Slot(QItemSelection, QItemSelection)
    def _chosen(self, *_: object) -> None:
        rows = self.list.selectionModel().selectedRows()
        if not rows:
            return
        try:
            endpoint = self.store.get(self.names.data(rows[0]))
        except AppError as exc:
            self.message.setText(exc.user_message)
            return
        self.name.setText(endpoint.name)
        self.url.setText(endpoint.url)
        self.key.clear()
        self.key_env.setText(endpoint.api_key_env or "")
        self.first_token.setValue(endpoint.first_token_timeout_s)
        self.models.setStringList([])
        self.message.clear()

    def select(self, name: str) -> None:
        names = self.names.stringList()
        if name in names:
            self.list.setCurrentIndex(self.names.index(names.index(name)))

    @Slot()
    def clear_form(self) -> None:
        self.list.clearSelection()
        for field in (self.name, self.url, self.key, self.key_env):
            field.clear()
        self.first_token.setValue(DEFAULT_FIRST_TOKEN_S)
        self.models.setStringList([])
        self.message.clear()
        self.name.setFocus()

    def _endpoint(self) -> Endpoint:
        return Endpoint(
            self.name.text().strip(),
            base_url(self.url.text()),
            self.key_env.text().strip() or None,
            self.first_token.value(),
        )

    # --- actions (off the GUI thread) --------------------------------------------------------------
    @Slot()
    def save(self) -> None:
        """Add the endpoint, or replace the one of that name (an edit); a typed key goes to the keyring."""
        try:
            endpoint = self._endpoint()
        except AppError as exc:
            self.message.setText(exc.user_message)
            return
        key = self.key.text().strip() or None
        self._busy(f"Saving {endpoint.name}…")
        self.background.run(lambda: self.store.add(endpoint, key), self._saved)

    def _saved(self, endpoint: Any, error: AppError | None) -> None:
        self._idle()
        if error is not None:
            self.message.setText(error.user_message)
            return
        self.key.clear()  # kept in the keyring now; never shown again
        self._show_names()
        self.select(endpoint.name)
        self.message.setText(f"Saved {endpoint.name} ({endpoint.url}).")
        self.changed()

    @Slot()
    def remove(self) -> None:
        name = self.name.text().strip()
        if name not in self.names.stringList():
            self.message.setText("Choose an endpoint to remove.")
            return
        self._busy(f"Removing {name}…")
        self.background.run(lambda: self.store.remove(name), lambda _, error: self._removed(name, error))

    def _removed(self, name: str, error: AppError | None) -> None:
        self._idle()
        if error is not None:
            self.message.setText(error.user_message)
            return
        self.clear_form()
        self._show_names()
        self.message.setText(f"Removed {name} (and its kept key).")
        self.changed()

    @Slot()
    def test_connection(self) -> None:
        """Ask the endpoint in the form (saved or not) for its models, with the key typed or kept."""
        try:
            endpoint = self._endpoint()
        except AppError as exc:
            self.message.setText(exc.user_message)
            return
        key = self.key.text().strip() or None
        self._tests += 1
        number = self._tests
        self.models.setStringList([])
        self.message.setText(f"Asking {endpoint.url} for its models…")
        self.background.run(
            lambda: endpoint_models(self.store, endpoint, key),
            lambda models, error: self._tested(number, endpoint, models, error),
        )

    def _tested(self, number: int, endpoint: Endpoint, models: Any, error: AppError | None) -> None:
        if number != self._tests:
            return  # a newer test was asked for
        if error is not None:
            self.message.setText(error.user_message)
            return
        self.models.setStringList(list(models))
        self.message.setText(f"{endpoint.name} answers: {len(models)} model(s).")

    def _busy(self, doing: str) -> None:
        self.message.setText(doing)
        for button in (self.save_button, self.remove_button):
            button.setEnabled(False)

    def _idle(self) -> None:
        for button in (self.save_button, self.remove_button):
            button.setEnabled(True)
