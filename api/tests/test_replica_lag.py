"""Replication lag as how far replay is behind the primary (`api.db.replicas`).

`PrimaryPositions` is fed the positions a primary reached and when, as the monitor's checks
record them; the live checks against a streaming replica are in test_replica.py.
"""

import pytest

from api.db.replicas import OK, PrimaryPositions, check_replica

MB = 2**20


def positions(*seen: tuple[float, int]) -> PrimaryPositions:
    kept = PrimaryPositions()
    for at, position in seen:
        kept.record(at, position)
    return kept


def test_an_idle_primary_with_a_caught_up_replica_lags_zero():
    """The primary last wrote 10 minutes ago and the replica replayed it: 0 s, however
    old its last replayed commit (the lag the old check reported)."""
    idle = positions((1000.0, 5 * MB), (1300.0, 5 * MB), (1600.0, 5 * MB))
    assert idle.lag(now=1600.0, replayed=5 * MB) == (0.0, True)


def test_the_first_write_after_an_idle_spell_lags_only_since_it_was_seen():
    """After 10 idle minutes the primary writes; a check 0.4 s later finds replay just
    behind it: 0.4 s of lag, not the 600 s since the last commit replayed."""
    busy = positions((1000.0, 5 * MB), (1600.0, 5 * MB + 300))
    assert busy.lag(now=1600.4, replayed=5 * MB) == pytest.approx((0.4, True))


def test_a_stalled_replica_lags_since_the_primary_passed_what_it_replayed():
    """Replay stopped at 6 MB; the primary passed it at 1002 s and went on: the lag grows
    from there, whatever the primary writes since."""
    moving = positions((1000.0, 5 * MB), (1002.0, 7 * MB), (1004.0, 9 * MB), (1006.0, 11 * MB))
    assert moving.lag(now=1010.0, replayed=6 * MB) == (8.0, True)
    assert moving.lag(now=1010.0, replayed=11 * MB) == (0.0, True)


def test_a_replica_behind_every_position_seen_has_a_lower_bound_only():
    """The monitor's first check, replay behind the primary's first position seen: how
    far behind is not known, only since when at least."""
    first = positions((1000.0, 5 * MB))
    assert first.lag(now=1000.5, replayed=4 * MB) == (0.5, False)
    assert PrimaryPositions().lag(now=1000.0, replayed=0) is None


def test_positions_are_kept_only_when_the_primary_moves_on():
    """An idle primary's position is kept once, with when it was first reached."""
    idle = positions((1000.0, 5 * MB), (1002.0, 5 * MB), (1004.0, 5 * MB), (1006.0, 6 * MB))
    assert idle.lag(now=1007.0, replayed=5 * MB + 1) == (1.0, True)
    assert idle.lag(now=1007.0, replayed=4 * MB) == (7.0, False)


@pytest.mark.django_db(databases=["users"])
def test_a_check_compares_what_the_replica_replayed_with_the_primary(settings):
    """The primary stands in for its replica (on PostgreSQL it is not in recovery: it has
    nothing to replay; on SQLite ``SELECT 1`` answers): a check finds it well."""
    health = check_replica("users", 5.0, positions((0.0, 1)))
    assert health.state == OK and health.lag_s == 0.0
