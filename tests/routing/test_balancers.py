from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from aigw.routing.balancers import STRATEGIES, Balancer, effective_weights, make_balancer

NOW = 100.0


@dataclass
class Fake:
    id: str
    weight: float = 1.0
    in_flight: int = 0
    error_rate: float = 0.0
    load: float = 0.0
    lat: float = 0.0

    def latency(self, now: float) -> float:
        return self.lat


def fakes(*ids: str) -> list[Fake]:
    return [Fake(i) for i in ids]


def picks(balancer: Balancer, cands: list[Fake], n: int, key: str | None = None) -> list[str]:
    return [balancer.pick(cands, NOW, key).id for _ in range(n)]


def shares(ids: list[str]) -> dict[str, float]:
    return {k: v / len(ids) for k, v in Counter(ids).items()}


# -- every strategy ---------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_refuses_no_candidates_and_returns_a_lone_one(strategy: str) -> None:
    balancer = make_balancer(strategy, rng=random.Random(0))
    with pytest.raises(ValueError):
        balancer.pick([], NOW)
    only = Fake("a", in_flight=50, error_rate=1.0, load=1.0, lat=9.0)
    assert picks(balancer, [only], 5, key="k") == ["a"] * 5


def test_make_balancer_rejects_unknown_names_and_a_load_factor_below_one() -> None:
    with pytest.raises(ValueError, match="least-latency"):
        make_balancer("least-latency")
    with pytest.raises(ValueError):
        make_balancer("consistent-hash", hash_load_factor=0.9)


# -- round-robin ------------------------------------------------------------------------


def test_round_robin_rotates_in_order_ignoring_weights() -> None:
    cands = [Fake("a", weight=5), Fake("b"), Fake("c")]
    assert picks(make_balancer("round-robin"), cands, 6) == ["a", "b", "c"] * 2


def test_round_robin_a_candidate_left_out_keeps_its_turn_without_a_burst() -> None:
    rr = make_balancer("round-robin")
    a, b, c = fakes("a", "b", "c")
    assert picks(rr, [a, b, c], 2) == ["a", "b"]
    assert picks(rr, [a, c], 4) == ["c", "a", "c", "a"]
    assert picks(rr, [a, b, c], 6) == ["b", "c", "a", "b", "c", "a"]


def test_round_robin_is_fair_over_changing_subsets() -> None:
    rr = make_balancer("round-robin")
    a, b, c, d = fakes("a", "b", "c", "d")
    rng = random.Random(7)
    counts: Counter[str] = Counter()
    for _ in range(3000):
        subset = [a, c] + [x for x in (b, d) if rng.random() < 0.5]
        counts[rr.pick(subset, NOW).id] += 1
        # a and c are always present: neither ever gets ahead of the other by more than 1.
        assert abs(counts["a"] - counts["c"]) <= 1
    assert counts["b"] > 500 and counts["d"] > 500
    # Whatever the history, a fixed subset is then served in strict rotation.
    window = picks(rr, [a, b, d], 9)
    assert all(sorted(window[i : i + 3]) == ["a", "b", "d"] for i in range(0, 9, 3))


# -- weighted (smooth weighted round-robin) -----------------------------------------


def test_weighted_is_nginx_smooth_wrr() -> None:
    cands = [Fake("a", weight=5), Fake("b", weight=1), Fake("c", weight=1)]
    assert picks(make_balancer("weighted"), cands, 14) == list("aabacaa") * 2


def test_weighted_proportions_hold_while_the_subset_changes() -> None:
    wrr = make_balancer("weighted")
    a, b, c = Fake("a", weight=3), Fake("b", weight=2), Fake("c", weight=1)
    assert Counter(picks(wrr, [a, b, c], 600)) == {"a": 300, "b": 200, "c": 100}
    without_b = Counter(picks(wrr, [a, c], 400))
    assert without_b == {"a": 300, "c": 100}
    back = picks(wrr, [a, b, c], 600)
    counts = Counter(back)
    assert abs(counts["a"] - 300) <= 2 and abs(counts["b"] - 200) <= 2
    assert "bb" not in "".join(back[:6])  # b's return is no burst


def test_weighted_interleaves_rather_than_bursting() -> None:
    cands = [Fake("a", weight=4), Fake("b", weight=1)]
    seq = "".join(picks(make_balancer("weighted"), cands, 50))
    assert seq.count("b") == 10 and "bb" not in seq and "aaaaa" not in seq


# -- random -----------------------------------------------------------------------------


def test_random_follows_weights_with_an_injected_rng() -> None:
    cands = [Fake("a", weight=1), Fake("b", weight=2), Fake("c", weight=7)]
    seen = shares(picks(make_balancer("random", rng=random.Random(3)), cands, 20_000))
    assert seen == pytest.approx({"a": 0.1, "b": 0.2, "c": 0.7}, abs=0.015)
    again = picks(make_balancer("random", rng=random.Random(3)), cands, 50)
    assert again == picks(make_balancer("random", rng=random.Random(3)), cands, 50)


# -- least-inflight ---------------------------------------------------------------------


def test_least_inflight_picks_the_fewest_in_flight() -> None:
    cands = [Fake("a", in_flight=3), Fake("b", in_flight=1, weight=0.1), Fake("c", in_flight=2)]
    assert picks(make_balancer("least-inflight"), cands, 5) == ["b"] * 5


def test_least_inflight_breaks_ties_by_weight_in_rotation() -> None:
    li = make_balancer("least-inflight")
    cands = [Fake("a", weight=2), Fake("b", weight=1), Fake("c", in_flight=1, weight=9)]
    assert picks(li, cands, 6) == ["a", "b", "a"] * 2


# -- p2c-ewma ---------------------------------------------------------------------------


def test_p2c_prefers_the_faster_yet_others_still_get_traffic() -> None:
    fast, slow1, slow2 = Fake("fast", lat=0.1), Fake("slow1", lat=1.0), Fake("slow2", lat=1.2)
    p2c = make_balancer("p2c-ewma", rng=random.Random(1))
    seen = shares(picks(p2c, [fast, slow1, slow2], 9000))
    # fast wins whenever it is one of the two drawn (2 pairs of 3); slow1 wins the third.
    assert seen == pytest.approx({"fast": 2 / 3, "slow1": 1 / 3}, abs=0.02)
    assert picks(make_balancer("p2c-ewma"), [fast, slow1], 20) == ["fast"] * 20


def test_p2c_weighs_latency_against_requests_in_flight() -> None:
    p2c = make_balancer("p2c-ewma", rng=random.Random(1))
    fast, slow = Fake("fast", lat=0.1, in_flight=20), Fake("slow", lat=1.0)
    assert picks(p2c, [fast, slow], 10) == ["slow"] * 10  # 0.1 * 21 > 1.0 * 1
    fast.in_flight = 5
    assert picks(p2c, [fast, slow], 10) == ["fast"] * 10  # 0.1 * 6 < 1.0 * 1


def test_p2c_tries_an_unknown_deployment_without_flooding_it() -> None:
    p2c = make_balancer("p2c-ewma", rng=random.Random(1))
    new, old = Fake("new"), Fake("old", lat=0.05, in_flight=3)
    assert picks(p2c, [new, old], 5) == ["new"] * 5
    new.in_flight = 4
    assert picks(p2c, [new, old], 5) == ["old"] * 5


def test_p2c_draws_by_weight_when_costs_tie() -> None:
    cands = [Fake("a", lat=0.2), Fake("b", lat=0.2), Fake("c", weight=8, lat=0.2)]
    seen = shares(picks(make_balancer("p2c-ewma", rng=random.Random(5)), cands, 20_000))
    assert seen == pytest.approx({"a": 0.1, "b": 0.1, "c": 0.8}, abs=0.015)


# -- consistent-hash --------------------------------------------------------------------

KEYS = [f"user-{i}" for i in range(10_000)]


def mapping(balancer: Balancer, cands: list[Fake]) -> dict[str, str]:
    return {k: balancer.pick(cands, NOW, k).id for k in KEYS}


def test_consistent_hash_is_stable_across_instances_and_candidate_order() -> None:
    cands = fakes(*"abcde")
    first = mapping(make_balancer("consistent-hash"), cands)
    shuffled = cands[:]
    random.Random(2).shuffle(shuffled)
    assert mapping(make_balancer("consistent-hash"), shuffled) == first
    assert all(0.14 < s < 0.26 for s in shares(list(first.values())).values())


def test_consistent_hash_spreads_keys_by_weight() -> None:
    cands = [Fake("a", weight=2), Fake("b"), Fake("c")]
    seen = shares(list(mapping(make_balancer("consistent-hash"), cands).values()))
    assert seen["a"] == pytest.approx(0.5, abs=0.06)


def test_consistent_hash_removing_one_of_n_moves_only_its_keys() -> None:
    ch = make_balancer("consistent-hash")
    cands = fakes(*(f"d{i}" for i in range(10)))
    before = mapping(ch, cands)
    after = mapping(ch, [c for c in cands if c.id != "d3"])
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == "d3"}
    assert 0.06 < len(moved) / len(KEYS) < 0.14
    assert mapping(ch, cands) == before  # and they come back when it does


def test_consistent_hash_bounded_load_spills_to_the_next_node() -> None:
    ch = make_balancer("consistent-hash", hash_load_factor=1.25)
    cands = [Fake("a", in_flight=4), Fake("b", in_flight=4), Fake("c", in_flight=4)]
    key = next(k for k in KEYS if ch.pick(cands, NOW, k).id == "a")
    next_clockwise = ch.pick(cands[1:], NOW, key).id
    cands[0].in_flight = 6  # cap = ceil(1.25 * 15 / 3) = 7: still fits
    assert ch.pick(cands, NOW, key).id == "a"
    cands[0].in_flight = 7  # cap = ceil(1.25 * 16 / 3) = 7: over
    assert ch.pick(cands, NOW, key).id == next_clockwise


def test_consistent_hash_without_a_key_falls_back_to_p2c() -> None:
    ch = make_balancer("consistent-hash", rng=random.Random(0))
    assert picks(ch, [Fake("slow", lat=1.0), Fake("fast", lat=0.1)], 10) == ["fast"] * 10


# -- dynamic ----------------------------------------------------------------------------


def test_effective_weights_factors() -> None:
    cands = [
        Fake("ok", weight=2, lat=0.1),
        Fake("errors", error_rate=0.5, lat=0.1),
        Fake("dead", error_rate=1.0, lat=0.1),
        Fake("slow", lat=0.4),
        Fake("very-slow", lat=100.0),
        Fake("unknown"),
        Fake("busy", load=0.75, lat=0.1),
        Fake("full", load=1.0, lat=0.1),
    ]
    assert effective_weights(cands, NOW) == pytest.approx(
        {
            "ok": 2.0,
            "errors": 0.25,
            "dead": 0.01,
            "slow": 0.25,  # median of known latencies 0.1
            "very-slow": 0.05,
            "unknown": 1.0,
            "busy": 0.25,
            "full": 0.05,
        }
    )


def test_dynamic_shifts_traffic_away_from_errors_and_back_on_recovery() -> None:
    dyn = make_balancer("dynamic")
    a, b = Fake("a", lat=0.1), Fake("b", lat=0.1)
    assert Counter(picks(dyn, [a, b], 100)) == {"a": 50, "b": 50}
    b.error_rate = 0.5
    assert Counter(picks(dyn, [a, b], 125)) == {"a": 100, "b": 25}
    b.error_rate = 0.0
    recovered = Counter(picks(dyn, [a, b], 100))
    assert abs(recovered["a"] - 50) <= 1


def test_dynamic_shifts_traffic_away_from_latency_and_load() -> None:
    dyn = make_balancer("dynamic")
    a, b, c = Fake("a", lat=0.2), Fake("b", lat=0.2), Fake("c", lat=0.8)
    assert Counter(picks(dyn, [a, b, c], 900)) == {"a": 400, "b": 400, "c": 100}
    c.lat, b.load = 0.2, 0.5
    assert Counter(picks(dyn, [a, b, c], 500)) == {"a": 200, "b": 100, "c": 200}
