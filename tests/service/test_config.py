"""The shipped Serve config is one that Ray Serve accepts, and its app builds."""

from __future__ import annotations

from pathlib import Path

import geo_hires_service
import pytest
import yaml

from geo_hires.detect.options import DEFAULT_MODEL

CONFIG = Path(geo_hires_service.__file__).parent / "serve_config.yaml"  # shipped in the package


def test_serve_config_parses_with_rays_schema_and_its_app_builds(tmp_path):
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load(CONFIG.read_text())
    schema = (
        ServeDeploySchema.model_validate(doc)
        if hasattr(ServeDeploySchema, "model_validate")
        else ServeDeploySchema.parse_obj(doc)
    )
    (app,) = schema.applications
    assert app.import_path == "geo_hires_service.app:build" and app.route_prefix == "/"
    module, _, name = app.import_path.partition(":")
    build = getattr(__import__(module, fromlist=[name]), name)
    from ray.serve import Application

    assert isinstance(build(app.args), Application)
    from pydantic import ValidationError

    from geo_hires.errors import GeoHiresError

    with pytest.raises((ValidationError, GeoHiresError)):
        build({**app.args, "surprise": 1})  # unknown keys are refused before anything starts


def test_database_url_comes_from_args_then_a_secret_file_then_the_environment(tmp_path):
    from geo_hires_service.app import ServeArgs

    from geo_hires.errors import ConfigError

    args = ServeArgs(data_dir=str(tmp_path))
    secret = tmp_path / "url"
    secret.write_text("postgresql://u:p@db:5432/jobs\n")
    assert args.db_url({}) == f"sqlite:///{tmp_path / 'jobs.db'}"
    assert args.db_url({"GEO_HIRES_DB": "postgresql://env"}) == "postgresql://env"
    both = {"GEO_HIRES_DB_FILE": str(secret), "GEO_HIRES_DB": "postgresql://env"}
    assert args.db_url(both) == "postgresql://u:p@db:5432/jobs"  # the file wins, stripped
    assert ServeArgs(data_dir=str(tmp_path), db="sqlite:///x").db_url(both) == "sqlite:///x"
    with pytest.raises(ConfigError, match="cannot read the database URL file"):
        args.db_url({"GEO_HIRES_DB_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        args.db_url({"GEO_HIRES_DB_FILE": str(tmp_path / "empty")})


def test_job_options_become_the_librarys_options_and_read_config():
    from geo_hires_service.schemas import job_detect_options, scene_read_config

    from geo_hires.config import ReadConfig

    base = scene_read_config(1234)
    assert (base.driver, base.max_scene_pixels, base.stac_confine) == ("GTiff", 1234, True)
    assert scene_read_config().max_scene_pixels == ReadConfig.max_scene_pixels
    opts = job_detect_options({"block": 512, "score_threshold": 0.3, "levels": ["coarse"],
                               "zoom": "gate", "budget": 0.5, "bands": [3, 2, 1]})  # fmt: skip
    assert (opts.block, opts.score_threshold, opts.zoom, opts.budget) == (512, 0.3, "gate", 0.5)
    assert tuple(opts.levels) == ("coarse",) and tuple(opts.bands) == (3, 2, 1)
    assert job_detect_options({}).model == DEFAULT_MODEL


def test_serve_args_become_the_services_config(tmp_path):
    from geo_hires_service.app import ServeArgs
    from geo_hires_service.security import load_tokens

    from tests.service.harness import TOKENS

    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKENS[0]}\n")
    args = ServeArgs(data_dir=str(tmp_path), token_file=str(tokens), allow_roots=[str(tmp_path)],
                     max_upload_bytes=5, max_scene_pixels=6, max_active=7,
                     max_active_per_tenant=3, tenant_quota_bytes=8, retain_days=9.0)  # fmt: skip
    cfg = args.service_config()
    assert cfg.data_dir == tmp_path and cfg.allow_roots == (tmp_path,)
    assert (cfg.max_upload_bytes, cfg.max_scene_pixels, cfg.max_active) == (5, 6, 7)
    assert (cfg.max_active_per_tenant, cfg.tenant_quota_bytes, cfg.retain_days) == (3, 8, 9.0)
    assert cfg.tokens == load_tokens(tokens) and cfg.read_config.max_scene_pixels == 6


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--lease-seconds", "1", "--lease-seconds: input should be greater than or equal to 2"),
        ("--runner-slots", "0", "--runner-slots: input should be greater than or equal to 1"),
        ("--tenant-quota-mb", "-1", "--tenant-quota-mb: input should be greater than 0"),
        ("--max-upload-mb", "0", "--max-upload-mb: input should be greater than 0"),
    ],
)
def test_serve_flags_out_of_bounds_are_one_line_errors_naming_the_flag(
    tmp_path, capsys, flag, value, said
):
    from geo_hires.cli import main
    from tests.service.harness import TOKENS

    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS[0] + "\n")
    argv = ["serve", "--data-dir", str(tmp_path), "--token-file", str(tokens), flag, value]
    assert main(argv) != 0  # refused before Ray starts
    err = capsys.readouterr().err
    assert err.strip() == f"geo-hires: error: {said}" and "Traceback" not in err
