"""results.json's provenance: the code that ran, the checkpoints it loaded, the kernels and
dtypes it used; and the code digest that keeps the latent cache from reusing stale entries."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from branches.baseline import train as baseline_train
from shared.provenance import code_digest, git_state
from shared.testing import write_micro_tokenizer


def test_a_run_records_where_its_result_came_from(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "cache"))
    tokenizer = write_micro_tokenizer(tmp_path / "tokenizer.ckpt")
    baseline_train.main(["--preset", "micro", "--output", str(tmp_path / "run"),
                         "--tokenizer", str(tokenizer), "--threads", "1"])
    provenance = json.loads((tmp_path / "run" / "results.json").read_text())["provenance"]
    assert provenance["checkpoints"] == {"tokenizer": {
        "source": str(tokenizer), "sha256": hashlib.sha256(tokenizer.read_bytes()).hexdigest()}}
    assert provenance["attention"] == ["sdpa"]  # micro's predictor on a CPU
    assert (provenance["amp_dtype"], provenance["eval_dtype"]) == ("fp32", "fp32")
    assert provenance["numpy"] == np.__version__ and "cudnn" in provenance
    here = git_state(Path.cwd())  # the tests run in the checkout the job ran in
    assert provenance["code"]["commit"] == here["commit"]
    # The latent cache's key names the code that made its entries.
    (key_file,) = (tmp_path / "cache" / "latents").glob("*/key.json")
    key = json.loads(key_file.read_text())
    assert key["code"] == code_digest("shared.magvit", "shared.data", "shared.latent_experiment")


def test_git_state_sees_the_commit_and_uncommitted_changes(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}  # not a repository
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "model.py").write_text("WIDTH = 64\n")
    (tmp_path / ".gitignore").write_text("runs/\n")
    git("add", "-A")
    git("commit", "-q", "-m", "x")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True, check=True).stdout.strip()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "results.json").write_text("{}")  # ignored output: still clean
    assert git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "model.py").write_text("WIDTH = 128\n")
    assert git_state(tmp_path) == {"commit": head, "dirty": True}


def test_the_code_digest_follows_the_source(tmp_path, monkeypatch):
    package = tmp_path / "encoderpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "encode.py").write_text("SCALE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = code_digest("encoderpkg")
    assert code_digest("encoderpkg") == before
    (package / "encode.py").write_text("SCALE = 2\n")
    assert code_digest("encoderpkg") != before
    with pytest.raises(ModuleNotFoundError):
        code_digest("no_such_package_here")
    sys.modules.pop("encoderpkg", None)
