"""Spend: hourly roll-ups that accumulate across batches and add up by key, user, team
and model."""

from __future__ import annotations

import pytest

from aigw.store import SpendEntry, SpendTotal, Store
from aigw.store.rows import rollup, spend_hour

pytestmark = pytest.mark.anyio

HOUR = 3600.0
T0 = 1_800_000_000.0  # on an hour boundary


def entry(
    key: str = "k1",
    user: str = "u1",
    team: str = "t1",
    model: str = "m1",
    deployment: str = "d1",
    prompt: int = 10,
    completion: int = 5,
    cost: float = 0.25,
    ts: float = T0,
) -> SpendEntry:
    return SpendEntry(key, user, team, model, deployment, prompt, completion, cost, ts)  # fmt: skip


def test_rollup_sums_per_hour_and_group_in_a_stable_order() -> None:
    rows = rollup([
        entry(ts=T0 + 10), entry(key="k0", ts=T0 + 20), entry(ts=T0 + 3599, cost=0.5),
        entry(ts=T0 + HOUR),
    ])  # fmt: skip
    assert rows == [
        (int(T0), "k0", "u1", "t1", "m1", "d1", 1, 10, 5, 0.25),
        (int(T0), "k1", "u1", "t1", "m1", "d1", 2, 20, 10, 0.75),
        (int(T0 + HOUR), "k1", "u1", "t1", "m1", "d1", 1, 10, 5, 0.25),
    ]
    assert rollup([]) == []
    assert spend_hour(T0 + HOUR - 0.001) == int(T0)


async def test_spend_accumulates_across_batches(store: Store) -> None:
    await store.add_spend([entry(), entry(cost=0.5)])
    await store.add_spend([entry(cost=1.0, prompt=100, completion=50)])
    await store.add_spend([])
    totals = await store.spend_totals("key")
    assert totals == {"k1": SpendTotal(requests=3, prompt_tokens=120, completion_tokens=60,
                                       cost_usd=pytest.approx(1.75))}  # fmt: skip
    assert await store.spend_of("key", "k1") == pytest.approx(1.75)
    assert await store.spend_of("key", "unknown") == 0.0


async def test_totals_by_each_dimension(store: Store) -> None:
    await store.add_spend([
        entry(key="k1", user="ann", team="red", model="gpt", cost=1.0),
        entry(key="k1", user="bob", team="red", model="claude", cost=2.0),
        entry(key="k2", user="ann", team="blue", model="gpt", cost=4.0),
        entry(key="k3", user="", team="", model="gpt", cost=8.0),  # no user, no team
    ])  # fmt: skip

    def costs(totals: dict[str, SpendTotal]) -> dict[str, float]:
        return {ident: round(t.cost_usd, 6) for ident, t in totals.items()}

    assert costs(await store.spend_totals("key")) == {"k1": 3.0, "k2": 4.0, "k3": 8.0}
    assert costs(await store.spend_totals("user")) == {"ann": 5.0, "bob": 2.0, "": 8.0}
    assert costs(await store.spend_totals("team")) == {"red": 3.0, "blue": 4.0, "": 8.0}
    assert costs(await store.spend_totals("model")) == {"gpt": 13.0, "claude": 2.0}
    assert (await store.spend_totals("model"))["gpt"].requests == 3
    assert await store.spend_of("team", "red") == pytest.approx(3.0)
    assert await store.spend_of("user", "ann") == pytest.approx(5.0)


async def test_since_counts_whole_hours_from_the_one_that_holds_it(store: Store) -> None:
    await store.add_spend([
        entry(cost=1.0, ts=T0 - 1),  # the hour before
        entry(cost=2.0, ts=T0 + 100),
        entry(cost=4.0, ts=T0 + 2 * HOUR),
    ])  # fmt: skip
    assert (await store.spend_totals("key", since=T0 + 1800))["k1"].cost_usd == pytest.approx(6.0)
    assert await store.spend_of("key", "k1", since=T0 + HOUR) == pytest.approx(4.0)
    assert await store.spend_of("key", "k1", since=T0 - HOUR) == pytest.approx(7.0)
    assert await store.spend_totals("key", since=T0 + 3 * HOUR) == {}
