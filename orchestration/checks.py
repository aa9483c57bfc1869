"""Asset checks, each a call into lite_rec.validation (the Great Expectations suites on the raw
tables) or lite_rec.checks (the derived assets), shown as a table of expectations or rules. A
failed blocking check stops everything downstream; the metric floor only warns. Run config
reaches a check as op `<asset>_<check>`, e.g. `ops: {rec_model_metric_floor: {config: ...}}`."""

from collections.abc import Sequence

import dagster as dg
import numpy as np
import pandas as pd

from lite_rec import checks
from lite_rec.pipeline import TrainedModel
from lite_rec.validation import ValidationReport, validate_interactions, validate_items
from orchestration.assets.metadata import table
from orchestration.resources import Settings

RULE_COLUMNS = {"rule": "string", "passed": "bool", "checked": "int", "failing": "int"}
RULE_COLUMNS |= {"examples": "string"}
EXPECTATION_COLUMNS = {"expectation": "string", "column": "string", "expected": "string"}
EXPECTATION_COLUMNS |= {"passed": "bool", "unexpected": "int", "severity": "string"}


def suite_result(report: ValidationReport, settings: Settings) -> dg.AssetCheckResult:
    """A suite's verdict: every expectation that ran, the failures in words, the dataset."""
    rows = [
        {
            "expectation": r.expectation,
            "column": r.column,
            "expected": r.expected,
            "passed": r.success,
            "unexpected": r.unexpected_count,
            "severity": r.severity,
        }
        for r in report.results
    ]
    metadata = {
        "expectations": table(rows, EXPECTATION_COLUMNS),
        "failed": len(report.failures),
        "failures": [f.describe() for f in report.failures],
        "warnings": [f.describe() for f in report.warnings],
        "source": str(settings.dataset_dir()),
    }
    return dg.AssetCheckResult(passed=report.success, metadata=metadata)


def rules_result(
    results: Sequence[checks.RuleResult],
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    **metadata: object,
) -> dg.AssetCheckResult:
    """The rules' verdict, one table row per rule with a few offending ids."""
    rows = [
        {
            "rule": r.rule,
            "passed": r.passed,
            "checked": r.checked,
            "failing": r.failing,
            "examples": ", ".join(r.examples),
        }
        for r in results
    ]
    passed = all(r.passed for r in results)
    metadata = {"rules": table(rows, RULE_COLUMNS), **metadata}
    return dg.AssetCheckResult(passed=passed, severity=severity, metadata=metadata)


@dg.asset_check(asset="raw_items", name="expectations", blocking=True)
def raw_items_expectations(settings: Settings, raw_items: pd.DataFrame) -> dg.AssetCheckResult:
    """Great Expectations items suite: ids present and unique, titles non-empty."""
    return suite_result(validate_items(raw_items), settings)


@dg.asset_check(
    asset="raw_interactions",
    name="expectations",
    blocking=True,
    additional_ins={"raw_items": dg.AssetIn()},
)
def raw_interactions_expectations(
    settings: Settings, raw_interactions: pd.DataFrame, raw_items: pd.DataFrame
) -> dg.AssetCheckResult:
    """Great Expectations interactions suite: keys, types, ranges, uniqueness, known items."""
    return suite_result(validate_interactions(raw_interactions, raw_items), settings)


@dg.asset_check(asset="interactions_5core", name="k_core", blocking=True)
def interactions_5core_is_k_core(
    settings: Settings, interactions_5core: pd.DataFrame
) -> dg.AssetCheckResult:
    """Every user and every item keeps at least k (data.k_core) interactions."""
    k = settings.load_config().data.k_core
    return rules_result(checks.kcore_rules(interactions_5core, k), k=k)


@dg.asset_check(asset="loo_splits", name="leave_one_out", blocking=True)
def loo_splits_leave_one_out(loo_splits: pd.DataFrame) -> dg.AssetCheckResult:
    """Each user has one validation and one test item after the training part, and the test
    item is not in the training part."""
    return rules_result(checks.split_rules(loo_splits))


@dg.asset_check(
    asset="item_embeddings",
    name="one_finite_vector_per_item",
    blocking=True,
    additional_ins={"items_5core": dg.AssetIn()},
)
def item_embeddings_cover_the_catalog(
    item_embeddings: np.ndarray, items_5core: pd.DataFrame
) -> dg.AssetCheckResult:
    """One finite vector (no NaN) per catalog item."""
    item_ids = [str(item) for item in items_5core["item_id"]]
    return rules_result(checks.embedding_rules(item_embeddings, item_ids))


class MetricFloor(dg.Config):
    """The validation metric the trained model should reach; below it the check warns and the
    pipeline goes on (the gate still decides on the champion)."""

    metric: str = "ndcg@10"
    floor: float = 0.01


@dg.asset_check(asset="rec_model", name="metric_floor")
def rec_model_metric_floor(config: MetricFloor, rec_model: TrainedModel) -> dg.AssetCheckResult:
    """Validation NDCG@10 of the trained model at or above a floor (warns, does not block)."""
    rule = checks.metric_floor_rule(rec_model.valid_metrics, config.metric, config.floor)
    value = round(rec_model.valid_metrics[config.metric], 4)
    return rules_result([rule], dg.AssetCheckSeverity.WARN, value=value, floor=config.floor)
