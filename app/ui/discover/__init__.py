"""The Discover page's widgets, one job each; app.ui.discover_page composes them and talks to the Hub."""
