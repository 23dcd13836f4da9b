"""A new workspace's Prefect database starts as a copy of a migrated one (flows/prefect_env.py):
the template is a consistent snapshot taken once per Prefect version, never replaced, and a new
database is seeded from it whole (written beside, then renamed)."""

from __future__ import annotations

import sqlite3

import pytest

from enginesweep.flows import prefect_env

pytestmark = pytest.mark.unit


def test_a_migrated_database_becomes_the_template_and_seeds_the_next_workspace(tmp_path, monkeypatch):
    monkeypatch.setattr(prefect_env, "TEMPLATE_DIR", tmp_path / "cache")
    first = tmp_path / "ws1" / "prefect.db"
    first.parent.mkdir()
    with sqlite3.connect(first) as db:  # stands for a just-migrated database
        db.execute("create table alembic_version (version_num text)")
        db.execute("insert into alembic_version values ('head')")
    db.close()
    second = tmp_path / "ws2" / "prefect.db"
    second.parent.mkdir()
    assert not prefect_env._seed(second)  # no template yet: Prefect migrates the empty file
    prefect_env._keep_template(first)
    template = prefect_env._template()
    assert template.parent == tmp_path / "cache" and template.name.startswith("prefect-3.")
    assert prefect_env._seed(second)
    with sqlite3.connect(second) as db:
        assert db.execute("select version_num from alembic_version").fetchall() == [("head",)]
    db.close()
    assert [p.name for p in second.parent.iterdir()] == ["prefect.db"]  # nothing half-written left

    # the template is kept once: a later database (with runs in it) never replaces it
    with sqlite3.connect(first) as db:
        db.execute("insert into alembic_version values ('a flow run')")
    db.close()
    prefect_env._keep_template(first)
    with sqlite3.connect(template) as db:
        assert db.execute("select count(*) from alembic_version").fetchone() == (1,)
    db.close()


def test_a_configured_database_url_is_left_alone(tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, temporary_settings

    with temporary_settings(
        {PREFECT_API_DATABASE_CONNECTION_URL: "postgresql+asyncpg://u@127.0.0.1/prefect"}
    ):
        assert prefect_env._default_database(tmp_path) is None
