"""Data-parallel training: the global batches' slices, each image's augmentation, dropout and the attribution loss
alike for any number of processes; the ranks' spec and environment; two real gloo processes training the model one
process trains; and the train stage running its ranks under torchrun."""

import dataclasses
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from kfp.dsl import Dataset, Model
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from components import train_ranks
from components.common.dataset_files import DatasetImages
from components.common.distributed import ONE_PROCESS, ShardedBatches, ShardedDropout, World, shard_dropout
from components.common.errors import TrainingJobError
from components.common.model import Detector, load_checkpoint
from components.common.model_config import CHECKPOINT_FILE
from components.common.settings import ImageLimits, MlflowSettings, S3Settings, Settings
from components.common.tracking import new_run, setup_tracking
from components.common.transforms import Augmentation
from components.ingest import ingest_dataset
from components.train import NO_GENERATOR, TrainConfig, detector_loss, make_train_loader, train
from components.train_ranks import RankSpec, rank_env, torchrun_command
from tests.conftest import MakeTree
from tests.helpers.net import free_port
from tests.helpers.spawn import in_spawned_child

# What 2 processes may differ from 1 by after 8 steps of 8 images with BatchNorm held (see _held_train); measured
# 3e-7 on a weight and 9e-11 on val_loss here, 1.3e-5 and 9e-8 on another random dataset: the order of floating-point
# sums. Per-rank BatchNorm, what runs on a CPU, differs more: components/README.md, "Distributed training".
MAX_WEIGHT_DIFF = 1e-4
MAX_VAL_LOSS_DIFF = 1e-6


@pytest.mark.parametrize("size", [2, 4])
def test_the_ranks_slices_make_up_each_global_batch_in_the_same_order(size: int) -> None:
    single = ShardedBatches(50, 8, seed=3, world=ONE_PROCESS)
    ranks = [ShardedBatches(50, 8, seed=3, world=World(rank, size)) for rank in range(size)]
    for _epoch in range(2):
        batches = list(single)
        assert len(batches) == 6  # 50 // 8: the incomplete last batch is dropped
        slices = [list(rank) for rank in ranks]
        for k, batch in enumerate(batches):
            assert [key for part in slices for key in part[k]] == batch
            assert all(len(part[k]) == 8 // size for part in slices)
    first, second = list(ShardedBatches(50, 8, 3, ONE_PROCESS)), list(single)
    assert {e for batch in first for e, _ in batch} == {0}
    assert {e for batch in second for e, _ in batch} == {2}  # the sampler's third pass: epoch 2
    assert [i for batch in first for _, i in batch] != [i for batch in second for _, i in batch]  # reshuffled


@pytest.mark.parametrize(
    ("batch_size", "procs"),
    [
        (6, 4),  # 6 images do not split over 4 processes
        (8, 0),  # no process at all
    ],
)
def test_a_batch_the_processes_cannot_share_evenly_is_refused(batch_size: int, procs: int) -> None:
    with pytest.raises(ValueError, match=r"batch_size \d+ must split evenly over train_nodes x train_procs"):
        TrainConfig(batch_size=batch_size, train_procs=procs)


def _dataset(make_tree: MakeTree, tmp_path: Path, train: int = 16, val: int = 4) -> tuple[Path, str]:
    src = make_tree(
        {f"train/{c}": train for c in ("real", "ai_generated")} | {f"val/{c}": val for c in ("real", "ai_generated")}
    )
    settings = Settings(data_dir=tmp_path / "data")
    summary = ingest_dataset(str(src), tmp_path / "ds", tmp_path / "cache", settings.splits, settings.s3).summary
    return tmp_path / "ds", summary.dataset_version


CROPS = TrainConfig(image_size=32, batch_size=4, num_workers=0)  # 48 px images: random 32 px crops, augmented


def _rank_batches(location: str, rank: int, size: int, workers: int) -> list[list[np.ndarray]]:
    """Two epochs of the batches rank ``rank`` of ``size`` reads, with ``workers`` forked DataLoader workers (run by
    ``in_spawned_child``: ``tests.helpers.spawn``)."""
    images = DatasetImages(location)
    loader = make_train_loader(
        dataclasses.replace(CROPS, num_workers=workers), images, images.manifest(), ImageLimits(),
        CROPS.model_config().preprocessing, torch.Generator(), world=World(rank, size),
    )  # fmt: skip
    return [[tensor.numpy() for tensor in batch] for _ in range(2) for batch in loader]


def test_each_image_is_augmented_alike_whichever_rank_or_worker_reads_it(make_tree: MakeTree, tmp_path: Path) -> None:
    dataset, _ = _dataset(make_tree, tmp_path, train=6)
    cfg, location = CROPS, str(dataset)
    images = DatasetImages(dataset)
    manifest, prep = images.manifest(), cfg.model_config().preprocessing
    single, rank0 = _rank_batches(location, 0, 1, 0), _rank_batches(location, 0, 2, 0)
    rank1 = in_spawned_child(_rank_batches, location, 1, 2, 1)  # a DataLoader worker reads rank 1's
    assert len(single) == len(rank0) == len(rank1) == 6
    for whole, first, second in zip(single, rank0, rank1, strict=True):
        for tensor, part0, part1 in zip(whole, first, second, strict=True):
            assert np.array_equal(tensor, np.concatenate([part0, part1]))
    rows = make_train_loader(cfg, images, manifest, ImageLimits(), prep, torch.Generator()).dataset
    assert torch.equal(rows[(0, 5)][0], rows[(0, 5)][0])  # an image's crop: from (seed, epoch, index) alone ...
    assert not torch.equal(rows[(0, 5)][0], rows[(1, 5)][0])  # ... another one next epoch


def test_dropout_drops_the_same_units_of_the_same_images_whatever_the_world() -> None:
    inputs = torch.randn(8, 16)
    whole = ShardedDropout(0.3, ONE_PROCESS, seed=5)(inputs)
    halves = [ShardedDropout(0.3, World(rank, 2), seed=5)(inputs[4 * rank : 4 * rank + 4]) for rank in range(2)]
    assert torch.equal(whole, torch.cat(halves))
    assert 0 < float((whole == 0).float().mean()) < 0.6
    model = Detector(TrainConfig(image_size=32).model_config())
    state = model.state_dict()
    shard_dropout(model, World(1, 2), seed=5)
    assert isinstance(model.head[3], ShardedDropout)
    assert model.head[3].p == 0.3
    assert model.state_dict().keys() == state.keys()  # checkpoints unchanged


def test_the_ranks_attribution_losses_average_to_the_global_batchs() -> None:
    torch.manual_seed(0)
    logits, generator_logits = torch.randn(8, requires_grad=True), torch.randn(8, 3, requires_grad=True)
    targets = torch.tensor([1.0, 1, 1, 0, 1, 0, 0, 0])
    classes = torch.tensor([0, 2, 1, NO_GENERATOR, NO_GENERATOR, NO_GENERATOR, NO_GENERATOR, 1])  # 3 named + 1
    detector_loss(logits, generator_logits, targets, classes).backward()
    expected = (logits.grad.clone(), generator_logits.grad.clone())  # type: ignore[union-attr]
    logits.grad, generator_logits.grad = None, None

    known = float((classes != NO_GENERATOR).sum()) / 2  # the global count over the 2 ranks
    halves = [
        detector_loss(logits[s], generator_logits[s], targets[s], classes[s], known) for s in (slice(0, 4), slice(4, 8))
    ]
    (sum(halves) / 2).backward()  # what DistributedDataParallel's mean of the ranks' gradients computes
    assert torch.allclose(logits.grad, expected[0], atol=1e-7)  # type: ignore[arg-type]
    assert torch.allclose(generator_logits.grad, expected[1], atol=1e-7)  # type: ignore[arg-type]
    own_counts = sum(
        detector_loss(logits[s], generator_logits[s], targets[s], classes[s]) for s in (slice(0, 4), slice(4, 8))
    )
    assert not torch.allclose(own_counts / 2, sum(halves) / 2)  # each slice's own mean weighs images unequally


def test_the_ranks_spec_command_and_environment() -> None:
    cfg = TrainConfig(batch_size=8, train_procs=2, augmentation=Augmentation.off())
    spec = RankSpec(cfg, "/data/dataset", "/out/model", "abc123", "v1")
    assert RankSpec.from_json(spec.to_json()) == spec
    command = torchrun_command(spec)
    assert command[:3] == ["torchrun", "--standalone", "--nproc-per-node=2"]
    assert command[3:6] == ["-m", "components.train_ranks", "--spec"]
    assert RankSpec.from_json(command[6]) == spec
    on_cluster = torchrun_command(dataclasses.replace(spec, config=dataclasses.replace(cfg, train_nodes=4)))
    assert on_cluster[:3] == ["torchrun", "--nnodes=4", "--nproc-per-node=2"]  # the rendezvous: the job's PET_*


def test_the_ranks_environment_carries_the_settings_they_read_but_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        images=ImageLimits(formats=("PNG",), max_bytes=1000),
        mlflow=MlflowSettings(tracking_uri="http://mlflow:5000", experiment="x"),
        s3=S3Settings(endpoint="minio:9000", access_key="key", secret_key="secret", secure=True),
    )
    env = rank_env(settings)
    assert not [name for name in env if "KEY" in name]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    read = Settings()
    assert (read.images, read.mlflow, read.logging) == (settings.images, settings.mlflow, settings.logging)
    assert read.s3 == settings.s3.model_copy(update={"access_key": None, "secret_key": None})


def _held_train(self: _BatchNorm, mode: bool = True) -> _BatchNorm:
    """BatchNorm's ``train()`` as the stand-in for SyncBatchNorm (torch runs it on GPUs only): the layer stays in eval
    mode (running statistics), so splitting a batch over ranks changes nothing it computes."""
    return nn.Module.train(self, False)


def _rank(rank: int, spec: str, port: int) -> None:
    """One of 2 ranks as torchrun starts it (its environment, one thread), BatchNorm held."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ["WORLD_SIZE"] = "2"
    torch.set_num_threads(1)
    _BatchNorm.train = _held_train  # type: ignore[method-assign]
    train_ranks.main(["--spec", spec])


def _tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's MLflow (for its child processes too); the experiment's id."""
    monkeypatch.setenv("APD_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("APD_MLFLOW__ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("APD_LOGGING__LEVEL", "WARNING")
    return setup_tracking(Settings().mlflow)


@pytest.mark.slow
def test_two_gloo_processes_train_the_model_one_process_trains(
    make_tree: MakeTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = _tracking(tmp_path, monkeypatch)
    dataset, version = _dataset(make_tree, tmp_path)
    cfg = TrainConfig(epochs=2, batch_size=8, image_size=32, max_crops=4, num_workers=0)  # 8 steps of 8 images
    one = RankSpec(cfg, str(dataset), str(tmp_path / "one"), new_run(experiment), version)
    two = RankSpec(
        dataclasses.replace(cfg, train_procs=2), str(dataset), str(tmp_path / "two"), new_run(experiment), version
    )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank
    monkeypatch.setattr(_BatchNorm, "train", _held_train)
    try:
        one.train(Settings())
    finally:
        torch.set_num_threads(threads)
    torch.multiprocessing.spawn(_rank, args=(two.to_json(), free_port()), nprocs=2)

    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(two.run_id, "val_loss")] == [1, 2]  # rank 0 alone logged
    assert client.get_run(two.run_id).data.params["train_procs"] == "2"
    assert len(client.search_runs([experiment])) == 2
    (single, _), (double, _) = (load_checkpoint(Path(s.out_dir) / CHECKPOINT_FILE) for s in (one, two))
    weights = max(
        float((a - b).abs().max())
        for a, b in zip(single.state_dict().values(), double.state_dict().values(), strict=True)
    )
    losses = [client.get_metric_history(s.run_id, "val_loss")[-1].value for s in (one, two)]
    with capsys.disabled():
        print(f"\n1 vs 2 processes: max |weight diff| {weights:.1e}, |val_loss diff| {abs(losses[0] - losses[1]):.1e}")
    assert weights <= MAX_WEIGHT_DIFF
    assert abs(losses[0] - losses[1]) <= MAX_VAL_LOSS_DIFF


@pytest.mark.slow
def test_the_train_stage_runs_two_processes_under_torchrun(
    make_tree: MakeTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = _tracking(tmp_path, monkeypatch)
    dataset, version = _dataset(make_tree, tmp_path)
    out = Model(uri=str(tmp_path / "model"))
    run_id = train.python_func(
        dataset=Dataset(uri=str(dataset), metadata={"dataset_version": version}),
        model=out,
        epochs=2,
        batch_size=8,
        image_size=32,
        max_crops=4,
        num_workers=0,
        train_procs=2,
    )
    assert out.metadata["mlflow_run_id"] == run_id
    client = mlflow.MlflowClient()
    [run] = client.search_runs([experiment])
    assert (run.info.run_id, run.info.status) == (run_id, "FINISHED")
    assert (run.data.params["train_procs"], run.data.params["train_images"]) == ("2", "32")
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [1, 2]  # rank 0 alone logged
    assert [a.path for a in client.list_artifacts(run_id, "checkpoint")] == ["checkpoint/model.pt"]
    _, extra = load_checkpoint(tmp_path / "model" / CHECKPOINT_FILE)  # strict: no DDP "module." prefixes
    assert extra["train_config"]["train_procs"] == 2

    with pytest.raises(TrainingJobError, match=r"torchrun \(2 training processes on this machine\) exited"):
        train.python_func(
            dataset=Dataset(uri=str(tmp_path / "missing"), metadata={"dataset_version": version}),
            model=Model(uri=str(tmp_path / "nothing")),
            train_procs=2,
        )
    failed = [r for r in client.search_runs([experiment]) if r.info.run_id != run_id]
    assert [r.info.status for r in failed] == ["FAILED"]
