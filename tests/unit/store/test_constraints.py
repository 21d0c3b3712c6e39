"""store.constraints: the unique constraint that refused a row, on both stores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from fleetward.identity.models import Tenant, TenantKind
from fleetward.platform import Platform
from fleetward.store.constraints import violates_unique

COLUMNS = Tenant.__table__.c


def _tenant(id_: str, slug: str) -> dict[str, Any]:
    return {
        "id": id_,
        "slug": slug,
        "name": "A tenant",
        "kind": TenantKind.CONSUMER,
        "created_at": datetime(2026, 12, 1, tzinfo=UTC),
    }


async def _refused(platform: Platform, row: dict[str, Any]) -> IntegrityError:
    async with platform.unit_of_work() as uow:
        await uow.session.execute(insert(Tenant), [_tenant("slug", "first")])
        with pytest.raises(IntegrityError) as caught:
            await uow.session.execute(insert(Tenant), [row])
    return caught.value


async def test_a_duplicate_is_told_by_its_own_constraint(platform: Platform) -> None:
    slug_taken = await _refused(platform, _tenant("ten_second", "first"))
    assert violates_unique(slug_taken, COLUMNS.slug)
    assert not violates_unique(slug_taken, COLUMNS.id)
    assert not violates_unique(slug_taken, COLUMNS.name)


async def test_another_constraint_is_not_mistaken_for_it(platform: Platform) -> None:
    """The same id again (an id that is the column's name, too): the primary key refused
    it, not the slug's unique constraint; nor is a CHECK failure a unique one."""
    id_taken = await _refused(platform, _tenant("slug", "second"))
    assert not violates_unique(id_taken, COLUMNS.slug)


async def test_a_failure_of_another_kind_is_no_unique_violation(platform: Platform) -> None:
    row = _tenant("ten_second", "second") | {"kind": "not-a-kind"}
    refused = await _refused(platform, row)
    assert not violates_unique(refused, COLUMNS.slug)
    assert not violates_unique(refused, COLUMNS.kind)
