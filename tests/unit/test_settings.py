"""Settings (``components.common.settings``): read from the environment, validated, and the configuration reference
generated from their descriptions and kept current."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from components.common.settings import Settings, SplitSettings, reference

REFERENCE = Path(__file__).resolve().parents[2] / "components" / "common" / "CONFIGURATION.md"


def test_the_configuration_reference_is_current() -> None:
    assert REFERENCE.read_text() == reference(), "run `make config-reference`"


def test_every_setting_is_in_the_reference_with_a_description() -> None:
    text = reference()
    for name, field in Settings.model_fields.items():
        model = field.annotation
        fields = model.model_fields if isinstance(model, type) and hasattr(model, "model_fields") else {}
        for inner, spec in fields.items():
            assert f"`APD_{name.upper()}__{inner.upper()}`" in text
            assert spec.description, f"{name}.{inner} has no description"
        if not fields:
            assert f"`APD_{name.upper()}`" in text


def test_settings_read_nested_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APD_IMAGES__MAX_BYTES", "1234")
    monkeypatch.setenv("APD_VALIDATION__MIN_IMAGES_PER_SPLIT", "3")
    settings = Settings()
    assert settings.images.max_bytes == 1234
    assert settings.validation.min_images_per_split == 3


def test_split_fractions_must_add_up() -> None:
    with pytest.raises(ValidationError, match="add up to 1"):
        SplitSettings(train=0.8, val=0.15, test=0.15)
