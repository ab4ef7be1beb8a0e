"""Everything Qt: the main window, pages, item models and the thread bridges."""
