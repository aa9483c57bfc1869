"""`lite-rec bench`: every model on the same data, splits, seeds and metrics, in one run.

For each dataset: prepare it (k-core, leave-one-out), embed the items with the Item LLM (cached),
train each model with early stopping on validation NDCG@10, then on the test split measure
Recall/NDCG@{5,10,20} (full ranking; beams for generative models, see
`lite_rec.baselines.generative`), inference time for top-10 and top-20 lists, peak RSS and
parameter counts. Writes `results.json`, `results.md` and PNG plots to the output directory and
logs them to MLflow. Its tools (`lite-rec bench sweep`, `step-profile`, `patience-replay`,
`table`, `data`, `serve-load`) are the modules beside this one, on the same runner and report.
"""

from lite_rec.bench.models import MODELS
from lite_rec.bench.run import DEFAULT_DATASETS, generative_config, inference_ratios, run_bench

__all__ = ["DEFAULT_DATASETS", "MODELS", "generative_config", "inference_ratios", "run_bench"]
