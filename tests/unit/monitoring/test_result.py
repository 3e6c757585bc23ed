"""The table `apd drift run` prints."""

from components.common.settings import DriftSettings
from components.monitoring.signals import assess
from tests.unit.monitoring.synthetic import CONFIG, REFERENCE, drift_result, records


def test_the_table_shows_every_signal_and_the_verdict() -> None:
    assessment = assess(REFERENCE, records(2000, seed=11, ai_share=0.7), CONFIG, DriftSettings())
    text = drift_result(assessment.signals, assessment.verdict).to_text(DriftSettings())
    for expected in ("drift share", "mean probability", "confidence drop", "low-confidence ratio", "brightness"):
        assert expected in text
    assert "verdict: ALERT" in text
    assert "left out: 2 decode error, 1 unpaired" in text
    assert "verdict: NO VERDICT: m" in drift_result(None, "no_verdict").to_text(DriftSettings())
