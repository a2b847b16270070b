"""Kubernetes name and label syntax, with the API server's messages."""

from __future__ import annotations

import re

DNS1123_LABEL_MAX_LENGTH = 63
DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_ERROR = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
DNS1123_SUBDOMAIN_FMT = rf"{DNS1123_LABEL_FMT}(\.{DNS1123_LABEL_FMT})*"
DNS1123_SUBDOMAIN_ERROR = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
QUALIFIED_NAME_ERROR = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
LABEL_VALUE_FMT = f"({QUALIFIED_NAME_FMT})?"
LABEL_VALUE_ERROR = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)


def _regex_message(message: str, examples: list[str], fmt: str) -> str:
    # Same shape as apimachinery's RegexError, double space after each comma included.
    shown = ",  or ".join(f"'{e}'" for e in examples)
    return f"{message} (e.g. {shown}, regex used for validation is '{fmt}')"


def _max_length(limit: int) -> str:
    return f"must be no more than {limit} characters"


def dns1123_label_problems(value: str) -> list[str]:
    problems = []
    if len(value) > DNS1123_LABEL_MAX_LENGTH:
        problems.append(_max_length(DNS1123_LABEL_MAX_LENGTH))
    if not re.fullmatch(DNS1123_LABEL_FMT, value):
        problems.append(_regex_message(DNS1123_LABEL_ERROR, ["my-name", "123-abc"], DNS1123_LABEL_FMT))
    return problems


DNS1123_SUBDOMAIN_MAX_LENGTH = 253


def dns1123_subdomain_problems(value: str) -> list[str]:
    problems = []
    if len(value) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        problems.append(_max_length(DNS1123_SUBDOMAIN_MAX_LENGTH))
    if not re.fullmatch(DNS1123_SUBDOMAIN_FMT, value):
        problems.append(_regex_message(DNS1123_SUBDOMAIN_ERROR, ["example.com"], DNS1123_SUBDOMAIN_FMT))
    return problems


def label_key_problems(key: str) -> list[str]:
    problems = []
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or not re.fullmatch(DNS1123_SUBDOMAIN_FMT, prefix)):
        problems.append(
            "prefix part " + _regex_message(DNS1123_SUBDOMAIN_ERROR, ["example.com"], DNS1123_SUBDOMAIN_FMT)
        )
    if not name:
        problems.append("name part must be non-empty")
    else:
        if len(name) > DNS1123_LABEL_MAX_LENGTH:
            problems.append(f"name part {_max_length(DNS1123_LABEL_MAX_LENGTH)}")
        if not re.fullmatch(QUALIFIED_NAME_FMT, name):
            problems.append(
                _regex_message(QUALIFIED_NAME_ERROR, ["MyName", "my.name", "123-abc"], QUALIFIED_NAME_FMT)
            )
    return problems


def label_value_problems(value: str) -> list[str]:
    problems = []
    if len(value) > DNS1123_LABEL_MAX_LENGTH:
        problems.append(_max_length(DNS1123_LABEL_MAX_LENGTH))
    if not re.fullmatch(LABEL_VALUE_FMT, value):
        problems.append(_regex_message(LABEL_VALUE_ERROR, ["MyValue", "my_value", "12345"], LABEL_VALUE_FMT))
    return problems
