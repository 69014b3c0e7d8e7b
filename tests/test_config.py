"""Settings: keyword > dask.config (files, set, DASK_SOLLOL_DASK__* env) > shipped YAML."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import dask.config
import yaml

import sollol_dask as sd
from sollol_dask._config import DEFAULTS_FILE, NAMES
from sollol_dask._settings import RouterSettings
from sollol_dask.backends import EmbedOptions

URL = "http://127.0.0.1:9"


def test_the_shipped_yaml_holds_the_dataclass_defaults_under_kebab_case_keys():
    with open(DEFAULTS_FILE) as f:
        shipped = yaml.safe_load(f)["sollol-dask"]
    defaults = {f.name: f.default for f in dataclasses.fields(RouterSettings)
                if f.name not in ("nodes", "opts", "fleet")}  # fleet: set by discovery
    defaults.update({f.name: f.default for f in dataclasses.fields(EmbedOptions)
                     if f.name != "model"})
    assert shipped == {k.replace("_", "-"): v for k, v in defaults.items()}
    assert set(NAMES) == set(defaults)


def test_keyword_beats_dask_config_beats_default():
    with sd.Embedder([URL], model="m") as emb:
        assert emb.settings.batch_size == 512 and emb.settings.opts.truncate is True
    with dask.config.set({"sollol-dask.batch-size": 64, "sollol-dask.truncate": False}):
        with sd.Embedder([URL], model="m") as emb:
            assert emb.settings.batch_size == 64 and emb.settings.opts.truncate is False
        with sd.Embedder([URL], model="m", batch_size=8) as emb:
            assert emb.settings.batch_size == 8


def test_dask_environment_variables_reach_the_settings():
    code = "import sollol_dask as sd; print(sd.Embedder(['%s'], model='m').settings.batch_size)" % URL
    env = dict(os.environ, DASK_SOLLOL_DASK__BATCH_SIZE="64")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "64"
