"""Payload schemas (job_svc/schemas.py) and the registry (job_svc/types.py), on pure values and fakes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from typing import Any

import pytest

from job_svc.model import DeclaredType
from job_svc.rules import MAX_VIOLATIONS
from job_svc.schemas import (
    MAX_PAYLOAD_BYTES,
    check_declarations,
    check_schema,
    compile_schema,
    generic_violation,
)
from job_svc.types import JobTypeRegistry
from jobqueue.runtime.errors import InvalidArgument
from jobqueue.runtime.limits import MAX_SCHEMA_BYTES
from jobqueue.worker.job_types import JobType, PayloadError
from tests.support.fake_job_service import FakeTypeSource, declared
from tests.support.processes import ROOT
from worker_svc import builtins, demo

ITEMS = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 3}},
                "required": ["name"],
            },
        }
    },
    "required": ["items"],
}


def test_the_built_in_schemas_are_the_ones_the_migration_installs() -> None:
    sql = (ROOT / "migrations" / "0010_job_types.sql").read_text()
    seeded = {
        name: (summary, json.loads(schema))
        for name, summary, schema in re.findall(r"\('(\w+)', '([^']*)',\s*'(\{[^']*\})', 1\)", sql)
    }
    assert seeded == {name: (t.summary, dict(t.schema)) for name, t in builtins.worker.types.items()}
    assert all(t.version == 1 and t.max_attempts is t.timeout_seconds is None for t in builtins.worker.types.values())


SAMPLES: list[Any] = [
    "", "hello", "x" * 65_536, "x" * 65_537, 0, 1, 2.0, 2.5, -1, 10, 11, 600, 600.5, 100_000, 100_001, True, None,
    [], {}, ["a"],
]  # fmt: skip


@pytest.mark.parametrize(
    "job_type", [*builtins.worker.types.values(), *demo.worker.types.values()], ids=lambda t: t.name
)
def test_the_job_service_accepts_exactly_what_the_worker_takes(job_type: JobType) -> None:
    # What the job service accepts, the worker must run: its own check of the same schema never refuses it.
    schema = compile_schema(dict(job_type.schema))
    for payload in SAMPLES:
        try:
            job_type.parse(payload)
            parsed = True
        except PayloadError:
            parsed = False
        assert (schema.violations(payload) == []) == parsed, (job_type.name, payload)


def test_violations_name_the_path_of_each_error_inside_the_payload() -> None:
    schema = compile_schema(ITEMS)
    payload = {"items": [{"name": "ok"}, {}, {"name": "long"}, {"name": 5}]}
    found = [(v.field, v.description) for v in schema.violations(payload)]
    assert found == [
        ("payload.items[1]", "'name' is a required property"),
        ("payload.items[2].name", "'long' is too long"),
        ("payload.items[3].name", "5 is not of type 'string'"),
    ]
    assert schema.violations({"items": []}) == []
    assert [v.field for v in schema.violations({"items": [{"name": "x"}]}, "requests[4].payload")] == []
    [odd] = compile_schema({"properties": {"two words": {"type": "string"}}}).violations({"two words": 1})
    assert odd.field == 'payload["two words"]'


def test_an_echoed_value_is_cut_and_violations_are_bounded() -> None:
    [long] = compile_schema({"type": "integer"}).violations("y" * 100_000)
    assert len(long.description) < 200
    assert "100000 characters" in long.description
    many = compile_schema({"type": "array", "items": {"type": "string"}}).violations(list(range(50)))
    assert len(many) == MAX_VIOLATIONS + 1
    assert many[-1].field == "payload"
    assert "more violations" in many[-1].description


def test_the_generic_rules_hold_for_every_type() -> None:
    missing = generic_violation(None)
    assert missing is not None
    assert (missing.field, missing.description) == ("payload", "is required")
    nul = generic_violation({"a": [1, {"b": "x\x00y"}]})
    assert nul is not None
    assert nul.field == "payload.a[1].b"
    key = generic_violation({"k\x00": 1})
    assert key is not None
    assert "NUL" in key.description
    big = generic_violation({"s": "x" * MAX_PAYLOAD_BYTES})
    assert big is not None
    assert "1048576 bytes as JSON" in big.description
    assert generic_violation("x" * 65_536) is None
    assert generic_violation({"s": "é" * 1000}) is None


def declaration(**changes: Any) -> DeclaredType:
    values: dict[str, Any] = {"name": "resize", "summary": "an image", "payload_schema": ITEMS, "version": 1}
    return DeclaredType(**{**values, **changes})


@pytest.mark.parametrize(
    ("types", "field", "message"),
    [
        ([], "job_types", "must hold 1 to 100 job types"),
        ([declaration(name=f"t{i}") for i in range(101)], "job_types", "must hold 1 to 100"),
        ([declaration(name="Resize")], "job_types[0].name", "must be lowercase letters"),
        ([declaration(), declaration()], "job_types[1].name", "'resize' is declared twice"),
        ([declaration(summary="s" * 501)], "job_types[0].summary", "at most 500 characters"),
        ([declaration(version=0)], "job_types[0].version", "must be 1 or more"),
        ([declaration(default_max_attempts=11)], "job_types[0].default_max_attempts", "must be 1 to 10"),
        ([declaration(default_timeout_seconds=3601)], "job_types[0].default_timeout_seconds", "must be 1 to 3600"),
        ([declaration(payload_schema={"type": "strin"})], "job_types[0].payload_schema", "is not a valid JSON Schema"),
        ([declaration(payload_schema={"minimum": "0"})], "job_types[0].payload_schema", "is not of type 'number'"),
        ([declaration(payload_schema={"pattern": "("})], "job_types[0].payload_schema", "is not a valid JSON Schema"),
        (
            [declaration(payload_schema={"$schema": "https://example.com/mine"})],
            "job_types[0].payload_schema",
            "not a JSON Schema draft this service knows",
        ),
        (
            [declaration(payload_schema={"$ref": "http://127.0.0.1:9/schema.json"})],
            "job_types[0].payload_schema",
            "$ref 'http://127.0.0.1:9/schema.json' does not resolve inside the schema",
        ),
        (
            [declaration(payload_schema={"$ref": "#/$defs/missing"})],
            "job_types[0].payload_schema",
            "does not resolve",
        ),
        (
            [declaration(payload_schema={"enum": ["x" * MAX_SCHEMA_BYTES]})],
            "job_types[0].payload_schema",
            f"at most {MAX_SCHEMA_BYTES} bytes",
        ),
        ([declaration(payload_schema={"const": "a\x00"})], "job_types[0].payload_schema", "NUL character"),
    ],
)
def test_a_declaration_is_refused_naming_the_field(types: list[DeclaredType], field: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_declarations(types)
    assert [v.field for v in refused.value.violations] == [field]
    assert message in refused.value.violations[0].description


def test_schemas_of_other_drafts_and_local_references_are_accepted() -> None:
    check_declarations([declaration(payload_schema={"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"})])
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"n": {"type": "integer"}}}
    assert check_schema({**draft7, "$ref": "#/definitions/n"}) is None
    assert compile_schema({**draft7, "$ref": "#/definitions/n"}).violations("x") != []


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_an_unknown_name_waits_for_a_read_that_began_after_it_and_a_flood_shares_one() -> None:
    source, clock = FakeTypeSource(), Clock()
    registry = JobTypeRegistry(source, clock=clock, soonest_seconds=0.05)
    assert await registry.find("reverse_string") is not None
    assert source.loads == 1
    for _ in range(100):
        assert await registry.find("no_such_type") is None
    assert source.loads == 1, "calls that arrive no later than the last read are answered from the copy"
    # Declared through another replica just after that read: a call arriving later must see it,
    # however soon, and a flood of calls arriving with it waits for the same one read.
    source.types["resize"] = declaration()
    clock.now = 0.01
    found, *floods = await asyncio.gather(registry.find("resize"), *(registry.find("no_such_type") for _ in range(100)))
    assert found is not None
    assert found.declared.version == 1
    assert floods == [None] * 100
    assert source.loads == 2


async def test_a_batch_naming_many_types_still_unknown_costs_one_read() -> None:
    source, clock = FakeTypeSource(), Clock()
    registry = JobTypeRegistry(source, clock=clock, soonest_seconds=0.05)
    await registry.refresh()
    source.types["resize"] = declaration()
    clock.now = 0.01
    await registry.look_up(["resize", *(f"made_up_{i}" for i in range(1000))])
    assert source.loads == 2
    assert registry.get("resize") is not None
    assert registry.get("made_up_7") is None


async def test_a_refresh_reads_the_table_only_when_it_changed_and_keeps_compiled_validators() -> None:
    source = FakeTypeSource()
    registry = JobTypeRegistry(source)
    await registry.refresh()
    await registry.refresh()
    assert source.loads == 1
    before = registry.get("reverse_string")
    reverse = declared(builtins.worker.types["reverse_string"])
    source.types["reverse_string"] = dataclasses.replace(reverse, declared_at=source.clock)
    await registry.refresh()
    after = registry.get("reverse_string")
    assert source.loads == 2
    assert before is not None
    assert after is not None
    assert after.declared.declared_at == source.clock
    assert after.schema is before.schema, "same name and version: the compiled validator is kept"


async def test_a_declaration_here_is_known_at_once() -> None:
    source, clock = FakeTypeSource(), Clock()
    registry = JobTypeRegistry(source, clock=clock)
    await registry.refresh()
    [stored] = await registry.declare([declaration()])
    assert stored.declared_at is not None
    known = registry.get("resize")
    assert known is not None
    assert known.schema.violations({"items": [{"name": "long"}]}) != []
