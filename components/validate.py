"""Validate: check an ingested dataset and block the pipeline when it is unfit.

Rules (each failure names the rule and the files):
- ``decodes``: every file decodes as an image (not empty, not truncated or corrupt); for a dataset by reference,
  every source object is still there and unchanged since ingest (the object is named);
- ``allowed_format``: JPEG, PNG or WebP (``APD_IMAGES__FORMATS``);
- ``size_limits``: within the byte and pixel limits that serving enforces;
- ``min_size``: each side at least ``APD_IMAGES__MIN_SIDE`` pixels;
- ``both_classes``: ``real`` and ``ai_generated`` present in every split;
- ``class_balance``: majority/minority ratio at most ``max_class_ratio`` overall and per split (a warning above
  ``warn_class_ratio``);
- ``no_cross_split_duplicates``: the same content never in two splits;
- ``label_conflicts``: the same content never under both labels;
- ``min_split_size``: at least ``min_images_per_split`` images in each split.
"""

import functools
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import structlog
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output
from tqdm import tqdm

from components.common.dataset import LABELS, SPLITS, summarize
from components.common.dataset_files import DatasetImages
from components.common.errors import DataSourceError, InvalidImageError
from components.common.images import decode_image
from components.common.settings import ImageLimits, ValidationRules
from components.stage import stage

log = structlog.get_logger(__name__)

# InvalidImageError.reason -> the validation rule it breaks.
_RULE_OF_REASON = {
    "unsupported_format": "allowed_format",
    "too_small": "min_size",
    "too_large": "size_limits",
    "too_many_pixels": "size_limits",
}
_MAX_FILES_IN_MESSAGE = 10


@dataclass(frozen=True)
class Finding:
    """One broken rule: which, why, and the files concerned (manifest paths; for an image by reference that
    cannot be read, its source object)."""

    rule: str
    message: str
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validation; ``passed`` is False when any error was found. Warnings never block."""

    dataset_version: str
    num_images: int
    counts: dict[str, dict[str, int]]
    errors: list[Finding]
    warnings: list[Finding]

    @property
    def passed(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, object]:
        return {"passed": self.passed, **asdict(self)}

    def to_markdown(self) -> str:
        """Human-readable report (rendered by the Kubeflow UI for the Markdown output)."""
        status = "PASSED" if self.passed else "FAILED"
        lines = [
            f"# Dataset validation: {status}",
            "",
            f"Dataset version `{self.dataset_version}`, {self.num_images} images.",
            "",
            "| split | " + " | ".join(LABELS) + " | total |",
            "| --- | " + " | ".join("---:" for _ in LABELS) + " | ---: |",
        ]
        for split in SPLITS:
            row = self.counts[split]
            lines.append(f"| {split} | " + " | ".join(str(row[lab]) for lab in LABELS) + f" | {sum(row.values())} |")
        for title, findings in (("Errors (blocking)", self.errors), ("Warnings", self.warnings)):
            lines += ["", f"## {title}", ""]
            if not findings:
                lines.append("None.")
            for finding in findings:
                lines.append(f"- **{finding.rule}**: {finding.message}")
                lines += [f"  - `{name}`" for name in finding.files[:_MAX_FILES_IN_MESSAGE]]
                if len(finding.files) > _MAX_FILES_IN_MESSAGE:
                    lines.append(f"  - ... and {len(finding.files) - _MAX_FILES_IN_MESSAGE} more (see the JSON report)")
        return "\n".join(lines) + "\n"

    def failure_message(self) -> str:
        """One paragraph naming every failed rule and its first files: the message of the blocking error."""
        parts = []
        for f in self.errors:
            shown = ", ".join(f.files[:_MAX_FILES_IN_MESSAGE]) + (
                " ..." if len(f.files) > _MAX_FILES_IN_MESSAGE else ""
            )
            parts.append(f"[{f.rule}] {f.message}" + (f" ({shown})" if shown else ""))
        return f"dataset {self.dataset_version} failed validation: " + "; ".join(parts)


def _verdict(data: bytes, limits: ImageLimits) -> tuple[str, str] | None:
    """(the rule a file breaks, why) when it does not decode under the serving limits, else None."""
    try:
        decode_image(data, limits)
    except InvalidImageError as exc:
        return _RULE_OF_REASON.get(exc.reason, "decodes"), str(exc)
    return None


def _check_files(images: DatasetImages, manifest: pd.DataFrame, limits: ImageLimits) -> list[Finding]:
    """Read and decode every file under the serving limits (in parallel); group the failures by rule."""
    failures: dict[str, list[tuple[str, str]]] = {}
    rows = list(manifest.itertuples(index=False))
    verdicts = images.read_each(rows, functools.partial(_verdict, limits=limits))
    bar = tqdm(verdicts, total=len(rows), desc="validate", unit="img", disable=not sys.stderr.isatty())
    for row, verdict in zip(rows, bar, strict=True):
        if isinstance(verdict, DataSourceError):  # missing, or a source changed since ingest: named by its source
            failures.setdefault("decodes", []).append((row.ref or row.path, str(verdict)))
        elif verdict is not None:
            rule, reason = verdict
            failures.setdefault(rule, []).append((row.path, reason))
    findings = []
    for rule, items in failures.items():
        reasons = sorted({reason for _, reason in items})
        message = f"{len(items)} file(s) rejected: " + "; ".join(reasons[:3]) + ("; ..." if len(reasons) > 3 else "")
        findings.append(Finding(rule, message, [rel for rel, _ in items]))
    return findings


def _check_balance(counts: dict[str, dict[str, int]], rules: ValidationRules) -> tuple[list[Finding], list[Finding]]:
    errors, warnings = [], []
    scopes = {"overall": {lab: sum(counts[s][lab] for s in SPLITS) for lab in LABELS}}
    scopes.update({f"split {s}": counts[s] for s in SPLITS})
    for scope, row in scopes.items():
        missing = [lab for lab in LABELS if row[lab] == 0]
        if missing:
            errors.append(Finding("both_classes", f"{scope} has no {' and no '.join(missing)} images; both are needed"))
            continue
        ratio = max(row.values()) / min(row.values())
        detail = f"{scope}: {row['real']} real vs {row['ai_generated']} ai_generated, ratio {ratio:.2f}"
        if ratio > rules.max_class_ratio:
            errors.append(Finding("class_balance", f"{detail} exceeds the limit {rules.max_class_ratio}"))
        elif ratio > rules.warn_class_ratio:
            warnings.append(Finding("class_balance", f"{detail} is near the limit {rules.max_class_ratio}"))
    return errors, warnings


def _check_duplicates(manifest: pd.DataFrame) -> list[Finding]:
    findings = []
    for column, rule, what in (
        ("split", "no_cross_split_duplicates", "the same image is in several splits"),
        ("label", "label_conflicts", "the same image carries both labels"),
    ):
        spread = manifest.groupby("sha256")[column].nunique()
        shas = set(spread[spread > 1].index)
        if shas:
            files = sorted(manifest.loc[manifest["sha256"].isin(shas), "path"].unique())
            findings.append(Finding(rule, f"{what} ({len(shas)} image(s))", files))
    return findings


def validate_dataset(images: DatasetImages, limits: ImageLimits, rules: ValidationRules) -> ValidationReport:
    """Check every rule on the dataset ``images`` reads; never raises for a bad dataset (see ``passed``)."""
    started = time.perf_counter()
    manifest = images.manifest()
    summary = summarize(manifest)
    errors = _check_files(images, manifest, limits)
    balance_errors, warnings = _check_balance(summary.counts, rules)
    errors += balance_errors + _check_duplicates(manifest)
    for split in SPLITS:
        total = sum(summary.counts[split].values())
        if total < rules.min_images_per_split:
            errors.append(
                Finding("min_split_size", f"split {split} has {total} images; at least {rules.min_images_per_split}")
            )
    report = ValidationReport(summary.dataset_version, summary.num_images, summary.counts, errors, warnings)
    log.info(
        "validation_done",
        dataset_version=report.dataset_version,
        passed=report.passed,
        errors=[f.rule for f in errors],
        warnings=[f.rule for f in warnings],
        seconds=round(time.perf_counter() - started, 2),
    )
    return report


def write_report(report: ValidationReport, json_path: Path, markdown_path: Path) -> None:
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    markdown_path.write_text(report.to_markdown())


@stage
def validate(
    dataset: Input[Dataset],
    report: Output[Artifact],
    summary: Output[Markdown],
    max_class_ratio: float = 1.5,
    warn_class_ratio: float = 1.25,
    min_images_per_split: int = 10,
) -> str:
    """Validate an ingested dataset; fails (blocking the pipeline) when any rule is broken.

    Args:
        dataset: The ingested dataset (images + manifest.parquet).
        report: JSON report: counts, errors and warnings with the files each names.
        summary: The same report as Markdown, shown in the Kubeflow UI.
        max_class_ratio: Largest majority/minority class ratio allowed, overall and per split.
        warn_class_ratio: Class ratio above which a warning is reported.
        min_images_per_split: Fewest images each of train, val and test must hold.

    Returns:
        The dataset version that passed validation.
    """
    from pathlib import Path

    from components.common.dataset_files import DatasetImages
    from components.common.errors import DataValidationError
    from components.common.logging import configure_logging
    from components.common.settings import Settings, ValidationRules
    from components.validate import validate_dataset, write_report

    settings = Settings()
    configure_logging(settings.logging)
    rules = ValidationRules(
        max_class_ratio=max_class_ratio, warn_class_ratio=warn_class_ratio, min_images_per_split=min_images_per_split
    )
    result = validate_dataset(DatasetImages(dataset.path, settings.s3), settings.images, rules)
    write_report(result, Path(report.path), Path(summary.path))
    report.metadata.update({"dataset_version": result.dataset_version, "passed": result.passed})
    summary.metadata["dataset_version"] = result.dataset_version
    if not result.passed:
        raise DataValidationError(result.failure_message())
    return result.dataset_version
