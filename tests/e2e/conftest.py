"""End-to-end tests: each module runs against a database of its own."""

from tests.support.databases import module_database  # noqa: F401 - the fixture `database_url`
