"""The conversations beside the chat: New chat, Import, a search over titles and text, the list (pinned
first) with its menu, and the Undo bar after a delete. What changes the chat on screen is the page's to do:
the sidebar says what the user chose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    Qt,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.chat.store import ChatStore, Conversation
from app.ui.widgets import named

SEARCH_DEBOUNCE_MS = 300

ModelIndex = QModelIndex | QPersistentModelIndex


class ConversationListModel(QAbstractListModel):
    """The conversations as rows: a list view draws only the rows in view, so 5,000 cost no widgets."""

    def __init__(self, store: ChatStore) -> None:
        super().__init__()
        self.store = store
        self.items: list[Conversation] = []
        self.search = ""

    def refresh(self) -> None:
        self.beginResetModel()
        self.items = self.store.conversations(self.search)
        self.endResetModel()

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's default argument
        return 0 if parent.isValid() else len(self.items)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.items):
            return None
        item = self.items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return ("📌 " if item.pinned else "") + (item.title or "New chat")
        if role == Qt.ItemDataRole.UserRole:
            return item.id
        return None

    def row_of(self, conversation_id: int) -> int:
        return next((row for row, item in enumerate(self.items) if item.id == conversation_id), -1)

    def touch(self, conversation: Conversation) -> None:
        """This conversation just changed: it goes first among the pinned or the others, as a reread
        would put it, without reading the 5,000 others again."""
        if self.search:  # what matches may have changed
            self.refresh()
            return
        row = self.row_of(conversation.id)
        if row >= 0:
            self.beginRemoveRows(QModelIndex(), row, row)
            del self.items[row]
            self.endRemoveRows()
        at = 0 if conversation.pinned else sum(1 for item in self.items if item.pinned)
        self.beginInsertRows(QModelIndex(), at, at)
        self.items.insert(at, conversation)
        self.endInsertRows()


class ConversationSidebar(QWidget):
    chosen = Signal(int)  # a conversation clicked
    new_chat_requested = Signal()
    import_chosen = Signal(Path)
    export_chosen = Signal(int, Path)
    delete_requested = Signal(int)
    undo_requested = Signal()

    def __init__(self, store: ChatStore) -> None:
        super().__init__()
        self.store = store
        self.current: int | None = None  # the conversation on screen, kept selected
        self.conversations = ConversationListModel(store)
        self.conversation_list = named(QListView(), "conversationList")
        self.conversation_list.setAccessibleName("Conversations")
        self.conversation_list.setModel(self.conversations)
        self.conversation_list.setUniformItemSizes(True)  # no per-row size pass over 5,000 rows
        self.conversation_list.clicked.connect(self._clicked)
        self.conversation_list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.conversation_list.customContextMenuRequested.connect(self._menu)
        new_chat = named(QPushButton("New chat"), "newChatButton")
        new_chat.clicked.connect(self.new_chat_requested)
        import_button = named(QPushButton("Import…"), "importButton")
        import_button.clicked.connect(self._choose_import_file)
        self.search = named(QLineEdit(placeholderText="Search chats (Ctrl+F)"), "chatSearch")
        self.search.setAccessibleName("Search chats")
        self.search_timer = QTimer(self, singleShot=True, interval=SEARCH_DEBOUNCE_MS)
        self.search.textChanged.connect(self.search_timer.start)
        self.search_timer.timeout.connect(self._apply_search)
        self.undo_bar = named(QFrame(), "undoBar")
        self.undo_text = QLabel()
        self.undo_text.setTextFormat(Qt.TextFormat.PlainText)
        self.undo_button = named(QPushButton("Undo"), "undoButton")
        self.undo_button.clicked.connect(self.undo_requested)
        undo_layout = QHBoxLayout(self.undo_bar)
        undo_layout.setContentsMargins(0, 0, 0, 0)
        undo_layout.addWidget(self.undo_text, 1)
        undo_layout.addWidget(self.undo_button)
        self.undo_bar.hide()
        buttons = QHBoxLayout()
        buttons.addWidget(new_chat)
        buttons.addWidget(import_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.search)
        layout.addWidget(self.conversation_list)
        layout.addWidget(self.undo_bar)
        self.conversations.refresh()

    def refresh(self, current: int | None) -> None:
        """Read the list again and keep `current` selected."""
        self.current = current
        self.conversations.refresh()
        self._select_current()

    def select(self, current: int | None) -> None:
        """Show `current` as the conversation on screen; the list is read again only if it is new to it
        (imported, restored, opened from Compare)."""
        self.current = current
        if current is not None and self.conversations.row_of(current) < 0 and not self.conversations.search:
            self.conversations.refresh()
        self._select_current()

    def touch(self, conversation_id: int) -> None:
        """The conversation on screen changed (a message was sent): it moves to the top."""
        self.current = conversation_id
        self.conversations.touch(self.store.conversation(conversation_id))
        self._select_current()

    def _select_current(self) -> None:
        if self.current is None:
            self.conversation_list.clearSelection()
        else:
            row = self.conversations.row_of(self.current)
            self.conversation_list.setCurrentIndex(self.conversations.index(row, 0))

    def focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def rename(self, conversation_id: int, title: str) -> None:
        self.store.rename_conversation(conversation_id, title)
        self.refresh(self.current)

    def set_pinned(self, conversation_id: int, pinned: bool) -> None:
        self.store.set_pinned(conversation_id, pinned)
        self.refresh(self.current)

    def show_undo(self, title: str) -> None:
        self.undo_text.setText(f"Deleted “{title or 'New chat'}”")
        self.undo_bar.show()

    @Slot()
    def _apply_search(self) -> None:
        self.conversations.search = self.search.text()
        self.refresh(self.current)

    @Slot(QModelIndex)
    def _clicked(self, index: QModelIndex) -> None:
        self.chosen.emit(int(index.data(Qt.ItemDataRole.UserRole)))

    @Slot(QPoint)
    def _menu(self, position: QPoint) -> None:
        index = self.conversation_list.indexAt(position)
        if not index.isValid():
            return
        conversation_id = int(index.data(Qt.ItemDataRole.UserRole))
        pinned = self.store.conversation(conversation_id).pinned
        menu = QMenu(self)
        menu.addAction("Rename…", lambda: self._ask_rename(conversation_id))
        menu.addAction("Unpin" if pinned else "Pin", lambda: self.set_pinned(conversation_id, not pinned))
        menu.addAction("Export as Markdown…", lambda: self._choose_export_file(conversation_id, "md"))
        menu.addAction("Export as JSON…", lambda: self._choose_export_file(conversation_id, "json"))
        menu.addSeparator()
        menu.addAction("Delete", lambda: self.delete_requested.emit(conversation_id))
        menu.exec(self.conversation_list.viewport().mapToGlobal(position))
        menu.deleteLater()  # one menu per right-click would otherwise live as long as the sidebar

    def _ask_rename(self, conversation_id: int) -> None:
        current = self.store.conversation(conversation_id).title
        title, ok = QInputDialog.getText(self, "Rename chat", "Title", text=current)
        if ok:
            self.rename(conversation_id, title)

    def _choose_export_file(self, conversation_id: int, kind: str) -> None:
        title = self.store.conversation(conversation_id).title or "conversation"
        suggested = "".join(ch if ch.isalnum() or ch in " -_" else "_" for ch in title)[:60] + f".{kind}"
        name, _ = QFileDialog.getSaveFileName(self, "Export chat", suggested, f"*.{kind}")
        if name:
            self.export_chosen.emit(conversation_id, Path(name))

    @Slot()
    def _choose_import_file(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Import a chat", "", "Hubside chats (*.json)")
        if name:
            self.import_chosen.emit(Path(name))
