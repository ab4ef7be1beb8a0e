"""Chat templates render in a bounded sandbox; anything else falls back to the built-in format."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.runtime.gguf_header import read_header
from app.runtime.protocol import ChatMessage
from app.runtime.session import StopMatcher
from app.runtime.templates import FALLBACK_STOP, build_prompt

CHAT = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"))


def test_the_models_own_template_renders(tiny_model: Path) -> None:
    template = read_header(tiny_model).chat_template
    prompt = build_prompt(template, CHAT, bos_token="", eos_token="")
    assert prompt.notice is None and prompt.stop == ()
    assert prompt.text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_a_chat_ending_with_the_assistant_continues_that_reply(tiny_model: Path) -> None:
    template = read_header(tiny_model).chat_template
    cut = (*CHAT, ChatMessage("assistant", "Hello! How can"))
    prompt = build_prompt(template, cut, bos_token="", eos_token="")
    assert prompt.text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello! How can"
    )
    assert build_prompt(None, cut, bos_token="", eos_token="").text.endswith("Assistant: Hello! How can")


def _payloads(canary: Path) -> dict[str, str]:
    return {
        "mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "globals": "{{ cycler.__init__.__globals__.os.system('touch " + str(canary) + "') }}",
        "joiner": "{{ joiner.__init__.__globals__.os.popen('touch " + str(canary) + "').read() }}",
        "namespace": "{{ namespace.__init__.__globals__['os'].system('touch " + str(canary) + "') }}",
        "cpu_bomb": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "memory_bomb": "{{ 'x' * 10000000000 }}",
        "filter_bomb": "{{ 'x'|center(10000000000) }}",
        "method_bomb": "{{ 'x'.ljust(10000000000) }}",
        "format_bomb": "{{ '%10000000000s' % 'x' }}",
        "output_bomb": "{% for i in range(100000) %}{{ 'x' * 40 }}{% endfor %}",
        "syntax_error": "{% for %}",
        "raises": "{{ raise_exception('Conversation roles must alternate') }}",
    }


@pytest.mark.parametrize("name", sorted(_payloads(Path("x"))))
def test_hostile_templates_run_no_code_and_fall_back(name: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    prompt = build_prompt(_payloads(canary)[name], CHAT, bos_token="", eos_token="")
    assert not canary.exists()
    assert prompt.notice is not None and "could not be used" in prompt.notice
    assert prompt.text == "System: Be brief.\n\nUser: Hi\n\nAssistant:"
    assert prompt.stop == FALLBACK_STOP


def test_no_template_uses_the_built_in_format_with_a_notice() -> None:
    prompt = build_prompt(None, CHAT, bos_token="", eos_token="")
    assert prompt.notice == "This model has no chat template; using a plain built-in format."
    assert prompt.text.endswith("Assistant:")


def test_stop_matcher_holds_back_only_what_could_start_a_stop_string() -> None:
    matcher = StopMatcher(["\nUser:"])
    assert matcher.feed("Hello") == ("Hello", False)
    assert matcher.feed(" there\nUs") == (" there", False)  # "\nUs" might begin "\nUser:"
    assert matcher.feed("ually") == ("\nUsually", False)  # it did not
    assert matcher.feed("\nUser: hi") == ("", True)
    plain = StopMatcher([])
    assert plain.feed("\nUser:") == ("\nUser:", False)
    tail = StopMatcher(["###"])
    assert tail.feed("a#") == ("a", False)
    assert tail.flush() == "#"
