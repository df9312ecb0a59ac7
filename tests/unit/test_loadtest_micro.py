"""The decision-path micro-benchmark's smoke mode: it runs, and its result has the documented
shape with every scenario deciding as intended. Never asserts a timing (SPEC §8: benchmarks,
not timed unit tests, measure speed)."""

from __future__ import annotations

import contextlib
import json
import shutil

import pytest

from loadtest.micro import bench, cli, policyset, pools, redis_server, timing
from loadtest.micro.scenarios import Scenario

pytestmark = pytest.mark.timeout(60)

SIZES = [10, 40]
IN_PROCESS = [
    "floor",
    "build_response_allow",
    "mcp_call_allowed",
    "mcp_call_denied",
    "mcp_call_allowed_when_afresh",
    "mcp_call_denied_when_afresh",
    "mcp_tools_list",
    "egress_get",
    "a2a_send_reuse",
    "a2a_send_mint",
    "chained_call_cached",
    "mix",
    "mix_cache_hit",
    "mix_new_ids",
]
WITH_REDIS = ["chained_call_redis_cached", "chained_call_redis_uncached", "a2a_send_mint_redis"]
EXPECT = {
    "floor": "allow",
    "build_response_allow": "allow",
    "mcp_call_allowed": "allow",
    "mcp_call_denied": "deny",
    "mcp_call_allowed_when_afresh": "allow",
    "mcp_call_denied_when_afresh": "deny",
    "mcp_tools_list": "allow",
    "egress_get": "allow",
    "a2a_send_reuse": "allow",
    "a2a_send_mint": "allow",
    "chained_call_cached": "allow",
    "mix": "mixed",
    "mix_cache_hit": "mixed",
    "mix_new_ids": "mixed",
    "chained_call_redis_cached": "allow",
    "chained_call_redis_uncached": "allow",
    "a2a_send_mint_redis": "allow",
}
NUMBERS = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us", "calls_per_s"]


@pytest.fixture(scope="module")
def report() -> dict:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server.local_redis()) if shutil.which("redis-server") else None
        return bench.run(SIZES, 0.02, url, smoke=True)


def test_result_is_json_and_lists_every_size(report: dict) -> None:
    assert json.loads(json.dumps(report)) == report
    assert report["benchmark"] == "mandate-micro" and report["smoke"] is True and report["gc_enabled"] is True
    assert [entry["profiles"] for entry in report["sizes"]] == SIZES
    for entry in report["sizes"]:
        assert entry["compile_seconds"] > 0 and entry["policy_files"] >= 3 and entry["targets"] >= 8
        assert entry["rss_mb"]["in_process_after_compile"] > 0
        assert isinstance(entry["warnings"], list)


def test_every_scenario_measured_with_positive_ordered_numbers(report: dict) -> None:
    expected = IN_PROCESS + (WITH_REDIS if report["redis"] else [])
    for entry in report["sizes"]:
        scenarios = entry["scenarios"]
        assert set(scenarios) == set(expected), entry["skipped"]
        for name, result in scenarios.items():
            assert result["iterations"] >= 50, name
            assert all(result[key] > 0 for key in NUMBERS), (name, result)
            assert result["p50_us"] <= result["p90_us"] <= result["p99_us"] <= result["p999_us"] <= result["max_us"], (
                name
            )
            assert result["allowed"] + result["denied"] == result["iterations"] == sum(result["outcomes"].values())
            assert len(result["gc_collections"]) == 3
            assert result["expect"] == EXPECT[name]
        if not report["redis"]:
            assert set(entry["skipped"]) == set(WITH_REDIS)


def test_allowed_and_denied_scenarios_decide_as_named(report: dict) -> None:
    for entry in report["sizes"]:
        scenarios = entry["scenarios"]
        for name, result in scenarios.items():
            if result["expect"] == "allow":
                # Only a lapse of the Redis store's liveness (reported in warnings) may deny these.
                refused = [label for label in result["outcomes"] if not label.startswith("allow")]
                assert not refused or (
                    name in WITH_REDIS
                    and entry["warnings"]
                    and all("chain_store_unavailable" in label for label in refused)
                ), (name, result["outcomes"])
            elif result["expect"] == "deny":
                assert result["allowed"] == 0, (name, result["outcomes"])
                assert all(label.startswith("deny:") for label in result["outcomes"])
        assert scenarios["mix"]["allowed"] > 0 and scenarios["mix"]["denied"] > 0
        assert scenarios["mix_cache_hit"]["allowed"] > 0 and scenarios["mix_cache_hit"]["denied"] > 0
        assert scenarios["mix_new_ids"]["allowed"] > 0 and scenarios["mix_new_ids"]["denied"] > 0
        assert all(label.startswith("allow+verified") for label in scenarios["chained_call_cached"]["outcomes"])
        assert all(label == "allow+minted" for label in scenarios["a2a_send_mint"]["outcomes"])
        assert all(label.startswith("allow") for label in scenarios["mcp_call_allowed"]["outcomes"])


def test_uncached_chain_read_costs_one_redis_get(report: dict) -> None:
    assert report["redis"], ".ci/run installs redis-server; the Redis cases must have run"
    for entry in report["sizes"]:
        assert entry["scenarios"]["chained_call_redis_uncached"]["redis_gets_per_call"] == pytest.approx(1.0)
        assert entry["scenarios"]["chained_call_redis_cached"]["redis_gets_per_call"] == 0


def test_summary_and_table(report: dict) -> None:
    summary = report["summary"]
    assert set(summary["by_scenario"]["mcp_call_allowed"]["p99_us"]) == {str(size) for size in SIZES}
    assert summary["spec"]["p99_target_us"] == 50.0
    assert set(summary["spec"]["worst_p99_us"]) == {str(size) for size in SIZES}
    assert "floor" not in summary["spec"]["flat_detail"]
    assert set(summary["spec"]["excluded"]) <= set(WITH_REDIS)
    table = cli.format_table(report)
    assert "mcp_call_denied" in table and "p99.9" in table and "fresh s" in table


def test_generated_policy_set_compiles_with_every_profile(tmp_path) -> None:
    from authz.policy.compiler import compile_directory

    generated = policyset.write_policy_set(tmp_path, 25, seed=3)
    policy = compile_directory(tmp_path)
    assert len(policy.profiles) == 25 == len(generated.profiles)
    assert len({profile.principal for profile in generated.profiles}) == 25
    assert any(
        rule.when is not None for p in policy.profiles.values() for rules in p.scope.mcp.values() for rule in rules
    )
    assert any(
        rule.grant is not None for p in policy.profiles.values() for rules in p.scope.agents.values() for rule in rules
    )


def test_pools_from_the_first_callers_hold_only_their_requests(tmp_path) -> None:
    """`--callers N`: every size then meets the same agents, so sizes differ only in the profiles loaded."""
    generated = policyset.write_policy_set(tmp_path, 40, seed=3)
    first = {profile.principal for profile in generated.profiles[:3]}
    drawn = pools.build_pools(pools.first_callers(generated, 3), 64)
    own = [*drawn.mcp_call_allowed, *drawn.mcp_call_denied, *drawn.mcp_tools_list, *drawn.egress_get, *drawn.a2a_send]
    assert own and {request.source_principal for request in own} <= first
    everyone = pools.build_pools(pools.first_callers(generated, None), 64)
    assert len({request.source_principal for request in everyone.mcp_call_allowed}) > 3


def test_rounds_pool_their_samples_and_never_hand_prepare_an_index_twice() -> None:
    """mix_new_ids numbers each call by its index: a later round must not reuse an id."""
    seen: list[int] = []

    def prepare(index: int) -> int:
        seen.append(index)
        return index

    tally = timing.Tally(
        Scenario("count", "", "allow", lambda index: index, prepare=prepare, label=lambda _: (True, "allow"))
    )
    for _ in range(3):
        timing.measure(tally, 0.001, 0.001, 30)
    assert len(seen) == len(set(seen)) == tally.calls
    result = timing.tally_result(tally)
    assert result["iterations"] == len(tally.samples) == tally.allowed >= 90
    assert result["outcomes"] == {"allow": tally.allowed}


def test_the_cli_sends_from_the_same_agents_at_every_size_unless_told_all(tmp_path, capsys) -> None:
    for argv, callers in (([], 10), (["--callers", "all"], None), (["--callers", "7"], 7)):
        out = tmp_path / "micro.json"
        assert cli.main(["--smoke", "--quiet", "--sizes", "10,40", "--json", str(out), *argv]) == 0
        report = json.loads(out.read_text())
        assert report["callers"] == callers and report["rounds"] == 1
    assert "requests from every profile" in capsys.readouterr().out


def test_generated_sets_mix_namespace_wildcards_exact_ids_and_team_servers(tmp_path) -> None:
    from authz.policy.compiler import compile_directory

    generated = policyset.write_policy_set(tmp_path, 250, seed=3)
    policy = compile_directory(tmp_path)
    assert len(policy.callers.namespaces) == 25 and len(policy.callers.exact) == 225
    wildcard = generated.profiles[policyset.WILDCARD_AT]
    assert wildcard.claim.endswith("/sa/*") and policy.callers.get(wildcard.principal).name == wildcard.name
    teams = [name for name, target in policy.targets.items() if name.startswith("team-")]
    assert len(teams) == 250 // policyset.TEAM_SIZE + 1
    assert all(any(t.startswith("team-") for t in p.scope.mcp) for p in policy.profiles.values())


def test_a_size_is_measured_in_a_fresh_process_as_100000_profiles_are() -> None:
    """The 100,000-profile row's load time and RSS come from a fresh interpreter compiling the set:
    the same code, at 40 profiles."""
    result = bench.prepare_size(40, fresh_rss=True, callers=10).result
    rss = result["rss_mb"]
    assert rss["fresh_process_peak"] >= rss["fresh_process_after_compile"] >= rss["fresh_process_after_import"] > 0
    assert result["fresh_process_compile_seconds"] > 0
