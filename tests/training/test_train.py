"""Training: learning on a synthetic cohort, exact resume after kill -9, torchrun, safe checkpoints."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from glioseg.checkpoint import load_checkpoint, model_from_checkpoint
from glioseg.config import load_config
from glioseg.data.cache import preprocess_dataset
from glioseg.data.discovery import discover
from glioseg.data.synth import write_cohort
from glioseg.errors import GliosegError
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
    config = load_config(
        "cpu",
        [
            *TINY,
            "train.epochs=8",
            "train.samples_per_epoch=8",
            "train.lr=0.01",
            "train.val_every=8",
            "model.name=sa_unet",
        ],
    )
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
    """Three kill -9 at random moments, each followed by --resume: the same weights as a run never killed."""
    epochs = 8
    overrides = [
        *TINY,
        f"train.epochs={epochs}",
        "train.deterministic=true",
        "train.seed=7",
        "train.val_every=3",
        "model.norm=batch",
        "model.dropout=paper",
    ]
    args = [
        "train",
        "--preset",
        "cpu",
        "--cache",
        str(cohort_cache),
        "--quiet",
        *[a for o in overrides for a in ("--set", o)],
    ]
    cmd, env = _cli(*args, "--run-dir", str(tmp_path / "straight"))
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=900)

    run = tmp_path / "killed"
    cmd, env = _cli(*args, "--run-dir", str(run))
    rng = random.Random(1)
    # three distinct, increasing epochs after which to kill, each leaving >= 3 epochs still to run,
    # so every resumed process makes progress before the next kill and the run is never over early
    targets = sorted(rng.sample(range(1, epochs - 2), 3))
    kills = 0
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for target_epoch in targets:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if (run / "last.pt").exists():
                try:
                    if load_checkpoint(run / "last.pt")["epoch"] >= target_epoch:
                        break
                except GliosegError:  # caught mid-rename: try again
                    pass
            time.sleep(0.05)
        time.sleep(rng.random() * 0.2)  # a random moment inside the next epoch
        assert proc.poll() is None, f"the run ended before kill {kills + 1} (after epoch {target_epoch})"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        cmd, env = _cli("train", "--resume", str(run), "--quiet")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.wait(timeout=900)
    assert proc.returncode == 0
    assert kills == 3
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name], "resume removes what a killed write left"
    straight, resumed = _weights(tmp_path / "straight" / "last.pt"), _weights(run / "last.pt")
    assert load_checkpoint(run / "last.pt")["epoch"] == epochs
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(e) for e in range(1, epochs + 1)]


SKEWED_CLOCK_RUN = """
import json, sys
from pathlib import Path
from glioseg.config import load_config
from glioseg.training.loop import build_trainer
from glioseg.training.distributed import cleanup

cache, run, overrides = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
trainer = build_trainer(load_config("cpu", overrides), cache, run, progress=False)
# each rank's own clock: rank 0 reads 10 s per epoch, rank 1 16 s; the limit is 30 s, so by its
# own clock rank 0 would stop after epoch 3 and rank 1 after epoch 2
seconds_per_epoch = (10.0, 16.0)[trainer.dist.rank]
trainer.clock = lambda: trainer.epoch * seconds_per_epoch
trainer.fit()
(run / f"rank{trainer.dist.rank}.json").write_text(json.dumps({"epoch": trainer.epoch}))
cleanup(trainer.dist)
"""


def test_torchrun_time_limit_stops_all_ranks_after_the_same_epoch(cohort_cache, tmp_path):
    """Ranks whose clocks disagree about the time limit follow rank 0: no hang, a complete run folder."""
    script = tmp_path / "skewed_clock_run.py"
    script.write_text(SKEWED_CLOCK_RUN)
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29519",
        str(script),
        str(cohort_cache),
        str(run),
        *TINY,
        "train.epochs=10",
        "train.time_limit_min=0.5",
        "train.val_every=5",
    ]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:  # a rank left waiting in a collective: the bug this test catches
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"ranks hung after disagreeing about the time limit:\n{output[-2000:]}")
    assert proc.returncode == 0, output[-3000:]
    epochs = [json.loads((run / f"rank{r}.json").read_text())["epoch"] for r in (0, 1)]
    assert epochs == [3, 3]  # rank 0's decision, on both ranks, mid-run (10 epochs planned)
    assert {"best.pt", "cache.txt", "config.yaml", "curves.png", "last.pt", "metrics.csv", "split.json"} <= {
        p.name for p in run.iterdir()
    }
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    header = rows[0].split(",")
    assert rows[3].split(",")[header.index("val_dice_wt")] != "", "the epoch the time limit ended was validated"
    assert [float(r.split(",")[header.index("time_s")]) for r in rows[1:]] == [10.0, 20.0, 30.0]  # rank 0's clock


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


def test_init_from_starts_from_the_checkpoints_weights_with_a_fresh_schedule(cohort_cache, tmp_path):
    """``train.init_from``: the new run's network starts as the checkpoint's (float16 weights
    included), its optimiser and epochs start fresh; a resumed run keeps its own weights."""
    first = load_config("cpu", [*TINY, "train.epochs=1"])
    train(first, cohort_cache, tmp_path / "first", progress=False)
    source = load_checkpoint(tmp_path / "first" / "last.pt")
    half = tmp_path / "half.pt"  # as benchmarks/cv/ship.py stores shipped weights
    torch.save({**source, "model": {k: v.half() for k, v in source["model"].items()}}, half)
    for start in (tmp_path / "first" / "last.pt", half):
        trainer = build_trainer(
            load_config("cpu", [*TINY, "train.epochs=2", f"train.init_from={start}"]),
            cohort_cache,
            tmp_path / f"run-{start.stem}",
            progress=False,
        )
        for name, tensor in trainer.model.state_dict().items():
            expected = source["model"][name].float()
            tolerance = 1e-3 * (1 + expected.abs().max().item()) if start == half else 0
            assert torch.allclose(tensor, expected, atol=tolerance, rtol=0), name
        assert trainer.epoch == 0 and trainer.history == []
        assert trainer.optimizer.state == {}
    fresh = build_trainer(
        load_config("cpu", [*TINY, "train.epochs=2"]), cohort_cache, tmp_path / "fresh", progress=False
    )
    assert not torch.equal(fresh.model.state_dict()["head.weight"], source["model"]["head.weight"])


def test_init_from_another_network_names_the_differences(cohort_cache, tmp_path):
    train(load_config("cpu", [*TINY, "train.epochs=1"]), cohort_cache, tmp_path / "first", progress=False)
    config = load_config(
        "cpu", [*TINY, "model.filters=[4,8,32]", "model.name=unet", f"train.init_from={tmp_path / 'first'}"]
    )
    with pytest.raises(
        GliosegError, match=r"init_from: its network differs.*name 'sa_unet' vs 'unet'.*filters"
    ) as error:
        build_trainer(config, cohort_cache, tmp_path / "run", progress=False)
    assert "first" in str(error.value)


def test_existing_run_is_not_overwritten(cohort_cache, tmp_path):
    config = load_config("cpu", [*TINY, "train.epochs=1"])
    train(config, cohort_cache, tmp_path / "run", progress=False)
    with pytest.raises(GliosegError, match="already holds a run"):
        train(config, cohort_cache, tmp_path / "run", progress=False)


def test_training_on_a_cache_of_another_recipe_stops_before_writing(cohort_cache, tmp_path, capsys):
    """Spacing, normalisation, modalities or crop other than the cache's: a one-line error, no run folder."""
    for override, difference in (
        ("preprocess.target_spacing=[2.0,2.0,2.0]", "target_spacing null in the cache, [2.0, 2.0, 2.0] expected"),
        ("preprocess.normalization=minmax", 'normalization "zscore" in the cache, "minmax" expected'),
        (
            "preprocess.modalities=[flair,t1ce,t2]",
            'modalities ["flair", "t1", "t1ce", "t2"] in the cache, ["flair", "t1ce", "t2"] expected',
        ),
        ("preprocess.margin=2", "margin 0 in the cache, 2 expected"),
    ):
        config = load_config("cpu", [*TINY, "train.epochs=1", override])
        with pytest.raises(GliosegError, match=re.escape(difference)):
            build_trainer(config, cohort_cache, tmp_path / "run", progress=False)
        assert not (tmp_path / "run").exists()

    from glioseg.cli import main

    code = main(
        [
            "train",
            "--preset",
            "cpu",
            "--cache",
            str(cohort_cache),
            "--run-dir",
            str(tmp_path / "cli"),
            "--quiet",
            *[a for o in [*TINY, "train.epochs=1", "preprocess.normalization=minmax"] for a in ("--set", o)],
        ]
    )
    assert code == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("INFO")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {cohort_cache}: all ") and "Fix: " in lines[0], lines
    assert not (tmp_path / "cli").exists()


# The paper preset on a synthetic cohort: only the sizes shrink (a 32^3 crop, 2-32 filters at the
# paper's depth of 4 poolings); every setting under test comes from paper.yaml.
PAPER_TINY = [
    "preprocess.fixed_crop=[[4,36],[4,36],[4,36]]",
    "preprocess.min_tumor_fraction=0.0",
    "model.filters=[2,4,8,16,32]",
    "train.patch_size=[32,32,32]",
    "train.threads=1",
]


@pytest.fixture(scope="module")
def paper_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_cohort")
    write_cohort(root / "raw", cases=4, shape=(40, 40, 40), layout="brats2021", seed=5)
    config = load_config("paper", PAPER_TINY)
    preprocess_dataset(discover(root / "raw").cases, config.preprocess, root / "cache", progress=False)
    return root / "cache"


def _mock_cuda(monkeypatch):
    """Make build_trainer believe it runs on CUDA: the device resolves to cuda, tensors stay on the CPU."""
    from glioseg.training import loop

    monkeypatch.setattr(loop, "resolve_device", lambda name: torch.device("cuda"))
    real_to = torch.nn.Module.to
    monkeypatch.setattr(
        torch.nn.Module,
        "to",
        lambda self, *a, **k: self if a and str(a[0]).startswith("cuda") else real_to(self, *a, **k),
    )



@pytest.fixture
def cuda_flags():
    """Restore the global CUDA backend flags that a (mocked) CUDA build_trainer sets."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = saved


@pytest.mark.parametrize("device", ["cpu", "mocked-cuda"])
def test_paper_trainer_has_no_clipping_fp32_table2_dropout_adam_dice_focal_constant(
    paper_cache, tmp_path, monkeypatch, cuda_flags, device
):
    from glioseg.losses import FocalLoss, SoftDiceLoss, WeightedSumLoss

    config = load_config("paper", [*PAPER_TINY, f"train.device={'cpu' if device == 'cpu' else 'cuda'}"])
    if device != "cpu":
        _mock_cuda(monkeypatch)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    trainer = build_trainer(config, paper_cache, tmp_path / "run", progress=False)
    assert trainer.device.type == ("cpu" if device == "cpu" else "cuda")
    # precision: no autocast, no gradient scaler; on CUDA no TF32 either
    assert trainer.autocast is False and not trainer.scaler.is_enabled()
    if device != "cpu":
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    # dropout as Table II: 0.1-0.2, block by block
    model = trainer.model
    blocks = [
        model.stem,
        *(getattr(model, f"down{i}").block for i in range(1, 5)),
        *(getattr(model, f"up{i}").block for i in range(4, 0, -1)),
    ]
    assert [b.dropout.p for b in blocks] == [0.1, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.1, 0.1]
    # optimiser and schedule: Adam 1e-4, no weight decay, constant
    assert type(trainer.optimizer) is torch.optim.Adam
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-4 and trainer.optimizer.param_groups[0]["weight_decay"] == 0
    assert all(f(e) == 1.0 for f in trainer.scheduler.lr_lambdas for e in (0, 1, 50, 99))
    # loss: Dice (all 4 classes, over the batch) + 1 x categorical focal (alpha 0.25, gamma 2)
    loss = trainer.loss_fn
    assert isinstance(loss, WeightedSumLoss) and loss.weights == [1.0, 1.0]
    dice, focal = loss.terms
    assert isinstance(dice, SoftDiceLoss) and dice.head == "classes"
    assert dice.dice.include_background and dice.dice.batch and dice.dice.softmax
    assert isinstance(focal, FocalLoss) and focal.head == "classes" and focal.gamma == 2.0
    assert focal.alpha.tolist() == [0.25] * 4
    if device != "cpu":
        return
    # clipping: one real epoch; clip_grad_norm_ is never called (and is, with the old limit, when asked)
    calls = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(
        torch.nn.utils,
        "clip_grad_norm_",
        lambda params, max_norm, **k: calls.append(max_norm) or real_clip(params, max_norm, **k),
    )
    trainer.train_epoch()
    assert calls == []
    clipped = build_trainer(
        load_config("paper", [*PAPER_TINY, "train.grad_clip=12"]), paper_cache, tmp_path / "clipped", progress=False
    )
    clipped.train_epoch()
    assert calls and set(calls) == {12.0}


def test_mocked_cuda_amp_preset_uses_autocast_and_a_scaler(paper_cache, tmp_path, monkeypatch, cuda_flags):
    """The mock is real enough to see mixed precision when a preset asks for it."""
    _mock_cuda(monkeypatch)
    config = load_config("paper", [*PAPER_TINY, "train.device=cuda", "train.amp=true", "train.tf32=true"])
    trainer = build_trainer(config, paper_cache, tmp_path / "run", progress=False)
    assert trainer.autocast is True


@pytest.mark.parametrize("head", ["regions", "classes"])
def test_validation_labels_are_the_labels_predict_writes(tmp_path, write_case, monkeypatch, head):
    """best.pt is chosen by the labels `glioseg predict` writes: same window, blending, rule and post-processing."""
    import nibabel as nib
    import numpy as np
    from monai.inferers import sliding_window_inference

    from glioseg.checkpoint import build_model
    from glioseg.data.preprocess import paste_back, preprocess_case
    from glioseg.heads import probabilities_to_labels, to_probabilities
    from glioseg.inference.predictor import Predictor
    from glioseg.labels import to_internal
    from glioseg.losses import build_loss

    config = load_config("cpu", [
        "preprocess.target_spacing=null", "model.name=unet", "model.filters=[4,8]", f"model.head={head}",
        "train.patch_size=[12,12,12]", "postprocess.min_component_size=3", "postprocess.et_threshold=2",
    ])
    torch.manual_seed(3)
    model = build_model(config).eval()
    with torch.no_grad():
        model.head.bias.copy_(torch.linspace(-0.3, 0.3, model.head.bias.numel()))  # mixed labels from random weights
    case = discover(write_case(tmp_path / "raw").parent).cases[0]
    pre = preprocess_case(case, config.preprocess)

    from glioseg.training import loop

    seen = []
    real_decode = loop.decode_crop  # validation's labels: the decode step predict uses too (glioseg.inference.decode)
    monkeypatch.setattr(loop, "decode_crop", lambda *a, **k: seen.append(real_decode(*a, **k)) or seen[-1])
    metrics = validate(model, [pre], build_loss("dice", head=head), config, torch.device("cpu"))
    (validation_labels,) = seen
    Predictor([model], config, "cpu").predict_case(case, tmp_path / "pred.nii.gz")
    written = to_internal(np.asarray(nib.load(tmp_path / "pred.nii.gz").dataobj), "brats2018")

    np.testing.assert_array_equal(paste_back(validation_labels, pre.crop), written)
    assert len(np.unique(written)) > 1
    # the Dice that picks best.pt is that of these labels
    from glioseg.metrics import dice

    reference = to_internal(np.asarray(nib.load(case.label).dataobj), "brats2018")
    assert metrics["dice_wt"] == pytest.approx(dice(written > 0, reference > 0))
    # blending logits (what validation did before) gives other labels: this test would catch it
    image = torch.from_numpy(pre.image)[None]
    with torch.no_grad():
        logits = sliding_window_inference(
            image, roi_size=(12, 12, 12), sw_batch_size=4, predictor=model, overlap=0.5, mode="gaussian"
        )
    by_logits = probabilities_to_labels(to_probabilities(torch.as_tensor(logits), head)[0].numpy(), head)
    unprocessed = probabilities_to_labels(
        Predictor([model], config, "cpu").network_probabilities(pre.image).numpy(), head
    )
    assert not np.array_equal(by_logits, unprocessed)



def test_train_fold_cli_holds_out_that_fold(cohort_cache, tmp_path, capsys):
    """`glioseg train --folds K --fold I` validates on exactly fold I of the seeded k-fold split."""
    from glioseg.cli import main
    from glioseg.data.cache import cached_case_ids
    from glioseg.data.splits import kfold_split, load_split

    sets = [a for o in [*TINY, "train.epochs=1", "train.val_every=1"] for a in ("--set", o)]
    assert (
        main(
            [
                "train",
                "--preset",
                "cpu",
                "--cache",
                str(cohort_cache),
                "--run-dir",
                str(tmp_path / "f"),
                "--quiet",
                "--fold",
                "1",
                *sets,
            ]
        )
        == 2
    )
    assert "--folds" in capsys.readouterr().err and not (tmp_path / "f").exists()
    assert (
        main(
            [
                "train",
                "--preset",
                "cpu",
                "--cache",
                str(cohort_cache),
                "--run-dir",
                str(tmp_path / "f"),
                "--quiet",
                "--folds",
                "3",
                "--fold",
                "1",
                *sets,
            ]
        )
        == 0
    )
    split = load_split(tmp_path / "f" / "split.json")
    config = load_config("cpu", TINY)
    expected = kfold_split(cached_case_ids(cohort_cache, config.preprocess), k=3, seed=config.train.split_seed)[1]
    assert split["val"] == expected["val"] and len(split["val"]) == 2
    assert not set(split["val"]) & set(split["train"])
