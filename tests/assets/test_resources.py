"""Resources carry the config that build_resources loaded: no second load during a run."""

from __future__ import annotations

from assets.resources import build_resources
from ingest.config import FlowLensConfig


def test_resources_carry_the_built_config_not_a_fresh_load(monkeypatch, tmp_path):
    cfg = FlowLensConfig(state_dir=tmp_path)
    cfg = cfg.model_copy(update={"pipeline": cfg.pipeline.model_copy(update={"grace_seconds": 77})})
    resources = build_resources(cfg, use_env=False)
    monkeypatch.setenv("FLOWLENS_PIPELINE__GRACE_SECONDS", "5")  # a later change must not leak into a run
    for key in ("landing", "enrichment"):
        carried = resources[key].flowlens_config()
        assert carried.pipeline.grace_seconds == 77 and carried.state_dir == tmp_path, key


def test_connection_fields_apply_over_the_carried_config(tmp_path):
    cfg = FlowLensConfig(state_dir=tmp_path)
    resources = build_resources(cfg, use_env=False)
    landing = resources["landing"].model_copy(update={"mode": "standard"})
    assert landing.flowlens_config().mode == "standard"
    assert landing.flowlens_config().postgres.port == resources["postgres"].port
