"""One pipeline behind every entry point: audit_model and privquant run give the same numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import result_numbers
from privquant.artifacts import ArtifactCache, load_checkpoint
from privquant.data import load_dataset
from privquant.errors import ConfigError
from privquant.pipeline import VariantConfig, audit_model, load_config, run_audit
from privquant.population import population_jobs
from privquant.population.jobs import job_key
from privquant.training import TrainConfig

RECIPE = {"epochs": 8, "batch_size": 32, "optimizer": "adam", "lr": 0.003, "weight_decay": 0.0,
          "precision": "fp32", "channels_last": False}  # fmt: skip
VARIANTS = [
    {"name": "fp32"},
    {"name": "ptq4", "method": "ptq", "quant": {"weight_bits": 4, "first_last_bits": None}},
    {"name": "coarse", "steps": [{"method": "output_coarsening", "levels": 2}]},
]
ATTACKS = ["loss", "lira_online_fixed_var", "rmia", "rmia_online"]


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict:
    ds = load_dataset("digits")
    x, y = ds.x_train[:400], ds.y_train[:400]
    xt, yt = ds.x_test[:200], ds.y_test[:200]
    path = tmp_path_factory.mktemp("data") / "rows.npz"
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return {"x": x, "y": y, "xt": xt, "yt": yt, "path": path}


def test_audit_model_gives_the_numbers_of_privquant_run(rows: dict, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = load_config({
            "name": "same", "seed": 3,
            "data": {"name": f"npz:{rows['path']}", "pool_size": 400, "reference_size": 0, "rows": "ordered"},
            "model": {"name": "mlp", "options": {"hidden": [32]}}, "train": {**RECIPE, "seed": 3},
            "population": {"n_models": 4, "queries": 1, "target_members": 200},
            "variants": VARIANTS, "attacks": ATTACKS, "targets": [0], "bootstrap": 20,
        })  # fmt: skip
        run_audit(config, tmp_path / "run", progress=False)
        # The target the run trained: model 0 of the plain population, from the run's cache.
        from privquant.membership import MembershipSplit

        split = MembershipSplit.load(tmp_path / "run" / "split.npz")
        assert split.keep[0].tolist() == [True] * 200 + [False] * 200
        ds = load_dataset(f"npz:{rows['path']}")
        cache = ArtifactCache(tmp_path / "run" / "cache")
        trained = population_jobs(split, "mlp", config.train, {"hidden": [32]})[0]  # seed 3
        model, _ = load_checkpoint(cache.get(job_key(trained, ds, cache)))

        x, y = rows["x"], rows["y"]
        audit_model(model, (x[:200], y[:200]), (x[200:], y[200:]), "mlp", TrainConfig(**RECIPE),
                    n_shadows=3, variants=[VariantConfig.model_validate(v) for v in VARIANTS],
                    attacks=ATTACKS, test=(rows["xt"], rows["yt"]), n_bootstrap=20, seed=3,
                    progress=False, model_options={"hidden": [32]}, out=tmp_path / "am")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    mine, theirs = result_numbers(tmp_path / "am"), result_numbers(tmp_path / "run")
    # The data came from arrays in one and from a file in the other: only its name differs.
    assert mine.pop("dataset")["name"] == "user"
    theirs.pop("dataset")
    assert mine == theirs
    fp = mine["variants"]["fp32"]
    assert fp["attacks"]["rmia_online"]["mean"]["auc"] > 0.55  # a real audit, not all ties
    # audit_model's folder is a run folder: its config, split and report beside the results.
    assert {"config.yaml", "split.npz", "report.md"} <= {
        p.name for p in (tmp_path / "am").iterdir()
    }


class Tiny(nn.Module):  # a user's own module, in no registry
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_users_module_runs_through_the_pipeline_with_its_defense_info(rows: dict) -> None:
    from privquant.training import Trainer

    x, y = rows["x"], rows["y"]
    cfg = TrainConfig(**RECIPE)
    torch.manual_seed(0)
    model = Tiny()
    Trainer(cfg).fit(model, x[:200], y[:200], progress=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = audit_model(model, (x[:200], y[:200]), (x[200:], y[200:]), Tiny, cfg, n_shadows=2,
                      variants=[VariantConfig(name="fp32"),
                                VariantConfig(name="dp", steps=[{"method": "dp_sgd", "epsilon": 50.0,
                                                                 "epochs": 2}])],
                      attacks=["loss", "rmia"], n_bootstrap=0, progress=False)  # fmt: skip
    assert res.split["members_per_model"][0] == 200
    # The pipeline keeps what each model's defense recorded (the DP-SGD epsilon, for one).
    info = res.variants["dp"].defense_info
    assert info is not None and info["epsilon"] == pytest.approx(50.0, rel=0.05)
    assert res.variants["fp32"].test_accuracy is None  # no test rows given
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_target_must_match_its_architecture_and_the_rows_it_trained_on(rows: dict) -> None:
    x, y = rows["x"], rows["y"]
    wide = nn.Sequential(nn.Flatten(), nn.Linear(64, 33), nn.ReLU(), nn.Linear(33, 10))
    with pytest.raises(ConfigError, match="model_fn: builds a different architecture"):
        audit_model(wide, (x[:200], y[:200]), (x[200:], y[200:]), Tiny, TrainConfig(**RECIPE),
                    n_shadows=2, attacks=["loss"], n_bootstrap=0, progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="target_members: 400 leaves none"):
        load_config({"data": {"name": "digits", "pool_size": 400},
                     "population": {"target_members": 400}})  # fmt: skip
