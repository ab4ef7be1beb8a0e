"""Streams a reply into the chat database forever; the crash test kills it with SIGKILL.

Prints a line after every write has returned (so is on disk): `user ID LEN` and `reply ID LEN`.
"""

import sys
from pathlib import Path

from app.chat.store import ChatStore

store = ChatStore(Path(sys.argv[1]))
conversation = store.create_conversation("crash test")
question = "What happens if the power goes out?"
print(f"user {store.add_message(conversation, 'user', question)} {len(question)}", flush=True)
reply = store.start_reply(conversation)
text = ""
for i in range(1_000_000):
    text += f"token{i} "
    store.checkpoint_reply(reply, text)
    print(f"reply {reply} {len(text)}", flush=True)
