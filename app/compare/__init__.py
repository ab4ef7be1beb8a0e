"""One prompt across several models, with metrics, votes and ratings (Qt-free)."""
