"""Data-parallel training: 2 gloo processes under torchrun == 1 process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from host_helpers import write_image_npz  # noqa: E402

from edgecl.cli import main  # noqa: E402
from edgecl.host import ddp  # noqa: E402
from edgecl.host.checkpoint import load_checkpoint  # noqa: E402


def test_shards_cover_the_batch_once():
    for n in range(2, 30):
        for world in (1, 2, 3):
            parts = [ddp.shard(n, ddp.DistInfo(world_size=world, rank=r)) for r in range(world)]
            covered = [i for s in parts for i in range(n)[s]]
            assert covered == list(range(n))


def test_not_distributed_is_a_no_op():
    info = ddp.init()
    assert not info.distributed
    t = {"a": torch.ones(2)}
    assert ddp.all_average(t) is t
    m = torch.nn.Linear(2, 2)
    assert ddp.wrap(m, info, torch.device("cpu")) is m


def test_two_gloo_processes_match_one_process(tmp_path):
    data = write_image_npz(tmp_path / "img.npz")  # 240 samples: 30 global batches of 8
    common = ["--data", str(data), "--batch-size", "8", "--epochs", "2", "--no-batchnorm"]
    common += ["--lr", "0.01", "--optimizer", "sgd", "--threads", "1", "--no-progress"]
    single = tmp_path / "single.safetensors"
    assert main(["pretrain", *common, "--out", str(single), "--device", "cpu"]) == 0

    dist = tmp_path / "ddp.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    # torchrun ... -m edgecl pretrain, as host/ddp.py documents it
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "edgecl", "pretrain", *common, "--out", str(dist), "--device", "cpu"]
    cmd += ["--json", str(tmp_path / "ddp.json")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "ddp.json").read_text())
    assert report["world_size"] == 2

    m1, _ = load_checkpoint(single)
    m2, meta = load_checkpoint(dist)
    assert meta["provenance"]["world_size"] == 2
    for (name, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # ...and training moved the weights, so the comparison is not vacuous.
    assert report["accuracy"] > 0.8
