"""The spec format: clear errors for bad specs, and a shipped demo spec that states the whole
policy table over every object the platform serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from fleetward.app import build_app
from fleetward.catalog.inventory import inventory
from fleetward.probe.oracle import Oracle
from fleetward.probe.spec.load import SpecError, json_schema_text, load, load_demo, loads
from fleetward.probe.spec.models import SIDES, Route, Spec
from fleetward.probe.spec.render import render_body, render_path
from fleetward.settings import Settings

MINIMAL = """
surfaces = ["mobile"]

[probe]
name = "tiny"

[[roles]]
name = "owner"
surfaces = ["mobile"]
states = ["active"]
anchor = "home"

[[objects]]
name = "vehicle"
anchors = ["home"]

[[objects.routes]]
name = "mobile:vehicles:read"
surface = "mobile"
method = "GET"
path = "/v/{vehicle_id}"
operation = "read"

[[rules]]
roles = ["owner"]
expect = "allow"
why = "owners read their vehicles"
"""

# Every role and relationship state of the policy table (authorization issue).
POLICY_TABLE = {
    "owner": {"active"},
    "driver": {"active", "expired", "revoked"},
    "former_owner": {"transferred"},
    "fleet_admin": {"active"},
    "fleet_operator": {"assigned", "reassigned"},
    "dealer_technician": {"case-open", "case-closed"},
    "support_agent": {"case-assigned", "case-closed", "none"},
    "partner": {"consented", "consent-revoked", "none"},
    "platform_admin": {"active"},
    "engineer": {"active"},
}
OBJECTS = {
    "vehicle", "status", "location", "trip", "charging_session", "diagnostic_report",
    "appointment", "command_job", "driver_invitation", "driver", "transfer", "consent",
    "fleet_group", "group_vehicle", "operator", "dealer_case", "support_case",
    "support_account", "ota_campaign", "tenant", "client", "remote_command",
}  # fmt: skip


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as refused:
        loads(text, source="test.toml")
    assert refused.value.status == 422
    assert str(refused.value).startswith("test.toml: ")
    return refused.value.problems


# --------------------------------------------------------------------------- errors


def test_a_minimal_spec_loads() -> None:
    spec = loads(MINIMAL)
    assert [a.name for a in spec.actors()] == ["owner:active:home", "owner:active:away"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # (what is replaced -> by what, the message that must name it)
        (('name = "tiny"', 'name = "tiny"\ncolour = "red"'), "probe.colour: unknown field"),
        (('anchor = "home"\n', 'anchor = "home"\nlevel = 3\n'), "roles[0].level: unknown field"),
        (('roles = ["owner"]', 'roles = ["owenr"]'), "unknown role 'owenr'"),
        (('expect = "allow"', 'expect = "maybe"'), "rules[0].expect"),
        (('expect = "allow"\n', ""), "rules[0].expect: required field is missing"),
        (('roles = ["owner"]', 'roles = ["owner"]\nstates = ["sold"]'), "unknown state 'sold'"),
        (('roles = ["owner"]', 'roles = ["owner", "*"]'), "mix '*' with names"),
        (('roles = ["owner"]', 'roles = ["owner"]\nobjects = ["car"]'), "unknown object 'car'"),
        (('roles = ["owner"]', 'roles = ["owner"]\nroutes = ["x:y"]'), "unknown route 'x:y'"),
        (('operation = "read"', 'operation = "delete"'), "operation"),
        (('path = "/v/{vehicle_id}"', 'path = "v/{vehicle_id}"'), "absolute path template"),
        (('path = "/v/{vehicle_id}"', 'path = "/v/{vehicle id}"'), "malformed {param}"),
        (('surfaces = ["mobile"]\n\n', 'surfaces = ["mobile"]\nextra = 1\n\n'), "extra: unknown"),
        (('states = ["active"]', "states = []"), "roles[0].states"),
        (('why = "owners read their vehicles"', 'why = ""'), "rules[0].why"),
        (('name = "owner"', 'name = "Owner"'), "not a lowercase identifier"),
        (
            ('surfaces = ["mobile"]\nstates', 'surfaces = ["fleet"]\nstates'),
            "role 'owner': unknown surface 'fleet'",
        ),
        (
            ('operation = "read"', 'operation = "read"\ncancel = "/v/{vehicle_id}/jobs/{id}"'),
            "only a command creates a job to cancel",
        ),
        (
            ('operation = "read"', 'operation = "command"\ncancel = "/v/{vehicle_id}/cancel"'),
            "must name the accepted job as {id}",
        ),
        (
            ('operation = "read"', 'operation = "read"\nrefusal_record = { state = "rejected" }'),
            "only a list (a GET) records refusals",
        ),
    ],
)
def test_a_bad_spec_is_refused_with_a_message_that_says_where(
    change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in MINIMAL
    problems = _problems(MINIMAL.replace(old, new, 1))
    assert any(expected in problem for problem in problems), problems


def test_duplicate_names_are_refused() -> None:
    route = MINIMAL[MINIMAL.index("[[objects.routes]]") : MINIMAL.index("[[rules]]")]
    doubled = MINIMAL.replace(route, route + route)
    assert any("duplicate route 'mobile:vehicles:read'" in p for p in _problems(doubled))


def test_toml_that_does_not_parse_is_refused() -> None:
    assert "not valid TOML" in _problems("[probe\nname=")[0]


def test_a_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot be read"):
        load(tmp_path / "absent.toml")


def test_a_spec_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert load(path).probe.name == "tiny"


def test_the_json_schema_describes_the_format() -> None:
    schema = json.loads(json_schema_text())
    assert schema["$schema"].endswith("2020-12/schema")
    assert {"probe", "surfaces", "roles", "objects", "rules"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    rule = schema["$defs"]["Rule"]
    assert set(rule["properties"]["expect"]["enum"]) == {
        "allow",
        "deny",
        "hidden",
        "forbidden",
        "filtered",
    }


# ------------------------------------------------------------------------ templates


def test_paths_are_filled_one_encoded_segment_per_id() -> None:
    path = render_path("/v/{vehicle_id}/trips/{trip_id}", {"vehicle_id": "a/b", "trip_id": "t"})
    assert path == "/v/a%2Fb/trips/t"
    with pytest.raises(KeyError):
        render_path("/v/{vehicle_id}", {})


def test_bodies_are_filled_from_ids_and_builtins() -> None:
    body = render_body(
        {"ids": ["{vehicle_id}"], "note": "probe {unique}", "until": "{future}", "n": 3},
        {"vehicle_id": "veh_1"},
    )
    assert body is not None
    assert body["ids"] == ["veh_1"] and body["n"] == 3
    assert re.fullmatch(r"probe [0-9a-f]{8}", body["note"])
    assert body["until"].endswith("Z")
    assert render_body(None, {}) is None
    with pytest.raises(KeyError):
        render_body({"x": "{nothing}"}, {})


# ------------------------------------------------------------------------ demo spec


@pytest.fixture(scope="module")
def demo() -> Spec:
    return load_demo()


def test_the_demo_spec_covers_every_role_and_state_of_the_policy_table(demo: Spec) -> None:
    assert {role.name: set(role.states) for role in demo.roles} == POLICY_TABLE


def test_the_demo_spec_covers_every_object_type_and_operation(demo: Spec) -> None:
    assert {obj.name for obj in demo.objects} == OBJECTS
    operations = {route.operation for _obj, route in demo.routes()}
    assert {"list", "read", "write", "command"} <= operations
    for obj in demo.objects:
        # A transfer is only ever started or cancelled; a command is sent (its jobs are read
        # as command_job).
        if obj.name not in {"transfer", "remote_command"}:
            assert any(r.operation in {"read", "list"} for r in obj.routes), obj.name


def test_the_demo_matrix_reaches_five_thousand_cases(demo: Spec) -> None:
    oracle = Oracle(demo)
    count = 0
    same_surface = 0
    for actor in demo.actors():
        role = demo.role(actor.role)
        for obj, route in demo.routes():
            for target in demo.targets(actor, obj):
                oracle.decide(
                    role=actor.role,
                    state=actor.state,
                    tenant=target.tenant,
                    obj=obj.name,
                    route=route.name,
                )
                count += 1
                same_surface += route.surface in role.surfaces
    assert count >= 5_000
    assert same_surface >= 1_500  # decided by the policy, not refused for the audience


def test_every_actor_of_the_demo_spec_has_an_allowed_case(demo: Spec) -> None:
    # A role whose every case is a deny proves nothing: the active states must be able to act.
    oracle = Oracle(demo)
    active = {"owner", "driver", "fleet_admin", "fleet_operator", "dealer_technician"}
    active |= {"support_agent", "partner", "platform_admin", "engineer"}
    for role in active:
        state = demo.role(role).states[0]
        assert any(
            oracle.decide(
                role=role, state=state, tenant="same", obj=obj.name, route=route.name
            ).expect.value
            == "allow"
            for obj, route in demo.routes()
        ), role


def test_the_demo_routes_are_the_apps_routes(tmp_path: Path) -> None:
    """Each route of the demo spec is served by the app under that catalog name, method and
    path (parameter names aside: the spec names the ids it fills in)."""
    app = build_app(Settings(data_dir=tmp_path / "var"))
    served = {
        item.name: (item.methods, re.sub(r"\{[^}]+\}", "{}", item.path))
        for item in inventory(app.router.routes)
    }
    for _obj, route in load_demo().routes():
        assert route.name in served, route.name
        methods, path = served[route.name]
        assert route.method in methods, route.name
        assert re.sub(r"\{[^}]+\}", "{}", route.path) == path, route.name


STEP_UP_ROUTES = {
    f"{surface}:commands:{command}"
    for surface in ("mobile", "fleet")
    for command in ("unlock", "remote_start", "immobilize")
}
PLAIN_ROUTES = {
    f"{surface}:commands:{command}"
    for surface in ("mobile", "fleet")
    for command in ("horn_lights", "lock", "climate", "charging_control", "diagnostics_run")
}
DEALER_DIAGNOSTICS = "dealer:commands:diagnostics_run"
COMMAND_ROUTES = {*PLAIN_ROUTES, *STEP_UP_ROUTES, DEALER_DIAGNOSTICS}
# Who may create each command on their own vehicle (the policy table: owner, driver with the
# command delegated inside the window, fleet admin, operator of the vehicle's group, dealer
# technician of an open case: a diagnostics run); the demo driver is delegated read_status,
# climate and lock, never horn and lights, charging, diagnostics nor a step-up command.
MOBILE = {r for r in PLAIN_ROUTES | STEP_UP_ROUTES if r.startswith("mobile:")}
FLEET = {r for r in PLAIN_ROUTES | STEP_UP_ROUTES if r.startswith("fleet:")}
MAY_COMMAND = {
    ("owner", "active"): MOBILE,
    ("driver", "active"): {"mobile:commands:lock", "mobile:commands:climate"},
    ("fleet_admin", "active"): FLEET,
    ("fleet_operator", "assigned"): FLEET,
    ("dealer_technician", "case-open"): {DEALER_DIAGNOSTICS},
}


def test_the_demo_spec_says_who_may_create_a_command(demo: Spec) -> None:
    oracle = Oracle(demo)
    assert {route.name for _obj, route in demo.routes() if route.operation == "command"} == (
        COMMAND_ROUTES
    )
    for actor in demo.actors():
        role = demo.role(actor.role)
        for route_name in sorted(COMMAND_ROUTES):
            obj, route = demo.route(route_name)
            for tenant in ("same", "other"):
                decided = oracle.decide(
                    role=actor.role,
                    state=actor.state,
                    tenant=tenant,
                    obj=obj.name,
                    route=route_name,
                ).expect.value
                allowed = MAY_COMMAND.get((actor.role, actor.state), set())
                if route.surface not in role.surfaces:
                    expected = "unauthenticated"
                elif tenant == "same" and route_name in allowed:
                    expected = "allow"
                elif tenant == "same" and (actor.role, actor.state) == ("driver", "active"):
                    expected = "deny"  # sees the vehicle: 403, the job rejected
                else:
                    expected = "deny-hidden"  # cannot see it: the unknown vehicle's 404
                assert decided == expected, (actor.name, route_name, tenant)


def test_demo_commands_carry_a_key_read_back_and_cancel(demo: Spec) -> None:
    for route_name in COMMAND_ROUTES:
        _obj, route = demo.route(route_name)
        assert route.fresh_headers == ("Idempotency-Key",)
        assert route.read_back is not None
        # Every command is withdrawn by its requester on its own surface (the dealer's
        # diagnostics run too: its allowed case is sent, then cancelled by the technician).
        assert route.cancel is not None, route_name
        assert route.cancel.startswith(f"/{route.surface}/v1/"), route_name
        _list_obj, listing = demo.route(route.read_back)
        assert listing.refusal_record == {"state": "rejected"}
        assert route.cancel.startswith(route.path.rsplit("/", 1)[0] + "/{id}")
        # Unlock, remote start and immobilize need a step-up; the others do not.
        assert route.step_up == (route_name in STEP_UP_ROUTES), route_name


def test_step_up_is_for_commands_only() -> None:
    with pytest.raises(ValidationError, match="step_up: only a command"):
        Route(
            name="mobile:vehicles:read",
            surface="mobile",
            method="GET",
            path="/mobile/v1/vehicles/{vehicle_id}",
            operation="read",
            step_up=True,
        )


def test_each_demo_role_has_both_sides(demo: Spec) -> None:
    sides = {(a.role, a.state): set() for a in demo.actors()}  # type: dict[tuple[str, str], set[str]]
    for actor in demo.actors():
        sides[(actor.role, actor.state)].add(actor.side)
    assert all(found == set(SIDES) for found in sides.values())


def test_the_worked_example_of_the_docs_loads_and_means_what_it_says() -> None:
    docs = Path(__file__).parents[3] / "docs" / "probe.md"
    found = re.search(r"### A worked example.*?```toml\n(.*?)```", docs.read_text(), re.S)
    assert found is not None
    spec = loads(found.group(1), source="docs/probe.md")
    oracle = Oracle(spec)
    assert len(spec.actors()) == 6

    def expect(role: str, state: str, tenant: str, obj: str, route: str) -> str:
        decision = oracle.decide(
            role=role,
            state=state,
            tenant=tenant,  # type: ignore[arg-type]
            obj=obj,
            route=route,
        )
        return decision.expect.value

    assert expect("driver", "active", "same", "car", "cars:read") == "allow"
    assert expect("driver", "active", "same", "car", "cars:rename") == "deny-hidden"
    assert expect("driver", "active", "same", "location", "cars:location") == "deny-hidden"
    assert expect("driver", "expired", "same", "car", "cars:list") == "filtered"
    assert expect("driver", "active", "other", "car", "cars:list") == "filtered"
    assert expect("owner", "active", "same", "location", "cars:location") == "allow"
    assert expect("owner", "active", "other", "car", "cars:read") == "deny-hidden"


def test_the_demo_spec_holds_responses_to_a_per_role_allow_list() -> None:
    # Property level: an allowed read must not carry fields the role may not see (a driver
    # without read_location gets no location; a partner only the id and the state).
    objects = {obj.name: obj for obj in load_demo().objects}
    assert "location" not in objects["vehicle"].fields["driver"]
    assert "vin" not in objects["vehicle"].fields["dealer_technician"]
    assert set(objects["status"].fields["partner"]) == {"id", "state"}


DEALER_JOB_ROUTES = ("dealer:commands:read", "dealer:commands:follow", "dealer:commands:cancel")


def test_the_demo_spec_probes_the_dealers_job_routes(demo: Spec) -> None:
    """A technician with an open case lists the case vehicle's jobs (the families they may
    send) and follows its diagnostics run (the keeper's, ended); the job read and cancelled
    is the owner's lock: the unknown job's 404, for them and everyone else with a dealer
    token, as is the diagnostics run to follow for everyone but them."""
    oracle = Oracle(demo)
    obj, _route = demo.route("dealer:commands:list")
    assert obj.name == "command_job"

    def decided(state: str, tenant: str, route: str) -> str:
        return oracle.decide(
            role="dealer_technician", state=state, tenant=tenant, obj=obj.name, route=route
        ).expect.value

    assert decided("case-open", "same", "dealer:commands:list") == "allow"
    assert decided("case-open", "same", "dealer:commands:follow") == "allow"
    assert "{diagnostics_job_id}" in demo.route("dealer:commands:follow")[1].path
    for route in DEALER_JOB_ROUTES:
        assert demo.route(route)[0].name == "command_job"
        if route != "dealer:commands:follow":
            assert "{job_id}" in demo.route(route)[1].path
            assert decided("case-open", "same", route) == "deny-hidden", route
    for state, tenant in (("case-closed", "same"), ("case-open", "other")):
        for route in ("dealer:commands:list", *DEALER_JOB_ROUTES):
            assert decided(state, tenant, route) == "deny-hidden", (state, tenant, route)


def test_the_demo_spec_probes_mobile_and_fleet_job_follow_and_cancel(demo: Spec) -> None:
    """Cancel is the requester's alone (the spare job is the owner's, the fleet admin's): a
    driver or an operator who may send its command still gets the unknown job's 404, as does
    anyone who does not see the vehicle. Following the ended job is a read."""
    oracle = Oracle(demo)

    def decided(role: str, state: str, tenant: str, route: str) -> str:
        return oracle.decide(
            role=role, state=state, tenant=tenant, obj="command_job", route=route
        ).expect.value

    for surface, requester, other in (
        ("mobile", ("owner", "active"), ("driver", "active")),
        ("fleet", ("fleet_admin", "active"), ("fleet_operator", "assigned")),
    ):
        cancel, follow = f"{surface}:commands:cancel", f"{surface}:commands:follow"
        assert demo.route(cancel)[0].name == "command_job"
        assert demo.route(cancel)[1].spare
        assert "{ended_job_id}" in demo.route(follow)[1].path
        assert decided(*requester, "same", cancel) == "allow"
        assert decided(*other, "same", cancel) == "deny-hidden"
        assert decided(*requester, "same", follow) == "allow"
        assert decided(*other, "same", follow) == "allow"
        for role, state in (requester, other):
            for route in (cancel, follow):
                assert decided(role, state, "other", route) == "deny-hidden"
    for role, state in (
        ("former_owner", "transferred"),
        ("driver", "expired"),
        ("driver", "revoked"),
    ):
        assert decided(role, state, "same", "mobile:commands:cancel") == "deny-hidden"
    assert decided("fleet_operator", "reassigned", "same", "fleet:commands:cancel") == "deny-hidden"
