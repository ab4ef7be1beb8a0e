"""The conversation on screen without a window: saved before sending, checkpointed while streaming, final
states and numbers, versions, and what is sent for a chat longer than the context."""

from __future__ import annotations

from app.chat.active import CHECKPOINT_INTERVAL_S, ActiveChat
from app.chat.store import ChatStore
from app.paths import AppPaths
from app.runtime.protocol import CHARS_PER_TOKEN_MAX, ChatMessage


def _active() -> ActiveChat:
    return ActiveChat(ChatStore(AppPaths.from_env().ensure().database_file))


def _row(active: ActiveChat, message_id: int) -> tuple[str, str, str]:
    m = active.store.message(message_id)
    return m.content, m.reasoning, m.state


def test_a_send_is_saved_before_the_reply_and_the_reply_as_it_streams() -> None:
    active = _active()
    active.add_user_message(
        "What is the capital of France?", "Be brief.", "/m.gguf", thinking=False, edited=None
    )
    assert active.conversation_id is not None
    conversation = active.store.conversation(active.conversation_id)
    assert (conversation.title, conversation.system_prompt, conversation.thinking) == (
        "What is the capital of France?",
        "Be brief.",
        False,
    )
    reply = active.start_reply(now=100.0)
    assert [m.role for m in active.shown] == ["user", "assistant"] and _row(active, reply)[2] == "streaming"
    messages, omitted = active.turns("Be brief.", n_ctx=512)
    assert [(m.role, m.content) for m in messages] == [
        ("system", "Be brief."),
        ("user", "What is the capital of France?"),
    ] and omitted == 0  # the empty reply is not sent
    active.add_piece("Let me think", True, now=100.2)
    active.add_piece("The capital", False, now=100.5)
    assert _row(active, reply) == ("", "", "streaming")  # within a second: not yet written
    active.add_piece(" is Paris.", False, now=100.0 + CHECKPOINT_INTERVAL_S)
    assert _row(active, reply) == ("The capital is Paris.", "Let me think", "streaming")
    saved = active.finish_reply("complete", {"tokens_per_s": 50.0}, now=101.5)
    assert saved is not None and saved.state == "complete" and saved.stats["reasoning_ms"] == 300
    assert active.shown[-1] == saved and active.reply_id is None
    assert active.store.messages(active.conversation_id) == active.shown  # memory and disk agree


def test_stopped_while_thinking_counts_the_thinking_until_the_stop() -> None:
    active = _active()
    active.add_user_message("Hi", "", "", thinking=None, edited=None)
    active.start_reply(now=10.0)
    active.add_piece("hmm", True, now=10.5)
    saved = active.finish_reply("stopped", {}, now=12.5)
    assert saved is not None and saved.state == "stopped" and saved.stats == {"reasoning_ms": 2000}
    assert saved.reasoning == "hmm" and saved.content == ""


def test_regenerate_edit_and_continue_keep_the_path_in_step_with_the_store() -> None:
    active = _active()
    active.add_user_message("Tell me a joke", "", "", thinking=None, edited=None)
    active.start_reply(now=0.0)
    active.add_piece("Why did", False, now=0.1)
    first = active.finish_reply("stopped", {}, now=0.2)
    assert first is not None
    active.continue_reply(first, now=1.0)  # goes on from what it had
    assert active.draft.text == "Why did"
    messages, _ = active.turns("", 512)
    assert messages[-1] == ChatMessage("assistant", "Why did")  # sent as the start of the answer
    active.add_piece(" the chicken", False, now=1.1)
    assert active.finish_reply("complete", {}, now=1.2) is not None
    again = active.start_reply(now=2.0, regenerating=active.shown[-1])
    assert active.shown[-1].id == again and active.shown[-1].versions == 2
    active.finish_reply("complete", {}, now=2.1)
    active.add_user_message("Another joke", "", "", thinking=None, edited=active.shown[0])
    assert [m.content for m in active.shown] == ["Another joke"] and active.shown[0].versions == 2
    assert active.store.messages(active.shown[0].conversation_id) == active.shown


def test_only_the_turns_that_could_fit_are_sent() -> None:
    from tests.long_chats import long_conversation

    active = _active()
    active.open(long_conversation(active.store, 3_000, words=200))  # about 1,000 characters each
    messages, omitted = active.turns("", n_ctx=512)
    assert messages[-1].content.startswith("Message 2999 ") and len(messages) + omitted == 3_000
    assert sum(len(m.content) for m in messages) <= 512 * CHARS_PER_TOKEN_MAX
    assert len(messages) >= 512 * CHARS_PER_TOKEN_MAX // 1100  # as many as could fit by length
    active.add_user_message("y" * 10**6, "", "", thinking=None, edited=None)
    messages, omitted = active.turns("", n_ctx=512)
    assert messages == (ChatMessage("user", "y" * 10**6),) and omitted == 3_000  # the last one always goes


def test_continue_before_the_answer_began_starts_the_reply_again() -> None:
    active = _active()
    active.add_user_message("Hi", "", "", thinking=None, edited=None)
    active.start_reply(now=0.0)
    active.add_piece("Let me see", True, now=0.1)
    cut = active.finish_reply("stopped", {}, now=0.2)
    assert cut is not None and cut.reasoning == "Let me see" and not cut.content
    active.continue_reply(cut, now=1.0)
    assert active.draft.reasoning_text == "" and active.draft.text == ""  # not thought twice
    messages, _ = active.turns("", 512)
    assert messages[-1].role == "user"  # the model starts the reply afresh


def test_a_long_chat_reads_its_newest_part_and_older_turns_only_to_send_them() -> None:
    from app.chat.active import READ_AT_FIRST
    from tests.long_chats import long_conversation

    active = _active()
    conversation = long_conversation(active.store, 3_000, words=3)
    active.open(conversation)
    assert len(active.shown) == READ_AT_FIRST and len(active.unread) == 3_000 - READ_AT_FIRST
    messages, omitted = active.turns("", n_ctx=2048)  # 32k characters could go: more than was read
    assert len(messages) > READ_AT_FIRST and len(messages) + omitted == 3_000
    assert messages[-1].content == "Message 2999 word word word"
    assert len(active.shown) == READ_AT_FIRST  # read for the request, not kept
