"""Tests for the chat-template analysis and the scanners that use it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format
from attestgate.pipeline import admit, inspect
from attestgate.scanners import scan_bytes
from attestgate.scanners.chat_template import (
    ChatTemplateFileScanner,
    TemplateLimits,
    analyze_chat_template,
    is_sensitive_name,
)
from attestgate.scanners.huggingface import JsonConfigScanner
from attestgate.scanners.interface import ScanContext


def analyze(text: str, limits: TemplateLimits | None = None) -> list[Finding]:
    scanner = ChatTemplateFileScanner(ScanContext("chat_template.jinja", len(text)), Format.TEXT)
    return analyze_chat_template(
        text, scanner, "chat_template.jinja", limits=limits or TemplateLimits()
    )


def rules(findings: list[Finding]) -> set[str]:
    return {finding.rule for finding in findings}


def severity_of(findings: list[Finding], rule: str) -> Severity:
    matches = {finding.severity for finding in findings if finding.rule == rule}
    assert len(matches) == 1, sorted(rules(findings))
    return matches.pop()


# --- Real chat templates, written in the style each model family ships ----------

CHATML = """{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"""

LLAMA3 = """{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"""

MISTRAL = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

GEMMA = """{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"""

QWEN2 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# Reasoning-model style: a namespace, a reversed walk over the messages, an
# index computed from the loop, string methods, {% break %} and a
# {% generation %} block as transformers accepts them.
REASONING = """{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
        {%- break %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- set content = message.content if message.content is string else '' %}
    {%- if message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {{- '<|im_start|>assistant\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' }}
        {%- endif %}
        {% generation %}{{- content + '<|im_end|>\\n' }}{% endgeneration %}
        {%- set previous = messages[ns.last_query_index] %}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}
"""

# Tool-schema rendering: keys read from the tool definitions themselves, a
# macro with parameters, dictsort, selectattr and map with attribute paths.
TOOLS = """{%- macro render_param(name, spec, required) -%}
{{- name }}{% if name not in required %}?{% endif %}: {{ spec['type'] | default('any') }}
{%- if spec.description is defined %} // {{ spec.description | trim }}{% endif %}
{%- endmacro -%}
{%- for tool in tools %}
    {%- set function = tool.function if tool.function is defined else tool %}
    {{- 'type ' + function.name + ' = (_: {\\n' }}
    {%- for param_name, param_spec in function.parameters.properties | dictsort %}
        {{- render_param(param_name, param_spec, function.parameters.required | default([])) + ',\\n' }}
    {%- endfor %}
    {%- for key in function.parameters %}
        {%- if key not in ['type', 'properties', 'required'] %}
            {{- '// ' + key + ': ' + function.parameters[key] | tojson + '\\n' }}
        {%- endif %}
    {%- endfor %}
    {{- '}) => any;\\n' }}
{%- endfor %}
{%- set users = messages | selectattr('role', 'equalto', 'user') | list %}
{{- users | map(attribute='content') | join('\\n') }}
{%- set counts = {'user': 0, 'assistant': 0} %}
{%- for message in messages %}{{ counts[message.role] }}{% endfor %}
"""

# Coder-model style: a macro that walks the keys of whatever mapping its call
# sites pass, and a loop over keys left after reject.
EXTRA_KEYS = """{% macro render_extra_keys(json_dict, handled_keys) %}
    {%- if json_dict is mapping %}
        {%- for json_key in json_dict if json_key not in handled_keys %}
            {%- if json_dict[json_key] is mapping %}
                {{- '\\n<' ~ json_key ~ '>' ~ (json_dict[json_key] | tojson | safe) ~ '</' ~ json_key ~ '>' }}
            {%- else %}
                {{- '\\n<' ~ json_key ~ '>' ~ (json_dict[json_key] | string) ~ '</' ~ json_key ~ '>' }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
{% endmacro %}
{%- for tool in tools %}
    {%- if tool.function is defined %}{%- set tool = tool.function %}{%- endif %}
    {%- for param_name, param_fields in tool.parameters.properties|items %}
        {%- set handled_keys = ['name', 'type', 'description'] %}
        {{- render_extra_keys(param_fields, handled_keys) }}
        {%- for json_key in param_fields.keys() | reject("in", handled_keys) %}
            {{- '\\n<' ~ json_key ~ '>' ~ (param_fields[json_key] | string) ~ '</' ~ json_key ~ '>' }}
        {%- endfor %}
    {%- endfor %}
    {{- render_extra_keys(tool.parameters, ['type', 'properties']) }}
    {{- render_extra_keys(tool, handled_keys=['type', 'name', 'description', 'parameters']) }}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == "tool" and loop.previtem and loop.previtem.role != "tool" %}
        {{- '<|im_start|>user\\n' }}
    {%- endif %}
{%- endfor %}
"""

REAL_TEMPLATES = {
    "chatml": CHATML,
    "llama3": LLAMA3,
    "mistral": MISTRAL,
    "gemma": GEMMA,
    "qwen2": QWEN2,
    "reasoning": REASONING,
    "tools": TOOLS,
    "extra_keys": EXTRA_KEYS,
}


@pytest.mark.parametrize("name", sorted(REAL_TEMPLATES))
def test_real_template_is_clean(name):
    assert analyze(REAL_TEMPLATES[name]) == []


@pytest.mark.parametrize(
    "template",
    [
        "{{ message['role'] }}",
        "{{ message.content }}",
        "{{ messages[0]['content'] }}",
        "{{ messages[-1].content }}",
        "{% for m in messages %}{{ messages[loop.index0 + 1].role }}{% endfor %}",
        "{% for k in param %}{{ param[k] }}{% endfor %}",
        "{% for k, v in tool|items %}{{ tool[k] }}{% endfor %}",
        "{% set key = 'content' %}{{ message[key] }}",
        "{% for key in ['role', 'content'] %}{{ message[key] }}{% endfor %}",
        "{% set n = messages|length %}{{ messages[n - 1] }}",
        "{% for i in range(3) %}{{ messages[i] }}{% endfor %}",
        "{{ messages[0]['content'][:10] }}",
        "{{ '-' * 20 }}",
        "{{ 'a' ~ '_' ~ 'b' }}",
        "{{ '__' }}",
        "{{ 'Text with __bold__ markdown' ~ '\\n' }}",
        "{{ ['a', 'b']|join(', ') }}",
        "{% set ns = namespace(i=0) %}{% set ns.i = ns.i + 1 %}{{ messages[ns.i] }}",
        "{% macro get(obj, key) %}{{ obj[key] }}{% endmacro %}{{ get(message, 'role') }}",
        "{% macro at(items, i) %}{{ items[i] }}{% endmacro %}{{ at(messages, loop.index0 - 1) }}",
        "{% macro unused(obj, key) %}{{ obj[key] }}{% endmacro %}",
    ],
)
def test_ordinary_lookup_is_clean(template):
    assert analyze(template) == []


# --- Hostile templates ----------------------------------------------------------

HOSTILE = [
    (
        "{{ self.__init__.__globals__.__builtins__ }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    ("{{ self.__init__.__globals__.__builtins__ }}", "chat-template.gadget", Severity.HIGH),
    (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    (
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    ("{{ lipsum.__globals__['os'].popen('id').read() }}", "chat-template.gadget", Severity.HIGH),
    ("{{ cycler.__init__.__globals__.os }}", "chat-template.dunder-access", Severity.CRITICAL),
    ("{{ cycler.__init__.__globals__.os }}", "chat-template.gadget", Severity.HIGH),
    ("{{ joiner.x }}", "chat-template.gadget", Severity.HIGH),
    ("{{ namespace['y'] }}", "chat-template.gadget", Severity.HIGH),
    ("{{ self._TemplateReference__context }}", "chat-template.gadget", Severity.HIGH),
    ("{{ self._TemplateReference__context }}", "chat-template.private-attribute", Severity.HIGH),
    ("{{ config.items() }}", "chat-template.gadget", Severity.HIGH),
    ("{{ request.application }}", "chat-template.gadget", Severity.HIGH),
    (
        "{% set a = '_' ~ '_' ~ 'class' ~ '_' ~ '_' %}{{ x[a] }}",
        "chat-template.obfuscated-name",
        Severity.HIGH,
    ),
    (
        "{% set a = '_' ~ '_' ~ 'class' ~ '_' ~ '_' %}{{ x[a] }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    ("{{ x|attr('__cla'+'ss__') }}", "chat-template.obfuscated-name", Severity.HIGH),
    ("{{ x|attr('__cla'+'ss__') }}", "chat-template.dunder-access", Severity.CRITICAL),
    ("{{ x|attr('__class__') }}", "chat-template.dunder-access", Severity.CRITICAL),
    ("{{ x[('ssalc__'|reverse)] }}", "chat-template.obfuscated-name", Severity.HIGH),
    ("{{ x[('ssalc__'|reverse)] }}", "chat-template.dunder-access", Severity.CRITICAL),
    ("{{ x['__ssalc__'[::-1]] }}", "chat-template.dunder-access", Severity.CRITICAL),
    ("{{ x['__ssalc__'[::-1]] }}", "chat-template.obfuscated-name", Severity.HIGH),
    ("{{ x['_''_class_''_'] }}", "chat-template.dunder-access", Severity.CRITICAL),
    ("{{ x['_''_class_''_'] }}", "chat-template.obfuscated-name", Severity.HIGH),
    ("{{ x['\\x5f\\x5fclass\\x5f\\x5f'] }}", "chat-template.obfuscated-name", Severity.HIGH),
    ("{{ x['__globals__'] }}", "chat-template.dunder-access", Severity.CRITICAL),
    ("{{ x.gi_frame.f_globals }}", "chat-template.dunder-access", Severity.CRITICAL),
    (
        "{{ x|attr('%c%c%s%c%c'|format(95, 95, 'class', 95, 95)) }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    (
        "{{ x|attr('%c%c%s%c%c'|format(95, 95, 'class', 95, 95)) }}",
        "chat-template.obfuscated-name",
        Severity.HIGH,
    ),
    ("{{ x[dict(__class__=1)|first] }}", "chat-template.dunder-access", Severity.CRITICAL),
    (
        "{{ x[['_', '_', 'init', '_', '_']|join] }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    ("{{ x['_' * 2 ~ 'globals' ~ '_' * 2] }}", "chat-template.dunder-access", Severity.CRITICAL),
    (
        "{{ x['X__CLASS__X'|lower|replace('x', '')] }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    (
        "{{ x['{}{}class{}{}'.format('_', '_', '_', '_')] }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    (
        "{{ x['\\\\x5f\\\\x5fclass\\\\x5f\\\\x5f'.encode().decode('unicode-escape')] }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    (
        "{% set a %}__class__{% endset %}{{ x[a] }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    ("{% set a %}__class__{% endset %}{{ x[a] }}", "chat-template.obfuscated-name", Severity.HIGH),
    (
        "{% macro m() %}__init__{% endmacro %}{{ x[m()] }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    (
        "{% macro g(o, k) %}{{ o[k] }}{% endmacro %}{{ g(x, '__class__') }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    (
        "{% macro g(o, k='__init__') %}{{ o[k] }}{% endmacro %}{{ g(x) }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    (
        "{% macro g(o, k) %}{{ o|attr(k) }}{% endmacro %}{{ g(x, k='__globals__') }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    (
        "{% for k in ['__cla' ~ 'ss__'] %}{{ x[k] }}{% endfor %}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    (
        "{% for k in {'__class__': 1} %}{{ x[k] }}{% endfor %}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    (
        "{% if c %}{% set k = '__class__' %}{% else %}{% set k = m.role %}{% endif %}{{ x[k] }}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    ("{{ x['o' ~ 's'] }}", "chat-template.obfuscated-name", Severity.HIGH),
    ("{{ '{0.__class__.__init__}'.format(x) }}", "chat-template.dunder-access", Severity.CRITICAL),
    ("{{ x|map('attr', '__class__')|list }}", "chat-template.dunder-access", Severity.CRITICAL),
    ("{{ x|map(attribute='__class__')|list }}", "chat-template.dunder-access", Severity.CRITICAL),
    ("{{ x|selectattr('a.__class__')|list }}", "chat-template.dunder-access", Severity.CRITICAL),
    ("{{ x|sum('__len__') }}", "chat-template.dunder-access", Severity.CRITICAL),
    (
        "{% set ns = namespace() %}{% set ns.__init__ = 1 %}",
        "chat-template.dunder-access",
        Severity.CRITICAL,
    ),
    ("{{ x._private }}", "chat-template.private-attribute", Severity.HIGH),
    ("{% include 'other.jinja' %}", "chat-template.include", Severity.MEDIUM),
    ("{% import 'macros.jinja' as m %}", "chat-template.include", Severity.MEDIUM),
]


@pytest.mark.parametrize(("template", "rule", "severity"), HOSTILE)
def test_hostile_template(template, rule, severity):
    assert severity_of(analyze(template), rule) is severity


COMPUTED = [
    # A variable set from the model's own configuration.
    "{% set name = bos_token %}{{ messages[0][name] }}",
    # Macro parameters given a configuration value, or passed around.
    "{% macro get(obj, key) %}{{ obj[key] }}{% endmacro %}{{ get(x, eos_token) }}",
    "{% macro get(obj, key) %}{{ obj[key] }}{% endmacro %}{% set h = get %}{{ h(x, y) }}",
    "{% macro get(obj, key) %}{{ obj[key] }}{% endmacro %}{{ get(x, *names) }}",
    # Concatenations and filter results that are not constant.
    "{{ x[y ~ z] }}",
    "{{ x['__' ~ message.role] }}",
    "{{ x[(lipsum|string)[18] * 2 ~ 'class'] }}",
    "{{ x|attr(message.role) }}",
    "{{ x|attr(name) }}",
    "{{ x|map(filter_name)|list }}",
    "{{ x[strftime_now('%d')] }}",
]


@pytest.mark.parametrize("template", COMPUTED)
def test_computed_name(template):
    assert severity_of(analyze(template), "chat-template.computed-attribute") is Severity.HIGH


def test_finding_names_line():
    findings = analyze("line one\n{{ x.__class__ }}")
    assert findings[0].details["line"] == 2


def test_finding_located_and_offset():
    scanner = ChatTemplateFileScanner(ScanContext("model.gguf", 100), Format.GGUF)
    findings = analyze_chat_template(
        "{{ x.__class__ }}", scanner, "model.gguf:tokenizer.chat_template", offset=40
    )
    assert findings[0].file == "model.gguf:tokenizer.chat_template"
    assert findings[0].offset == 40


def test_repeated_findings_capped():
    findings = analyze("{{ x.__class__ }}" * 30)
    dunder = [f for f in findings if f.rule == "chat-template.dunder-access"]
    assert len(dunder) == 11
    assert dunder[-1].details["hidden"] == 20


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("__class__", True),
        ("__cl", True),
        ("os", True),
        ("_globals_", True),
        ("Popen", True),
        ("________", False),
        ("<|im_start|>", False),
        ("Text with __bold__ words", False),
        ("content", False),
        ("", False),
    ],
)
def test_sensitive_name(value, expected):
    assert is_sensitive_name(value) is expected


# --- Malformed and oversized templates -------------------------------------------


def test_unparseable_template():
    findings = analyze("{% for m in messages %}{{ m }")
    assert severity_of(findings, "chat-template.unparseable") is Severity.MEDIUM


def test_huge_number_literal_unparseable():
    findings = analyze("{{ x[1" + "0" * 5000 + "] }}")
    assert rules(findings) == {"chat-template.unparseable"}


def test_unparseable_names_line():
    findings = analyze("ok\nok\n{{ x[ }}")
    assert findings[0].details["line"] == 3


def test_template_over_size_limit():
    findings = analyze("x" * 101, TemplateLimits(max_bytes=100))
    assert severity_of(findings, "chat-template.limit-exceeded") is Severity.MEDIUM


def test_template_over_node_limit():
    findings = analyze("{{ a }}" * 50, TemplateLimits(max_nodes=20))
    assert rules(findings) == {"chat-template.limit-exceeded"}


def test_template_over_depth_limit():
    template = "{% if a %}" * 30 + "x" + "{% endif %}" * 30
    findings = analyze(template, TemplateLimits(max_depth=10))
    assert rules(findings) == {"chat-template.limit-exceeded"}


def test_parser_recursion_is_limit():
    findings = analyze("{{ " + "(" * 500 + "1" + ")" * 500 + " }}")
    assert rules(findings) == {"chat-template.limit-exceeded"}


@pytest.mark.parametrize(
    "template",
    [
        "{{ x['a' * 1000000000] }}",
        "{{ x['a' * 100000 * 100000] }}",
        "{{ x['%999999999s'|format('a')] }}",
        "{{ x['{:999999999}'.format('a')] }}",
        "{{ x[('a' ~ 'b') * 99999999] }}",
        "{{ 2 ** 2 ** 2 ** 2 ** 2 ** 2 }}",
        "{{ x['ab'|replace('', 'c' * 60000)] }}",
        "{{ x['a'.center(999999999)] }}",
        "{{ x[('a', 'b') * 99999999] }}",
        "{% set a = a ~ a %}{% set a = a ~ a %}{{ x[a] }}",
        "{{ x['abc'.encode('utf_32').decode('base64')] }}",
    ],
)
def test_evaluator_bounded(template):
    started = time.monotonic()
    analyze(template)
    assert time.monotonic() - started < 1.0


def chain(first: str, step: str, length: int = 20) -> str:
    links = "".join(
        "{% set a" + str(i) + " = " + step.format(f"a{i - 1}") + " %}" for i in range(1, length)
    )
    return "{% set a0 = " + first + " %}" + links + "{{ y[a" + str(length - 1) + "] }}"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (chain("x", "{0} if c else {0}"), set()),
        (chain("x ~ z", "{0} if c else {0}"), {"chat-template.computed-attribute"}),
        (chain("'_'", "{0} ~ {0}"), {"chat-template.computed-attribute"}),
    ],
)
def test_variable_chains_bounded(template, expected):
    started = time.monotonic()
    findings = analyze(template)
    assert time.monotonic() - started < 2.0
    assert rules(findings) == expected


def test_template_over_token_limit():
    findings = analyze("{{ a }}" * 20, TemplateLimits(max_tokens=30))
    assert rules(findings) == {"chat-template.limit-exceeded"}


def test_token_limit_bounds_time():
    template = "{% for message in messages %}{{ message['role'] ~ message.content }}{% endfor %}"
    started = time.monotonic()
    findings = analyze(template * 5000)
    assert rules(findings) == {"chat-template.limit-exceeded"}
    assert time.monotonic() - started < 5.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(
            [
                "{{",
                "}}",
                "{%",
                "%}",
                "set",
                "for",
                "in",
                "endfor",
                "if",
                "endif",
                "x",
                "y",
                "[",
                "]",
                "(",
                ")",
                ".",
                "|",
                "~",
                "+",
                "*",
                "'_'",
                "'__'",
                "'class'",
                "2",
                "attr",
                "join",
                "reverse",
                "format",
                "=",
                ",",
                " ",
                "lipsum",
                "__init__",
                "macro",
                "endmacro",
                "::-1",
                "-1",
                ":",
            ]
        ),
        max_size=40,
    )
)
def test_fuzz_never_raises(pieces):
    findings = analyze("".join(pieces))
    assert all(isinstance(finding, Finding) for finding in findings)


# --- The .jinja file scanner -------------------------------------------------------


def test_jinja_file_scanned_by_name():
    data = b"{{ cycler.__init__.__globals__ }}"
    _, result = scan_bytes(
        data, ScanContext("chat_template.jinja", len(data)), "chat_template.jinja"
    )
    assert "chat-template.dunder-access" in rules(result.findings)


def test_clean_jinja_file():
    data = CHATML.encode()
    _, result = scan_bytes(
        data, ScanContext("chat_template.jinja", len(data)), "chat_template.jinja"
    )
    assert result.findings == []


def test_jinja_file_over_limit():
    scanner = ChatTemplateFileScanner(
        ScanContext("big.jinja", 300), Format.TEXT, TemplateLimits(max_bytes=100)
    )
    for _ in range(3):
        scanner.feed(memoryview(b"x" * 100))
    assert rules(scanner.close().findings) == {"chat-template.limit-exceeded"}


# --- Chat templates in JSON configuration --------------------------------------------


def scan_json(name: str, document: object) -> list[Finding]:
    data = json.dumps(document).encode()
    scanner = JsonConfigScanner(ScanContext(name, len(data)), Format.JSON)
    scanner.feed(memoryview(data))
    return scanner.close().findings


def test_tokenizer_config_template_analysed():
    findings = scan_json(
        "tokenizer_config.json", {"chat_template": "{{ lipsum.__globals__ }}", "bos_token": "<s>"}
    )
    dunder = [f for f in findings if f.rule == "chat-template.dunder-access"]
    assert dunder[0].file == "tokenizer_config.json:chat_template"


def test_tokenizer_config_clean_template():
    assert scan_json("tokenizer_config.json", {"chat_template": QWEN2}) == []


def test_named_templates_analysed():
    templates = [
        {"name": "default", "template": CHATML},
        {"name": "tool_use", "template": "{{ x|attr('__class__') }}"},
    ]
    findings = scan_json("tokenizer_config.json", {"chat_template": templates})
    assert {f.file for f in findings} == {"tokenizer_config.json:chat_template.tool_use"}


def test_chat_template_json_analysed():
    findings = scan_json("chat_template.json", {"chat_template": "{{ self.__dict__ }}"})
    assert "chat-template.gadget" in rules(findings)


@pytest.mark.parametrize("value", [42, [{"name": "x"}], ["text"]])
def test_invalid_chat_template_value(value):
    findings = scan_json("tokenizer_config.json", {"chat_template": value})
    assert severity_of(findings, "hf.invalid-chat-template") is Severity.MEDIUM


def test_named_templates_bounded():
    templates = [{"name": f"t{i}", "template": CHATML} for i in range(70)]
    findings = scan_json("tokenizer_config.json", {"chat_template": templates})
    assert severity_of(findings, "chat-template.limit-exceeded") is Severity.MEDIUM
    assert findings[0].details["skipped"] == 6


def test_null_chat_template_ignored():
    assert scan_json("tokenizer_config.json", {"chat_template": None}) == []


@pytest.fixture
def hostile_repository(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    config = {
        "bos_token": "<s>",
        "chat_template": "{% set a = '_' ~ '_' ~ 'class' ~ '_' ~ '_' %}{{ messages[a] }}",
    }
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").write_text(CHATML)
    return model


def test_pipeline_reports_tokenizer_config(hostile_repository):
    findings = inspect(hostile_repository).findings
    located = {f.file for f in findings if f.rule.startswith("chat-template.")}
    assert located == {"tokenizer_config.json:chat_template"}


def test_pipeline_blocks_hostile_template(hostile_repository, tmp_path):
    admission = admit(hostile_repository, home=tmp_path / "home")
    assert admission.action == "block"
    recorded = {f["rule"] for f in admission.record["findings"]}
    assert "chat-template.dunder-access" in recorded
