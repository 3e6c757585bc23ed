"""The configuration reference is generated from the settings' descriptions and kept current."""

from pathlib import Path

from components.common.settings import Settings, reference

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
