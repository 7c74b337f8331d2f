"""Hypothesis strategies for hostile requests, built from the messages' descriptors.

Three kinds, as a careless or malicious client sends them:

- ``messages``: any well-typed message of a type: strings empty, huge, unicode,
  with NUL; integers at the int32 extremes; enum numbers the enum does not
  define; repeated fields empty, short or past the batch limits; payloads of
  any JSON shape, NaN and infinities included, nested almost as deep as the
  protobuf parser allows; page-token look-alikes;
- mutations: a valid request with exactly one field (at any depth, ``field_paths``)
  replaced by such a value (``field_values``, ``replaced``), so that every other
  field still passes its checks;
- ``raw_bodies``: bytes sent as the request body, which the server may not even
  parse: random bytes, valid requests with a byte changed or cut short, and
  hand-made encodings no protobuf library would write (a string that is not
  UTF-8, a wrong wire type, a length past the end, nesting past the limit).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from typing import Any, cast

from google.protobuf import message_factory, struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from jobqueue.runtime.server import MAX_MESSAGE_BYTES
from worker_svc.builtins import MAX_TEXT_CHARS

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: Protobuf parsers refuse messages nested deeper than this (upb's and the C++ default).
PARSER_DEPTH_LIMIT = 100

#: Strings that often break services: blanks, NUL and other control characters, line and
#: bidi separators, astral characters, look-alikes of SQL and format strings, the names and ids
#: the services know, and lengths on both sides of every limit.
SPECIAL_STRINGS: tuple[str, ...] = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\r\n",
    "\u2028",
    "\u202e",
    "\ufeff",
    "😀" * 3,
    "%s%n{0}",
    "'; DROP TABLE jobs; --",
    "null",
    "reverse_string",
    "fibonacci_calc",
    "REVERSE_STRING",
    "reverse_string\x00",
    "dead",
    "Bearer",
    "00000000-0000-0000-0000-000000000000",
    "{00000000-0000-0000-0000-000000000000}",
    "urn:uuid:00000000-0000-0000-0000-000000000000",
    "a@b.co",
    "A@EXAMPLE.COM ",
    "x" * 72,
    "é" * 37,
    "x" * 255,
)
#: Long strings, as (unit, count), built only when drawn so that strategies stay small to print.
LONG_STRINGS: tuple[tuple[str, int], ...] = (
    ("x", 8193),
    ("x", MAX_TEXT_CHARS + 1),
    ("é", MAX_TEXT_CHARS + 1),
    ("x", MAX_MESSAGE_BYTES + 1),
)
SPECIAL_INTS: tuple[int, ...] = (*range(-1, 12), 100, 500, 501, 1000, 1001, 3600, 3601, INT32_MAX, INT32_MIN)

_RANGES = {
    FieldDescriptor.TYPE_INT32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_SINT32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_SFIXED32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


#: Page-token look-alikes: base64 of JSON lists whose parts are cursor parts of any type (times the
#: database cannot store among them), and of JSON nested deeper than a parser may recurse.
page_tokens: st.SearchStrategy[str] = st.one_of(
    st.lists(
        st.sampled_from(
            [
                "2026-01-01T00:00:00+00:00",
                "2026-01-01T00:00:00",
                "0001-01-01T00:00:00+05:00",
                "9999-12-31T23:59:59-05:00",
                "00000000-0000-0000-0000-000000000000",
                "dead",
                "QUEUED",
                "reverse_string",
            ]
        )
        | st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(max_size=8)
        | st.just([]),
        max_size=5,
    ).map(lambda parts: _token(json.dumps(parts))),
    st.integers(1, 2000).map(lambda depth: _token("[" * depth + "]" * depth)),
)
#: Strings of every kind but long: what the elements of a thousand-element list get, so that a
#: request stays within a few megabytes.
short_strings: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(SPECIAL_STRINGS), page_tokens, st.text(max_size=40), st.uuids().map(str)
)
strings: st.SearchStrategy[str] = st.one_of(
    short_strings,
    st.sampled_from(LONG_STRINGS).map(lambda long: long[0] * long[1]),
    # Long runs of any characters, multi-byte ones included.
    st.builds(lambda unit, count: unit * count, st.text(min_size=1, max_size=3), st.sampled_from([100, 5000, 40_000])),
)


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    """Any integer in [low, high], the boundaries of the services' limits more often than chance would give."""
    return st.sampled_from([n for n in SPECIAL_INTS if low <= n <= high] + [low, high]) | st.integers(low, high)


#: Any float, the ones JSON cannot write and those past exact integers more often than chance would give.
numbers: st.SearchStrategy[float] = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.5, 2.0**53 + 2, 1e308, 5e-324]),
    st.floats(),
    st.integers(-(2**70), 2**70).map(float),
)


def _nested_list(depth: int) -> struct_pb2.Value:
    value = struct_pb2.Value(string_value="deep")
    for _ in range(depth):
        value = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[value]))
    return value


def _values(text: st.SearchStrategy[str]) -> st.SearchStrategy[struct_pb2.Value]:
    """Any google.protobuf.Value: every kind, lists and structs of them, lists nested almost as deep as allowed."""
    scalars = st.one_of(
        st.just(struct_pb2.Value()),  # no kind set at all
        st.just(struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)),
        st.builds(lambda b: struct_pb2.Value(bool_value=b), st.booleans()),
        st.builds(lambda n: struct_pb2.Value(number_value=n), numbers),
        st.builds(lambda s: struct_pb2.Value(string_value=s), text),
    )
    return st.one_of(
        st.recursive(
            scalars,
            lambda inner: st.one_of(
                st.lists(inner, max_size=3).map(
                    lambda items: struct_pb2.Value(list_value=struct_pb2.ListValue(values=items))
                ),
                st.dictionaries(st.text(max_size=5), inner, max_size=3).map(
                    lambda fields: struct_pb2.Value(struct_value=struct_pb2.Struct(fields=fields))
                ),
            ),
            max_leaves=8,
        ),
        # Each list level is two message levels (Value, ListValue); protobuf itself refuses to build a
        # message past its parser's limit, so deeper ones are among HAND_MADE_BODIES.
        st.sampled_from([10, 30, 45]).map(_nested_list),
    )


def _scalars(text: st.SearchStrategy[str]) -> dict[int, st.SearchStrategy[Any]]:
    return {
        FieldDescriptor.TYPE_STRING: text,
        FieldDescriptor.TYPE_BYTES: st.binary(max_size=64),
        FieldDescriptor.TYPE_BOOL: st.booleans(),
        FieldDescriptor.TYPE_DOUBLE: numbers,
        FieldDescriptor.TYPE_FLOAT: st.floats(width=32),
        **{kind: integers(low, high) for kind, (low, high) in _RANGES.items()},
    }


_ANY = (_scalars(strings), _values(strings))
_SHORT = (_scalars(short_strings), _values(short_strings))


def field_values(field: FieldDescriptor, *, short: bool = False) -> st.SearchStrategy[Any]:
    """Any value of the field's type (with ``short``, no long strings); None for a field with presence means unset."""
    if field.is_repeated:
        return st.one_of(
            st.lists(_single_values(field, short=short), max_size=4),
            # Past the batch limits without drawing a thousand elements one by one.
            st.builds(
                lambda item, count: [item] * count, _single_values(field, short=True), st.sampled_from([1000, 1001])
            ),
        )
    single = _single_values(field, short=short)
    return st.none() | single if field.has_presence else single


def _single_values(field: FieldDescriptor, *, short: bool) -> st.SearchStrategy[Any]:
    scalars, values = _SHORT if short else _ANY
    if field.enum_type is not None:
        defined = [v.number for v in field.enum_type.values]
        return st.sampled_from([*defined, max(defined) + 1, -1]) | integers(INT32_MIN, INT32_MAX)
    message_type = field.message_type
    if message_type is None:
        return scalars[field.type]
    if message_type.full_name == struct_pb2.Value.DESCRIPTOR.full_name:
        return values
    if message_type.full_name == struct_pb2.Struct.DESCRIPTOR.full_name:
        # A JSON object (a map field, which messages() cannot build): a struct value as it is, any other
        # value under one key.
        return values.map(
            lambda v: v.struct_value if v.HasField("struct_value") else struct_pb2.Struct(fields={"value": v})
        )
    return st.deferred(lambda: messages(message_factory.GetMessageClass(message_type), short=short))


def _fields(message: Message | type[Message]) -> list[FieldDescriptor]:
    # The stubs type a descriptor as the pure-Python class or upb's; both have the same API.
    return cast(list[FieldDescriptor], list(message.DESCRIPTOR.fields))


def messages(cls: type[Message], *, short: bool = False) -> st.SearchStrategy[Message]:
    """Any message of the type: each field left unset or given any value of its type."""
    fields = {field.name: field_values(field, short=short) for field in _fields(cls)}
    return st.fixed_dictionaries({}, optional=fields).map(lambda chosen: _build(cls(), chosen))


def _build(message: Message, chosen: dict[str, Any]) -> Message:
    by_name = {field.name: field for field in _fields(message)}
    for name, value in chosen.items():
        _set(message, by_name[name], value)
    return message


def _set(message: Message, field: FieldDescriptor, value: Any) -> None:
    if value is None:
        message.ClearField(field.name)
    elif field.is_repeated:
        message.ClearField(field.name)
        getattr(message, field.name).extend(value)
    elif field.message_type is not None:
        getattr(message, field.name).CopyFrom(value)
    else:
        setattr(message, field.name, value)


class FieldPath:
    """Where a field is in a message: the names and list indexes leading to it, and the field itself.

    A plain class, not a dataclass, so that Hypothesis prints it as the path (``requests[0].id``).
    """

    def __init__(self, steps: tuple[str | int, ...], field: FieldDescriptor) -> None:
        self.steps = steps
        self.field = field

    def __repr__(self) -> str:
        return ".".join(f"[{s}]" if isinstance(s, int) else s for s in self.steps).replace(".[", "[")


def field_paths(message: Message, prefix: tuple[str | int, ...] = ()) -> list[FieldPath]:
    """Every field of ``message``, and of the messages inside it (each element of a repeated one too)."""
    paths = []
    for field in _fields(message):
        here = (*prefix, field.name)
        paths.append(FieldPath(here, field))
        if field.message_type is None or field.message_type.full_name.startswith("google.protobuf."):
            continue
        if field.is_repeated:
            for i, item in enumerate(getattr(message, field.name)):
                paths.extend(field_paths(item, (*here, i)))
        elif message.HasField(field.name):
            paths.extend(field_paths(getattr(message, field.name), here))
    return paths


def replaced(valid: Message, path: FieldPath, value: Any) -> Message:
    """A copy of ``valid`` with the field at ``path`` set to ``value`` (None: cleared)."""
    copy = type(valid)()
    copy.CopyFrom(valid)
    target: Any = copy
    for step in path.steps[:-1]:
        target = target[step] if isinstance(step, int) else getattr(target, step)
    _set(target, path.field, value)
    return copy


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(field_number: int, body: bytes) -> bytes:
    """``body`` as field ``field_number`` with wire type 2 (a string, bytes or message)."""
    return _varint(field_number << 3 | 2) + _varint(len(body)) + body


def nested_payload(depth: int) -> bytes:
    """A CreateJobRequest whose payload is a list inside a list ... ``depth`` lists deep, encoded by hand.

    No protobuf library will serialize a message nested past its parser's limit,
    but a client without one can send it.
    """
    value = length_delimited(3, b"deep")  # Value.string_value
    for _ in range(depth):
        value = length_delimited(6, length_delimited(1, value))  # Value.list_value, ListValue.values
    return length_delimited(1, b"reverse_string") + length_delimited(2, value)


#: Encodings a protobuf library would not write, each a request body of its own.
HAND_MADE_BODIES: tuple[bytes, ...] = (
    length_delimited(1, b"\xff\xfe"),  # field 1 (a string or a message in every request here): neither
    length_delimited(1, b"\xed\xa0\x80"),  # a UTF-8-encoded surrogate
    b"\x08\x01",  # field 1 as a varint: the wrong wire type for a string
    b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end of the body
    b"\x0a",  # a tag with nothing after it
    b"\x80",  # a varint cut short
    b"\x00",  # field number 0, which protobuf forbids
    b"\x0b\x0c",  # a start-group and end-group pair (deprecated wire types 3 and 4)
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # a tag varint longer than ten bytes
    nested_payload(PARSER_DEPTH_LIMIT // 2 - 5),
    nested_payload(PARSER_DEPTH_LIMIT),
    nested_payload(5 * PARSER_DEPTH_LIMIT),
)


def _damaged(body: bytes, position: int, byte: int, cut: bool) -> bytes:
    if not body:
        return bytes([byte])
    position %= len(body)
    return body[:position] if cut else body[:position] + bytes([byte]) + body[position + 1 :]


def raw_bodies(valid: Sequence[Message]) -> st.SearchStrategy[bytes]:
    """Request bodies of any bytes: random, hand-made, and ``valid`` requests damaged by one byte or cut short."""
    encoded = [message.SerializeToString() for message in valid]
    damaged: st.SearchStrategy[bytes] = st.builds(
        _damaged, st.sampled_from(encoded), st.integers(0, 2**16), st.integers(0, 255), st.booleans()
    )
    return st.one_of(st.binary(max_size=128), st.sampled_from(HAND_MADE_BODIES), damaged)
