"""One mapping from library errors to what the user reads: a Hub failure gets the same words whether the
Hub client (hub_error) or anything else (to_app_error: the CLI, a worker thread, the downloads) maps it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from app.errors import ErrorKind, to_app_error
from app.hub.client import RateLimited, hub_error
from tests.hubstub.faults import Fault
from tests.hubstub.server import HubStub


def _raised_by_huggingface_hub(hub: HubStub, setup: str) -> BaseException:
    """The exception huggingface_hub raises against the stand-in, set up to fail this way."""
    from huggingface_hub import HfApi, hf_hub_download

    repo = "acme/m-GGUF"
    if setup != "missing":
        hub.add_repo(repo, {"m-Q4_0.gguf": b"GGUF"}, gated="manual" if setup == "gated" else False)
    if setup == "rate-limited":
        hub.fail_with(f"/api/models/{repo}", 429, rate_limit_reset=55)
    if setup == "down":
        hub.add_fault(Fault(path=f"/api/models/{repo}", status=500, times=None))
    with pytest.raises(Exception) as raised:
        if setup == "gated":  # its model info is open to all; its files are not
            hf_hub_download(repo, "m-Q4_0.gguf", endpoint=hub.endpoint)
        else:
            HfApi(endpoint=hub.endpoint).model_info(repo)
    return raised.value


@pytest.mark.parametrize(
    ("setup", "kind", "words"),
    [
        ("missing", ErrorKind.NOT_FOUND, "not found, or private: sign in"),
        ("gated", ErrorKind.GATED, "is gated: accept its license on the Hub"),
        ("rate-limited", ErrorKind.HUB, "The Hub is limiting requests; try again in 55 s."),
        ("down", ErrorKind.HUB, "The Hub answered with an error (HTTP 500)."),
    ],
)
def test_a_hub_failure_reads_the_same_wherever_it_is_mapped(
    hub: HubStub, setup: str, kind: ErrorKind, words: str
) -> None:
    exc = _raised_by_huggingface_hub(hub, setup)
    anywhere, at_the_hub = to_app_error(exc), hub_error(exc)
    assert (anywhere.kind, at_the_hub.kind) == (kind, kind)
    assert words in anywhere.user_message and words in at_the_hub.user_message
    limited = setup == "rate-limited"  # a search stops asking on RateLimited
    assert isinstance(anywhere, RateLimited) == isinstance(at_the_hub, RateLimited) == limited


def test_a_full_disk_while_talking_to_the_hub_is_a_full_disk_not_offline(tmp_path: Path) -> None:
    # Saving a search page to the Hub cache can fail with ENOSPC inside the Hub call's try.
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache" / "page.json"))
    error = hub_error(full, "acme/x-GGUF")
    assert error.kind is ErrorKind.DISK_FULL and "offline" not in error.user_message
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert hub_error(refused).user_message == "Can't reach the Hub (offline?)."
