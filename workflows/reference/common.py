"""Helpers shared by the reference workflows. Deterministic, standard library and temporalio only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from temporalio.exceptions import ApplicationError, FailureError

from workflows.parsing import InputError

Parsed = TypeVar("Parsed")


def root_cause(exc: BaseException) -> BaseException:
    """The innermost cause: the activity's or the child's own error."""
    while isinstance(exc, FailureError) and exc.cause is not None:
        exc = exc.cause
    return exc


def failure_message(exc: BaseException) -> str:
    """The innermost cause's message: what actually went wrong in a child or activity."""
    return str(root_cause(exc))


def invalid_input(exc: InputError) -> ApplicationError:
    """The workflow's failure for bad input: non-retryable, naming the field. Raise it ``from None``
    so the cause chain holds only this error."""
    return ApplicationError(f"invalid input: {exc}", exc.field, type="InvalidInput", non_retryable=True)


def parse_input(parse: Callable[[Any], Parsed], raw: Any) -> Parsed:
    """``parse(raw)``, the workflow's input; bad input fails the workflow (``invalid_input``)."""
    try:
        return parse(raw)
    except InputError as exc:
        raise invalid_input(exc) from None
