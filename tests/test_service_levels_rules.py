"""Service-level rules with fixed numbers: targets, compliance, budget and burn."""
import pytest

from lib.core.settings import SloTarget, parse_targets
from lib.health.service_levels import Compliance, SloStatus, burn_rate

DM = SloTarget("reply_dm", 0.95, 900)


def test_parse_targets():
    assert parse_targets("reply_dm:95:15m, publish_post:99.5%:2h,send_dm:90:30s") == [
        DM, SloTarget("publish_post", 0.995, 7200), SloTarget("send_dm", 0.9, 30)]
    assert parse_targets("reply_comment:95:20") == [SloTarget("reply_comment", 0.95, 1200)]  # minutes
    assert parse_targets("") == []
    for bad, message in [("reply_dm:95", "action_type:percent:duration"), ("tweet:95:15m", "not an action type"),
                         ("reply_dm:100:15m", "below 100"), ("reply_dm:95:0m", "positive"),
                         ("reply_dm:95:15m,reply_dm:99:1h", "one target per action type")]:
        with pytest.raises(ValueError, match=message):
            parse_targets(bad)
    assert DM.describe() == "95 % of reply_dm within 15 min"


def test_budget_and_burn():
    c = Compliance(good=90, late=6, dead=2, overdue=2)
    assert (c.total, c.bad, c.ratio) == (100, 10, 0.9)
    assert burn_rate(c, DM) == pytest.approx(2.0)  # 10 % bad against a 5 % budget
    assert burn_rate(Compliance(0, 0, 0, 0), DM) is None
    week = Compliance(good=970, late=30, dead=0, overdue=0)
    s = SloStatus(DM, week, c, burn_rate(c, DM))
    assert s.met is True and s.budget_left == pytest.approx(0.4)
    assert s.burning(1.99) and not s.burning(2.01)
    few = Compliance(good=0, late=4, dead=0, overdue=0)  # below MIN_EVENTS: no rate to speak of
    assert not SloStatus(DM, week, few, burn_rate(few, DM)).burning(1.0)
