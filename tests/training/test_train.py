"""Training: learning on a synthetic cohort, exact resume after kill -9, torchrun, safe checkpoints."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from glioseg.config import load_config
from glioseg.data.discovery import discover
from glioseg.data.preprocess import preprocess_dataset
from glioseg.data.synth import write_cohort
from glioseg.errors import GliosegError
from glioseg.training.checkpoint import load_checkpoint, model_from_checkpoint
from glioseg.training.loop import build_trainer, train, validate

TINY = [
    "preprocess.target_spacing=null",
    "model.filters=[4,8,16]",
    "train.patch_size=[32,32,32]",
    "train.samples_per_epoch=4",
    "train.batch_size=2",
    "train.val_every=1",
    "train.threads=1",
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def cohort_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    write_cohort(root / "raw", cases=6, shape=(40, 40, 40), layout="brats2021", seed=3)
    config = load_config("cpu", TINY)
    preprocess_dataset(discover(root / "raw").cases, config.preprocess, root / "cache", progress=False)
    return root / "cache"


def _cli(*args, env_extra=None):
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return [sys.executable, "-m", "glioseg", *args], env


def test_short_training_learns(cohort_cache, tmp_path):
    """Loss falls and the trained model beats the untrained one on the validation cases."""
    config = load_config("cpu", [*TINY, "train.epochs=8", "train.samples_per_epoch=8", "train.lr=0.01", "train.val_every=8", "model.name=sa_unet"])
    trainer = build_trainer(config, cohort_cache, tmp_path / "run", progress=False)
    before = validate(trainer.model, trainer.val_cases, trainer.loss_fn, config, trainer.device)
    history = trainer.fit()
    after = history[-1]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert after["val_dice_wt"] > before["dice_wt"] + 0.1
    run = tmp_path / "run"
    for name in ("config.yaml", "split.json", "metrics.csv", "last.pt", "best.pt", "curves.png"):
        assert (run / name).is_file(), name
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 1 + 8


def _weights(path):
    return load_checkpoint(path)["model"]


def test_kill_9_and_resume_matches_uninterrupted_run(cohort_cache, tmp_path):
    overrides = [*TINY, "train.epochs=6", "train.deterministic=true", "train.seed=7", "train.val_every=3", "model.norm=batch", "model.dropout=paper"]
    args = ["train", "--preset", "cpu", "--cache", str(cohort_cache), "--quiet", *[a for o in overrides for a in ("--set", o)]]
    cmd, env = _cli(*args, "--run-dir", str(tmp_path / "straight"))
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)

    run = tmp_path / "killed"
    cmd, env = _cli(*args, "--run-dir", str(run))
    rng = random.Random(1)
    kills = 0
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        # kill at a random moment after the run has made some progress
        target_epoch = rng.randint(1, 5)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (run / "last.pt").exists():
                try:
                    if load_checkpoint(run / "last.pt")["epoch"] >= target_epoch:
                        break
                except GliosegError:
                    pass
            time.sleep(0.05)
        time.sleep(rng.random() * 0.5)
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        cmd, env = _cli("train", "--resume", str(run), "--quiet")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kills == 3:
            proc.wait(timeout=300)
            break
    assert proc.returncode == 0
    assert kills >= 2
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name], "resume removes what a killed write left"
    straight, resumed = _weights(tmp_path / "straight" / "last.pt"), _weights(run / "last.pt")
    assert load_checkpoint(run / "last.pt")["epoch"] == 6
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(e) for e in range(1, 7)]


def test_torchrun_two_processes_gloo(cohort_cache, tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
        "-m", "glioseg", "train", "--preset", "cpu", "--cache", str(cohort_cache), "--run-dir", str(run), "--quiet",
        *[a for o in [*TINY, "train.epochs=2"] for a in ("--set", o)],
    ]
    result = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in run.iterdir() if p.suffix != ".tmp") == sorted(
        ["best.pt", "cache.txt", "config.yaml", "curves.png", "last.pt", "metrics.csv", "split.json"]
    )
    payload = load_checkpoint(run / "last.pt")
    assert payload["epoch"] == 2
    assert not any(k.startswith("module.") for k in payload["model"]), "weights saved without the DDP wrapper"
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 3


def test_checkpoint_with_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "payload": Evil()}, path)
    with pytest.raises(GliosegError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_round_trip_weights_only(cohort_cache, tmp_path):
    config = load_config("cpu", [*TINY, "train.epochs=1"])
    train(config, cohort_cache, tmp_path / "run", progress=False)
    payload = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert payload["epoch"] == 1
    model, loaded_config, _ = model_from_checkpoint(tmp_path / "run")
    assert loaded_config == config
    x = torch.randn(1, 4, 20, 21, 22)
    assert model(x).shape == (1, 3, 20, 21, 22)


def test_existing_run_is_not_overwritten(cohort_cache, tmp_path):
    config = load_config("cpu", [*TINY, "train.epochs=1"])
    train(config, cohort_cache, tmp_path / "run", progress=False)
    with pytest.raises(GliosegError, match="already holds a run"):
        train(config, cohort_cache, tmp_path / "run", progress=False)


def test_paper_preset_settings_reach_the_model_and_optimizer():
    config = load_config("paper")
    from glioseg.training.checkpoint import build_model, network_config
    from glioseg.training.loop import make_optimizer, make_scheduler

    net = network_config(config)
    assert net.in_channels == 3 and net.out_channels == 4 and net.norm == "batch"
    assert net.dropout_encoder == (0.1, 0.1, 0.2, 0.2) and net.dropout_bottleneck == 0.3
    assert net.dropout_decoder == (0.2, 0.2, 0.1, 0.1)
    model = build_model(config)
    opt = make_optimizer(model, config)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 1e-4
    sched = make_scheduler(opt, config)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 1e-4  # constant
