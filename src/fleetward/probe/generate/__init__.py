"""Case generators, one module per :class:`~fleetward.probe.model.Family`.

Each takes the spec, the world manifest and the deployment's OpenAPI document and yields
cases whose expectation comes from the oracle (the spec's rules) only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from fleetward.probe.generate import function, inventory, matrix, object_id, property, replay
from fleetward.probe.generate.common import World
from fleetward.probe.manifest import Manifest
from fleetward.probe.model import Case, Family
from fleetward.probe.spec.models import Spec

FAMILIES: Final[dict[Family, Callable[[World], Iterator[Case]]]] = {
    Family.MATRIX: matrix.cases,
    Family.REPLAY: replay.cases,
    Family.FUNCTION: function.cases,
    Family.OBJECT_ID: object_id.cases,
    Family.PROPERTY: property.cases,
    Family.INVENTORY: inventory.cases,
}
# Cases a family adds to its own (FAMILIES[f] alone is the family's core, one case per
# combination): the matrix's filtered lists walked a page of one at a time.
SUPPLEMENTS: Final[dict[Family, tuple[Callable[[World], Iterator[Case]], ...]]] = {
    Family.MATRIX: (matrix.paged_cases,),
}


def generate(
    spec: Spec,
    manifest: Manifest,
    openapi: Mapping[str, Any],
    families: Iterable[Family] | None = None,
) -> list[Case]:
    """Every case of the chosen families (all by default), ids unique, in a stable order."""
    world = World(spec, manifest, openapi)
    chosen = list(FAMILIES) if families is None else list(dict.fromkeys(families))
    found: dict[str, Case] = {}
    for family in chosen:
        for produce in (FAMILIES[family], *SUPPLEMENTS.get(family, ())):
            for case in produce(world):
                found.setdefault(case.id, case)
    return list(found.values())
