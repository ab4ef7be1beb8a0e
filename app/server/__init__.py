"""A local OpenAI-compatible server over the app's engines and library (Qt-free; `hubside serve`)."""
