"""The Hub token's file (only where there is no keyring and the user agreed): readable by this user alone
from the moment it exists, and never written into a file someone else could already be reading."""

from __future__ import annotations

import keyring
from keyring.backends import fail

from app.hub.token import hub_token, save_token
from app.paths import AppPaths


def test_the_token_file_is_private_from_its_creation() -> None:
    keyring.set_keyring(fail.Keyring())  # no keyring: the file the user agreed to (the fixture restores)
    token_file = AppPaths.from_env().token_file
    save_token("hf_first", token_file)
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert hub_token(token_file) == "hf_first"


def test_a_new_token_never_goes_into_a_file_that_was_readable_by_others() -> None:
    keyring.set_keyring(fail.Keyring())
    token_file = AppPaths.from_env().token_file
    token_file.parent.mkdir(parents=True)
    token_file.write_text("hf_old")  # left by an older version, or copied in by hand
    token_file.chmod(0o644)
    with token_file.open() as reader:  # another user who opened it while it was readable
        save_token("hf_new", token_file)
        assert reader.read() == "hf_old"  # the new token is in a new file, 0600 from the start
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert hub_token(token_file) == "hf_new"
    assert [p.name for p in token_file.parent.iterdir()] == [token_file.name]  # no temporary file left
