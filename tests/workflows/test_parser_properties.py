"""Property-based hostile input for every parser of JSON that enters from outside (issue 12, "Keep it
true"): any JSON value, of any type, depth (far beyond ``MAX_DEPTH``, up to a few thousand levels,
built iteratively) or size, ends in a parsed value or an ``InputError`` naming a field: never another
exception, never a ``RecursionError``. What parses re-encodes as strict JSON (finite numbers only).

Deterministic for CI: every test runs with ``derandomize=True`` (the examples follow from the test's
source, no seed and no example database), so a run in CI tries exactly what it tried here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.properties import examples
from workflows.parsing import MAX_DEPTH, MAX_SAFE_INTEGER, InputError, check_json, json_from_text
from workflows.reference.budget import BUDGET_FIELDS, BudgetInput, SpendSignal
from workflows.reference.campaign import CAMPAIGN_FIELDS, CampaignInput
from workflows.reference.pipeline import DEPLOYMENT_FIELDS, DeploymentInput
from workflows.reference.registry import KINDS, build_start
from workflows.reference.saga import ORDER_FIELDS, OrderInput
from workflows.types import INPUT_FIELDS, ApprovalInput, CancelSignal, DecisionSignal, PolicySnapshot

PROPERTY = settings(
    max_examples=examples(120),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---- strategies: JSON values of every type, depth and size ---------------------------------------

LONG_TEXT = st.builds(lambda n: "x" * n, st.sampled_from([151, 301, 10_001, 70_000]))  # past every length limit
TEXT = st.text(max_size=12) | st.sampled_from(["", " ", "\x00", "a\x00b", "approve", "reject"]) | LONG_TEXT
NUMBERS = (
    st.integers()
    | st.sampled_from([MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, -(2**63), 2**64, 10**400, 0, -1, 1])
    | st.floats()  # NaN and both infinities included
    | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324])
)
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
KEYS = st.text(max_size=8) | st.sampled_from(["\x00", "", *INPUT_FIELDS, "aprovers"])
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25,
)


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """A value nested ``depth`` levels (arrays, objects or both in turn), built by a loop: Hypothesis
    cannot draw thousands of levels one by one, and a recursive builder would hit the limit we test."""
    depth = draw(st.sampled_from([MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 500, 999, 1000, 1001, 3000]))
    shape = draw(st.sampled_from(["array", "object", "both"]))
    key = draw(st.sampled_from(["payload", "a", "groups", "items"]))
    value: Any = draw(SCALARS)
    for level in range(depth):
        value = [value] if shape == "array" or (shape == "both" and level % 2) else {key: value}
    return value


@st.composite
def wide(draw: st.DrawFn) -> Any:
    """Around ``MAX_NODES`` values in one array or object (the size limit), built by a loop."""
    size = draw(st.sampled_from([0, 1, 9_999, 10_000, 10_001, 25_000]))
    if draw(st.booleans()):
        return list(range(size))
    return {f"k{i}": i for i in range(size)}


ANY = JSON | deep() | wide()


def shaped(fields: tuple[str, ...], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the parser's own field names (so the checks past the type test are reached),
    sometimes with an unknown key too."""
    known = st.dictionaries(st.sampled_from(fields), values, max_size=len(fields))
    extra = st.dictionaries(KEYS, ANY, max_size=2)
    return st.builds(lambda a, b, inner: {**b, **a} if inner else {**a, **b}, known, extra, st.booleans()) | known


NAMES = st.lists(TEXT | st.sampled_from(["approvers", "bob", "carol"]), max_size=4)
PLAUSIBLE = ANY | TEXT | NUMBERS | NAMES | st.fixed_dictionaries({}, optional={"groups": NAMES, "users": NAMES})
LEVEL = shaped(("groups", "users", "timeout_seconds", "reminder_seconds", "required_approvals"), PLAUSIBLE)
ITEM = shaped(("sku", "quantity"), PLAUSIBLE)
NESTED = PLAUSIBLE | st.lists(LEVEL | ITEM | PLAUSIBLE, max_size=4) | st.sampled_from(list(KINDS) + ["expire", ""])


# ---- the property ----------------------------------------------------------------------------------

PYTHON_TYPE_NAMES = re.compile(r"\bgot (dict|list|tuple|NoneType|str|int|float|bool)\b")


def finite_numbers(value: Any) -> None:
    """Every number in ``value`` is finite and a whole number is within JSON's interoperable range;
    iterative, like ``check_json``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, float):
            assert math.isfinite(item), item
        elif isinstance(item, int) and not isinstance(item, bool):
            assert abs(item) <= MAX_SAFE_INTEGER, item


def parses_or_refuses(parse: Callable[[Any], Any], raw: Any) -> Any:
    """The one property: a value or an ``InputError`` that names a field in JSON's words; a parsed
    value re-encodes as strict JSON (``allow_nan=False`` refuses NaN and infinities)."""
    try:
        result = parse(raw)
    except InputError as exc:
        assert exc.field and str(exc).startswith(f"{exc.field}: "), str(exc)
        assert not PYTHON_TYPE_NAMES.search(str(exc)), str(exc)
        return None
    if dataclasses.is_dataclass(result):
        data = dataclasses.asdict(result)  # type: ignore[arg-type]
        json.dumps(data, allow_nan=False)
        finite_numbers(data)
    return result


VALID_APPROVAL = {"request_id": "r1", "title": "Laptop", "payload": {"amount": 1.5}, "approvers": {"groups": ["a"]}}
VALID_POLICY = {
    "slug": "s",
    "name": "S",
    "final_action": "expire",
    "levels": [{"groups": ["approvers"], "timeout_seconds": 60, "reminder_seconds": 30}],
}
VALID_ORDER = {"order_id": "o1", "amount": 10.5, "items": [{"sku": "desk", "quantity": 2}], "customer": "alice"}
VALID_BUDGET = {"team": "t", "balance": 100.0, "limit": 10, "queued": [{"amount": 1}], "seen": ["a"]}
VALID_CAMPAIGN = {"campaign_id": "c", "title": "T", "approvers": ["bob", "carol"], "payload": {"doc": "v2"}}
VALID_DEPLOYMENT = {"deployment_id": "d", "service": "s", "version": "1", "rollout_seconds": 0.5}


@PROPERTY
@given(raw=ANY | shaped(INPUT_FIELDS, NESTED))
@example(raw=VALID_APPROVAL)
@example(raw={"request_id": "r", "title": "t", "aprovers": {"groups": ["a"]}})
@example(raw={"request_id": "r", "title": "t", "payload": {"n": math.nan}})
def test_approval_input_parses_or_names_the_field(raw: Any) -> None:
    parses_or_refuses(ApprovalInput.parse, raw)


@PROPERTY
@given(raw=ANY | shaped(("decision", "user", "comment", "decision_id"), NESTED))
@example(raw={"decision": "approve", "user": "bob", "decision_id": "d1"})
@example(raw={"decision": ["approve"], "user": "bob", "decision_id": "d1"})
def test_decision_signal_parses_or_names_the_field(raw: Any) -> None:
    parses_or_refuses(DecisionSignal.parse, raw)


@PROPERTY
@given(raw=ANY | shaped(("user", "reason"), NESTED))
@example(raw={"user": "alice", "reason": "changed my mind"})
def test_cancel_signal_parses_or_names_the_field(raw: Any) -> None:
    parses_or_refuses(CancelSignal.parse, raw)


@PROPERTY
@given(
    raw=ANY
    | shaped(("slug", "name", "final_action", "levels", "version", "rejection_is_veto"), NESTED)
    | st.builds(lambda extra: {**VALID_POLICY, **extra}, shaped(("final_action", "levels", "version"), NESTED))
)
@example(raw=VALID_POLICY)
# A final action that is an array or object is unhashable: it was a TypeError from ``in FINAL_ACTIONS``.
@example(raw={**VALID_POLICY, "final_action": ["expire"]})
@example(raw={**VALID_POLICY, "final_action": {"expire": 1}})
@example(raw={**VALID_POLICY, "levels": [{"groups": ["a"], "timeout_seconds": 60, "reminder_seconds": [1]}]})
def test_policy_snapshot_parses_or_names_the_field(raw: Any) -> None:
    parses_or_refuses(PolicySnapshot.parse, raw)


@PROPERTY
@given(raw=ANY | shaped(ORDER_FIELDS, NESTED) | st.builds(lambda items: {**VALID_ORDER, "items": items}, NESTED))
@example(raw=VALID_ORDER)
@example(raw={**VALID_ORDER, "items": [{"sku": "a", "quantity": 10**400}]})
def test_order_input_parses_or_names_the_field(raw: Any) -> None:
    parses_or_refuses(OrderInput.parse, raw)


@PROPERTY
@given(raw=ANY | shaped(BUDGET_FIELDS, NESTED))
@example(raw=VALID_BUDGET)
@example(raw={**VALID_BUDGET, "spent": math.inf})
def test_budget_input_parses_or_names_the_field(raw: Any) -> None:
    parses_or_refuses(BudgetInput.parse, raw)


@PROPERTY
@given(raw=ANY | shaped(("amount", "by", "reason", "spend_id"), NESTED))
@example(raw={"amount": 5, "by": "alice", "spend_id": "s1"})
@example(raw={"amount": 1e309, "by": "alice"})
def test_spend_signal_parses_or_names_the_field(raw: Any) -> None:
    parses_or_refuses(SpendSignal.parse, raw)


@PROPERTY
@given(raw=ANY | shaped(CAMPAIGN_FIELDS, NESTED))
@example(raw=VALID_CAMPAIGN)
@example(raw={**VALID_CAMPAIGN, "part": "1.²"})
def test_campaign_input_parses_or_names_the_field(raw: Any) -> None:
    parses_or_refuses(CampaignInput.parse, raw)


@PROPERTY
@given(raw=ANY | shaped(DEPLOYMENT_FIELDS, NESTED))
@example(raw=VALID_DEPLOYMENT)
# An array or object as ``fail_with`` is tested against a tuple of strings: fine, but kept as a guard.
@example(raw={**VALID_DEPLOYMENT, "fail_with": ["InvalidArtifact"]})
def test_deployment_input_parses_or_names_the_field(raw: Any) -> None:
    parses_or_refuses(DeploymentInput.parse, raw)


FIELDS_OF_ALL_KINDS = tuple(sorted({*ORDER_FIELDS, *BUDGET_FIELDS, *CAMPAIGN_FIELDS, *DEPLOYMENT_FIELDS}))


@PROPERTY
@given(
    kind=st.sampled_from(list(KINDS)) | TEXT,
    data=ANY | shaped(FIELDS_OF_ALL_KINDS, NESTED),
    requested_by=TEXT,
)
@example(kind="order", data=VALID_ORDER, requested_by="alice")
@example(kind="campaign", data={**VALID_CAMPAIGN, "campaign_id": None}, requested_by="alice")
@example(kind="deployment", data={"service": "s", "version": "1", "deployment_id": ["x"] * 3}, requested_by="")
def test_build_start_for_every_kind_starts_or_names_the_field(kind: str, data: Any, requested_by: str) -> None:
    start = parses_or_refuses(lambda raw: build_start(kind, raw, requested_by=requested_by), data)
    if start is not None:
        # What is sent is what the workflow parses: it must parse there too, and re-encode.
        parses_or_refuses(KINDS[kind].parse, start.input)
        json.dumps(start.input, allow_nan=False)


@st.composite
def json_texts(draw: st.DrawFn) -> str:
    """Text a person could type in a JSON field: JSON of any value, deeply nested brackets (as text,
    far beyond what ``json.loads`` can recurse into), huge numbers, or any text at all."""
    choice = draw(st.sampled_from(["json", "brackets", "digits", "any"]))
    if choice == "json":
        return json.dumps(draw(JSON | wide()))  # deep values come as brackets: json.dumps recurses
    if choice == "brackets":
        depth = draw(st.sampled_from([MAX_DEPTH, MAX_DEPTH + 1, 1000, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"a":[', "]}")]))
        return opener * depth + "0" + closer * depth
    if choice == "digits":
        digits = draw(st.sampled_from([16, 309, 4300, 4301, 50_000]))
        return draw(st.sampled_from(['{"n": %s}', "[%s]", '{"n": -%s.5}', '{"n": %se999}'])) % ("9" * digits)
    return draw(st.text(max_size=50))


@PROPERTY
@given(text=json_texts())
@example(text='{"n": ' + "1" * 5000 + "}")  # was a ValueError (int digits limit), a 500 on the forms using it
@example(text="[" * 100_000)
@example(text='{"n": NaN}')
@example(text='{"n": 1e400}')
def test_json_from_text_parses_or_names_the_field(text: str) -> None:
    parses_or_refuses(lambda raw: json_from_text(raw, "payload"), text)


@PROPERTY
@given(value=ANY)
@example(value=[{"a": 1}, (1, 2)])
@example(value={1: "non-string key"})
def test_check_json_accepts_or_names_the_path(value: Any) -> None:
    def check(raw: Any) -> Any:
        check_json(raw, "input")
        json.dumps(raw, allow_nan=False)  # what it accepts, strict JSON holds
        finite_numbers(raw)
        return raw

    parses_or_refuses(check, value)


def test_the_valid_examples_parse_so_every_property_checks_a_parsed_value_too() -> None:
    cases: list[tuple[Callable[[Any], Any], dict[str, Any]]] = [
        (ApprovalInput.parse, VALID_APPROVAL),
        (PolicySnapshot.parse, VALID_POLICY),
        (OrderInput.parse, VALID_ORDER),
        (BudgetInput.parse, VALID_BUDGET),
        (CampaignInput.parse, VALID_CAMPAIGN),
        (DeploymentInput.parse, VALID_DEPLOYMENT),
    ]
    for parse, raw in cases:
        assert parses_or_refuses(parse, raw) is not None, raw


def test_an_unknown_key_that_is_empty_or_unprintable_is_still_named() -> None:
    for key, shown in [("", '""'), (" ", '" "'), ("a\nb", '"a\\nb"'), ("k" * 150, '"' + "k" * 100 + '"...')]:
        try:
            ApprovalInput.parse({"request_id": "r", "title": "t", key: 1})
        except InputError as exc:
            assert exc.field == shown and str(exc).startswith(f"{shown}: is not a known field")
        else:
            raise AssertionError(f"{key!r} was accepted")
