"""A loopback Hugging Face Hub stand-in for tests (and by hand: `python -m tests.hubstub DIR`)."""

from tests.hubstub.faults import Fault, LoggedRequest
from tests.hubstub.repos import StubFile, StubRepo
from tests.hubstub.server import HubStub

__all__ = ["Fault", "HubStub", "LoggedRequest", "StubFile", "StubRepo"]
