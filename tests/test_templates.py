"""Chat templates render in a bounded sandbox; anything else falls back to the built-in format."""

from __future__ import annotations

import tracemalloc
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
        # Each of these would build hundreds of MB in one C call, before the output cap could see it.
        "format_filter_bomb": '{{ "%0500000000d"|format(1) }}',
        "precision_bomb": '{{ "%.500000000d" % 1 }}',
        "star_width_bomb": '{{ "%*d" % (500000000, 1) }}',
        "mapping_format_bomb": '{{ ("%(a)s" * 1000) % {"a": "a" * 1000000} }}',
        "str_format_bomb": '{{ "{:>500000000}".format(1) }}',
        "str_format_precision_bomb": '{{ "{:.500000000f}".format(1.5) }}',
        "str_format_fields_bomb": '{% set x = "a" * 1000000 %}{{ ("{0}" * 600).format(x) }}',
        "replace_bomb": '{% set x = "a" * 20000 %}{{ x|replace("a", x) }}',
        "replace_method_bomb": '{% set x = "a" * 20000 %}{{ x.replace("a", x) }}',
        "join_bomb": '{% set x = "a" * 1000000 %}{{ x.join([x] * 600) }}',
        "join_filter_bomb": '{% set x = "a" * 1000000 %}{{ ([x] * 600)|join(x) }}',
        "expandtabs_bomb": '{{ ("\t" * 1000).expandtabs(1000000) }}',
        "indent_bomb": '{{ ("\n" * 1000)|indent(1000000, blank=True) }}',
        "translate_bomb": '{{ ("a" * 1000).translate({97: "b" * 1000000}) }}',
        "tojson_indent_bomb": "{{ range(200)|list|tojson(indent=1000000) }}",
        "tojson_separators_bomb": '{{ range(1000)|list|tojson(separators=("," * 1000000, ":")) }}',
        "tojson_value_bomb": '{% set x = "a" * 1000000 %}{{ ([x] * 600)|tojson }}',
        "repr_bomb": '{% set x = "a" * 1000000 %}{% set l = [x, x, x, x, x, x, x, x, x, x] %}'
        "{{ [l, l, l, l, l, l, l, l, l, l] }}",
        "string_filter_bomb": '{% set x = "a" * 1000000 %}{{ ([x] * 300)|string|length }}',
        "concat_bomb": '{% set ns = namespace(s="a" * 1000000) %}{% for i in range(8) %}'
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "add_bomb": '{% set ns = namespace(s="a" * 1000000) %}{% for i in range(8) %}'
        "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
        "macro_bomb": "{% macro m(s) %}{% for i in range(300) %}{{ s }}{% endfor %}{% endmacro %}"
        '{{ m("a" * 1000000)|length }}',
        "power_bomb": "{{ ((((10 ** 64) ** 64) ** 64) ** 64) ** 64 }}",
        "syntax_error": "{% for %}",
        "raises": "{{ raise_exception('Conversation roles must alternate') }}",
    }


@pytest.mark.parametrize("name", sorted(_payloads(Path("x"))))
def test_hostile_templates_run_no_code_and_fall_back(name: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    tracemalloc.start()
    try:
        prompt = build_prompt(_payloads(canary)[name], CHAT, bos_token="", eos_token="")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20  # refused before the huge value was built, not by the output cap after it
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


CORPUS = Path(__file__).with_name("chat_templates")


def _corpus(name: str) -> str:
    return (CORPUS / f"{name}.jinja").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{{ [1, 2]|join(",") }}', "1,2"),
        ("{{ ['a', 'b']|map('upper')|join }}", "AB"),
        ("{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|first }}", "Hi"),
        ("{{ messages|map(attribute='role')|list|last }}", "user"),
        ("{{ [3, 1, 2]|sort|join }}{{ [1, 1, 2]|unique|list|length }}{{ [4, 9]|max }}", "12329"),
        ("{{ 'a-b'|replace('-', '+') }}", "a+b"),
        ('{{ {"é": 1, "b": [1, 2], "a": 2}|tojson }}', '{"é": 1, "b": [1, 2], "a": 2}'),
        ("{{ {'k': 'v'}|tojson(indent=2) }}", '{\n  "k": "v"\n}'),
        ("{{ {'k': 1}|tojson(separators=(',', ':')) }}", '{"k":1}'),
        ("{% generation %}kept{% endgeneration %}", "kept"),
        (
            "{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}{{ m.role }}{% endfor %}",
            "user",
        ),
        (
            "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}"
            "{{ ns.n }}",
            "2",
        ),
        ("{{ dict(a=1)|tojson }}", '{"a": 1}'),
        ("{{ enable_thinking is defined }}", "False"),
    ],
)
def test_filters_tags_and_globals_behave_as_in_transformers(source: str, expected: str) -> None:
    from app.runtime.templates import render_template

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert render_template(source, messages) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{{ "%-6s|%5.2f|%*d|%.3s|%%" % ("ab", 3.14159, 4, 7, "xyzw") }}', "ab    | 3.14|   7|xyz|%"),
        ('{{ "%(n)03d"|format(n=7) }}{{ "%s-%s"|format(1, 2) }}', "0071-2"),
        ('{{ "{:>6}|{:.2f}|{name!r}|{:{w}}".format("ab", 2.5, "c", name="n", w=3) }}', "    ab|2.50|'n'|c  "),
        ('{{ "a\tb".expandtabs(4) }}{{ "ab".center(6, "*") }}{{ "7".zfill(3) }}', "a   b**ab**007"),
        ('{{ "a-b-c".replace("-", "+", 1) }}{{ "a\nb"|indent(2, first=true) }}', "a+b-c  a\n  b"),
        (
            "{{ ', '.join(messages|map(attribute='role')) }}|{{ messages|join('/', attribute='role') }}",
            "system, user|system/user",
        ),
        ("{{ 'ab'.translate({97: 'xy'}) }}{{ 'a b c'|wordwrap(1) }}", "xyba\nb\nc"),
        (
            "{{ [1, [2, 'x']] }}{{ ('a' ~ 1 ~ none) + 'b' }}{{ [1] + [2] }}{{ 2 ** 10 * 3 }}",
            "[1, [2, 'x']]a1Noneb[1, 2]3072",
        ),
        (
            "{% macro m(s) %}<{{ s }}>{% endmacro %}{% set b %}{{ m('x') }}{{ m('y') }}{% endset %}{{ b }}",
            "<x><y>",
        ),
        ("{{ messages[1]|tojson(indent=2) }}", '{\n  "role": "user",\n  "content": "Hi"\n}'),
    ],
)
def test_the_limits_leave_ordinary_values_alone(source: str, expected: str) -> None:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from app.runtime.templates import render_template

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert render_template(source, messages) == expected
    if "tojson" not in source:  # (transformers' tojson is not jinja's, which sorts keys)
        stock = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)  # no limits of ours
        assert stock.from_string(source).render(messages=messages) == expected


def test_values_just_under_the_limits_are_still_built() -> None:
    from app.runtime.templates import MAX_OUTPUT, render_template

    half = MAX_OUTPUT // 2
    source = (
        "{% set x = 'a' * HALF %}{{ ('%-HALFs' % 'b')|length }} {{ '{:>HALF}'.format(1)|length }} "
        "{{ (x ~ x)|length }} {{ x.replace('a', 'bb')|length }} {{ ([x, x]|join)|length }}"
    ).replace("HALF", str(half))
    assert render_template(source, []) == f"{half} {half} {2 * half} {2 * half} {2 * half}"


def test_template_switches_and_the_clock_reach_the_template() -> None:
    from datetime import datetime

    from app.runtime.templates import render_template

    source = "{{ enable_thinking }} {{ strftime_now('%d %b %Y') }}"
    out = render_template(source, [], variables={"enable_thinking": False}, now=lambda: datetime(2026, 1, 5))
    assert out == "False 05 Jan 2026"


def test_a_namespace_cannot_hold_underscore_names() -> None:
    prompt = build_prompt("{% set ns = namespace(__class__=1) %}x", CHAT, bos_token="", eos_token="")
    assert prompt.notice is not None


def test_mistral_nemo_renders_its_own_format_not_the_fallback() -> None:
    prompt = build_prompt(
        _corpus("mistralai-Mistral-Nemo-Instruct-2407"), CHAT, bos_token="<s>", eos_token="</s>"
    )
    assert prompt.notice is None
    assert prompt.text == "<s>[INST]Be brief.\n\nHi[/INST]"


def test_a_template_without_a_system_role_gets_the_system_prompt_in_the_first_user_message() -> None:
    prompt = build_prompt(_corpus("google-gemma-2-2b-it"), CHAT, bos_token="<bos>", eos_token="<eos>")
    assert prompt.notice is None
    assert prompt.text == "<bos><start_of_turn>user\nBe brief.\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_templates_that_demand_alternation_get_turns_of_one_role_merged() -> None:
    chat = (
        ChatMessage("user", "One"),
        ChatMessage("user", "Two"),
        ChatMessage("assistant", "Reply"),
        ChatMessage("user", "Three"),
    )
    prompt = build_prompt(
        _corpus("mistralai-Mistral-7B-Instruct-v0.2"), chat, bos_token="<s>", eos_token="</s>"
    )
    assert prompt.notice is None
    assert prompt.text == "<s>[INST] One\n\nTwo [/INST]Reply</s>[INST] Three [/INST]"
    # A window that starts with a reply (the oldest turns trimmed away) drops that reply.
    trimmed = (
        ChatMessage("system", "Be brief."),
        ChatMessage("assistant", "Old"),
        ChatMessage("user", "New"),
    )
    prompt = build_prompt(_corpus("google-gemma-7b-it"), trimmed, bos_token="", eos_token="")
    assert prompt.text == "<start_of_turn>user\nBe brief.\nNew<end_of_turn>\n<start_of_turn>model\n"


def test_merged_turns_keep_the_reasoning_of_both() -> None:
    from app.runtime.templates import chat_shapes

    chat = (
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "One", reasoning="First thought."),
        ChatMessage("assistant", "Two", reasoning="Second thought."),
        ChatMessage("assistant", "Three"),
        ChatMessage("user", "Again"),
    )
    merged = chat_shapes(chat)[1]
    assert [m.role for m in merged] == ["user", "assistant", "user"]
    assert merged[1] == ChatMessage("assistant", "One\n\nTwo\n\nThree", "First thought.\n\nSecond thought.")
    only_later = (
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "A"),
        ChatMessage("assistant", "B", "Why."),
    )
    assert chat_shapes(only_later)[1][1].reasoning == "Why."


@pytest.mark.parametrize(
    ("name", "starts_with"),
    [
        ("HuggingFaceTB-SmolLM2-135M-Instruct", "<|im_end|>"),
        ("meta-llama-Llama-3.1-8B-Instruct", "<|eot_id|>"),
        ("google-gemma-3-it", "<end_of_turn>"),
        ("microsoft-Phi-3.5-mini-instruct", "<|end|>"),
        ("mistralai-Mistral-Nemo-Instruct-2407", "</s>"),
        ("deepseek-ai-deepseek-coder-33b-instruct", "\n<|EOT|>"),
        ("eachadea-vicuna-13b-1.1", "</s>"),
        ("openai-gpt-oss-120b", "<|end|>"),
    ],
)
def test_the_end_of_turn_text_is_read_from_the_template(name: str, starts_with: str) -> None:
    from app.runtime.templates import end_of_turn_text

    assert end_of_turn_text(_corpus(name), bos_token="<s>", eos_token="</s>").startswith(starts_with)


def test_a_continued_reply_goes_on_after_the_thinking_block_the_template_opened() -> None:
    """R1 distills open <think> in the generation prompt: a continued answer must come after its end."""
    chat = [ChatMessage("user", "2+2?"), ChatMessage("assistant", "The answer is", reasoning="Add them.")]
    r1 = build_prompt(
        _corpus("deepseek-ai-DeepSeek-R1-Distill-Llama-8B"), chat, bos_token="<s>", eos_token="</s>"
    )
    assert r1.notice is None and r1.text.endswith("<think>\nAdd them.\n</think>\n\nThe answer is")
    plain = build_prompt(
        _corpus("mistralai-Mistral-Nemo-Instruct-2407"), chat, bos_token="<s>", eos_token="</s>"
    )
    assert plain.text.endswith("[/INST]The answer is")  # no thinking block opened: the answer goes on
