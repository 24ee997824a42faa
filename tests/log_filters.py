"""The two log filters the stacks alert on, evaluated the way the clouds document them, so a test
can run a real engine log line through the filter as deployed.

- `cloudwatch_json_matches`: CloudWatch Logs JSON filter patterns ("Using filter patterns to match
  terms in JSON log events", docs.aws.amazon.com /AmazonCloudWatch/latest/logs/
  matching-terms-json-log-events.html): `{ $.field = "value" }`, `!=`, `*` as a wildcard in a
  string value, terms combined with `&&` and `||` and grouped with parentheses.
- `logging_query_matches`: Cloud Logging query language ("Logging query language",
  cloud.google.com /logging/docs/view/logging-query-language): comparisons `=`, `!=`, `=~`
  (RE2 search), `!~`, `<`, `<=`, `>`, `>=` (severity by its rank), a parenthesised
  `("a" OR "b")` right-hand side, `NOT`, `AND` (also written as a line break or blank), `OR`,
  with OR binding tighter than AND ("NOT has highest precedence, followed by OR and AND").

Only these subsets are implemented; anything else raises ValueError, so a filter this module
cannot read fails its test instead of passing it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any

# LogSeverity ranks (google.logging.type.LogSeverity).
SEVERITY = {
    "DEFAULT": 0,
    "DEBUG": 100,
    "INFO": 200,
    "NOTICE": 300,
    "WARNING": 400,
    "ERROR": 500,
    "CRITICAL": 600,
    "ALERT": 700,
    "EMERGENCY": 800,
}

_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\|\||&&|!=|=~|!~|<=|>=|[{}()=<>:]|[^\s"(){}=<>!:|&]+)')


def _tokens(text: str) -> list[str]:
    out, pos, text = [], 0, text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot read filter at {text[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", r"\1", token[1:-1]) if token.startswith('"') else token


def _path(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens, self.i = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise ValueError(f"expected {expected or 'a token'}, found {token!r}")
        self.i += 1
        return token


Pred = Callable[[dict[str, Any]], bool]


# ---- CloudWatch Logs ----------------------------------------------------------------------------


def cloudwatch_json_matches(pattern: str, event: dict[str, Any]) -> bool:
    """Whether a JSON log event (the parsed line) matches a CloudWatch JSON filter pattern."""
    p = _Parser(_tokens(pattern))
    p.take("{")
    pred = _cw_or(p)
    p.take("}")
    if p.peek() is not None:
        raise ValueError(f"trailing {p.peek()!r}")
    return pred(event)


def _cw_or(p: _Parser) -> Pred:
    terms = [_cw_and(p)]
    while p.peek() == "||":
        p.take()
        terms.append(_cw_and(p))
    return lambda e: any(t(e) for t in terms)


def _cw_and(p: _Parser) -> Pred:
    terms = [_cw_term(p)]
    while p.peek() == "&&":
        p.take()
        terms.append(_cw_term(p))
    return lambda e: all(t(e) for t in terms)


def _cw_term(p: _Parser) -> Pred:
    if p.peek() == "(":
        p.take()
        inner = _cw_or(p)
        p.take(")")
        return inner
    selector = p.take()
    if not selector.startswith("$."):
        raise ValueError(f"a JSON term starts with $., not {selector!r}")
    op = p.take()
    if op not in ("=", "!="):
        raise ValueError(f"operator {op!r} is not supported here")
    value = _unquote(p.take())
    field = selector[2:]

    def equal(e: dict[str, Any]) -> bool:
        got = _path(e, field)
        return isinstance(got, str) and fnmatch.fnmatchcase(got, value)

    return equal if op == "=" else (lambda e: not equal(e))


# ---- Cloud Logging --------------------------------------------------------------------------------


def logging_query_matches(query: str, entry: dict[str, Any]) -> bool:
    """Whether a LogEntry (as a dict: resource, severity, jsonPayload, ...) matches a query."""
    p = _Parser(_tokens(query))
    pred = _lq_and(p)
    if p.peek() is not None:
        raise ValueError(f"trailing {p.peek()!r}")
    return pred(entry)


def _lq_and(p: _Parser) -> Pred:
    terms = [_lq_or(p)]
    while p.peek() not in (None, ")"):
        if p.peek() == "AND":
            p.take()
        terms.append(_lq_or(p))  # a blank or a line break is an implicit AND
    return lambda e: all(t(e) for t in terms)


def _lq_or(p: _Parser) -> Pred:
    terms = [_lq_not(p)]
    while p.peek() == "OR":
        p.take()
        terms.append(_lq_not(p))
    return lambda e: any(t(e) for t in terms)


def _lq_not(p: _Parser) -> Pred:
    if p.peek() == "NOT":
        p.take()
        inner = _lq_not(p)
        return lambda e: not inner(e)
    if p.peek() == "(":
        p.take()
        group = _lq_and(p)
        p.take(")")
        return group
    return _lq_comparison(p)


def _lq_comparison(p: _Parser) -> Pred:
    field = p.take()
    op = p.take()
    if op not in ("=", "!=", "=~", "!~", "<", "<=", ">", ">="):
        raise ValueError(f"operator {op!r} is not supported here")
    values = _lq_values(p)
    if op in ("!=", "!~"):
        positive = _lq_test(field, "=" if op == "!=" else "=~", values)
        return lambda e: not positive(e)
    return _lq_test(field, op, values)


def _lq_values(p: _Parser) -> list[str]:
    if p.peek() != "(":
        return [_unquote(p.take())]
    p.take()
    values = [_unquote(p.take())]
    while p.peek() == "OR":
        p.take()
        values.append(_unquote(p.take()))
    p.take(")")
    return values


def _lq_test(field: str, op: str, values: list[str]) -> Pred:
    def one(got: Any, want: str) -> bool:
        if got is None:
            return False
        if op == "=":
            return str(got) == want
        if op == "=~":
            return re.search(want, str(got)) is not None
        if field == "severity":
            return _ordered(op, SEVERITY[str(got)], SEVERITY[want])
        return _ordered(op, str(got), want)

    return lambda e: any(one(_path(e, field), v) for v in values)


def _ordered(op: str, a: Any, b: Any) -> bool:
    return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])
