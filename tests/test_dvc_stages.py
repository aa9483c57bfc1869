"""dvc.yaml's stages: each depends on the whole `lite_rec` package its command runs, and on
sections of params.yaml that exist."""

import yaml

from lite_rec.config import PARAMS_FILE, PROJECT_ROOT

STAGES = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def test_every_lite_rec_stage_depends_on_the_whole_package() -> None:
    for name, stage in STAGES.items():
        assert stage["cmd"].startswith("lite-rec "), name
        assert "lite_rec" in stage["deps"], f"stage {name}: expected lite_rec in its deps"
        parts = [dep for dep in stage["deps"] if dep.startswith("lite_rec/")]
        assert not parts, f"stage {name}: {parts} are inside lite_rec already"


def test_stage_params_are_sections_of_params_yaml() -> None:
    sections = set(yaml.safe_load(PARAMS_FILE.read_text()))
    for name, stage in STAGES.items():
        assert set(stage.get("params", [])) <= sections, name
    for name in ("train", "bench"):  # train.recipe's overlays change what they train
        assert "recipes" in STAGES[name]["params"], name
