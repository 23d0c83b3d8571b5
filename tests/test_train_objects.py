"""The trainer takes a model object and an objective: a hand-edited spec trains and its run reloads
from files alone, an objective of one's own plugs in, distillation's KL term, and the caller's
thread count survives a fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import smallnets
from smallnets.arch.spec import ArchSpec
from smallnets.rundir import RunDir, find_run
from smallnets.training import RunConfig, Trainer
from smallnets.training.objective import Batch, CrossEntropy, Distillation
from test_spec import _custom_v2_dict
from test_train import CLASSES, make_image_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes", per_class=8)


ZOO = {"name": "mobilenet_v1", "width_mult": 0.25, "cifar": True}


def config(images: Path, out: Path, *, model: dict = ZOO, **train) -> RunConfig:
    """A tiny run; ``model={}`` for a run given its model as an object."""
    return RunConfig.from_dict({
        "model": dict(model),
        "data": {"path": str(images), "batch_size": 8, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(out / "cache")},
        "train": {"epochs": 1, "lr": 0.05, "precision": "fp32", "progress": False, "out": str(out), **train},
    })  # fmt: skip


def custom_model(num_classes: int = 4) -> torch.nn.Module:
    """A MobileNetV2 with widths no knob gives (test_spec's hand edit), freshly initialised with seed 0."""
    spec = ArchSpec.from_dict({**_custom_v2_dict(), "num_classes": num_classes})
    torch.manual_seed(0)
    return smallnets.model_from_spec(spec)


def _outputs(model: torch.nn.Module, probe: torch.Tensor) -> torch.Tensor:
    model = model.eval().to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        return model(probe)


def test_a_model_from_a_hand_edited_spec_trains_and_its_run_reloads_from_files_alone(images, tmp_path):
    model = custom_model()
    spec = model.spec
    result = smallnets.train(model, images, config={"train": {"name": "custom"}}, epochs=1, lr=0.05, precision="fp32", progress=False,
                             out=str(tmp_path), batch_size=8, val_fraction=0.25, pipeline="tensor", cache_dir=str(tmp_path / "cache"))  # fmt: skip
    run = RunDir(result.run_dir)
    assert result.status == "finished" and run.best.is_file() and run.path.name == "custom"
    saved = json.loads(run.config.read_text())
    assert saved["model"] == {"name": "", "spec": spec.to_dict()}  # the architecture as a value, no zoo entry
    assert smallnets.read_sidecar(run.best)["spec"] == spec.to_dict() and smallnets.read_sidecar(run.best)["model"] is None
    loaded = smallnets.load_weights(run.path)  # best.safetensors and its sidecar: nothing else
    assert loaded.spec == spec and loaded.smallnets_meta["classes"] == sorted(CLASSES)
    probe = torch.randn(3, 3, 16, 16)
    assert torch.equal(_outputs(loaded, probe), _outputs(model, probe))  # the object given was trained, in place
    # the run reads back as every reader sees it: eval finds its config and split
    past = find_run(run.best, run.path)
    assert past.config.model.spec == spec.to_dict() and past.split["method"]
    assert smallnets.evaluate_weights(run.path).details["split_matches_run"] is True


def test_a_model_object_run_resumes_from_its_recorded_spec(images, tmp_path):
    straight = Trainer(config(images, tmp_path, model={}, name="straight", epochs=2), model=custom_model()).fit()
    first = Trainer(config(images, tmp_path, model={}, name="split", epochs=2), model=custom_model())
    paused = first.fit(max_steps=first.steps_per_epoch + 1)
    assert paused.status == "paused"
    resumed = Trainer.resume(paused.run_dir)  # no model passed: config.json's spec rebuilds it
    assert resumed.model.spec == first.model.spec and resumed.model is not first.model
    assert resumed.fit().status == "finished"
    probe = torch.randn(2, 3, 16, 16)
    a, b = smallnets.load_weights(RunDir(straight.run_dir).last), smallnets.load_weights(RunDir(resumed.run_dir).last)
    assert torch.equal(_outputs(a, probe), _outputs(b, probe))


def test_a_model_that_does_not_fit_the_data_is_refused_and_nothing_is_written(images, tmp_path):
    with pytest.raises(ValueError, match=r"model must have one output per class of the data: its classifier gives 10 outputs, but .* has 4 "
                                         r"classes \(circle, dots, square, stripes\); build it with num_classes=4"):  # fmt: skip
        Trainer(config(images, tmp_path, model={}, name="wrong"), model=custom_model(num_classes=10))
    assert not (tmp_path / "wrong").exists()
    with pytest.raises(ValueError, match="config.model must be left empty when a model object is given"):
        Trainer(config(images, tmp_path, model={"name": "mobilenet_v1"}), model=custom_model())
    with pytest.raises(TypeError, match="model must be a torch.nn.Module built by smallnets"):
        Trainer(config(images, tmp_path, model={}), model="mobilenet_v1")
    with pytest.raises(ValueError, match="model must be built by smallnets"):
        Trainer(config(images, tmp_path, model={}), model=torch.nn.Linear(3, 4))


class PenalisedCrossEntropy:
    """Cross-entropy plus a constant, recording what the trainer hands it: an objective of one's own."""

    def __init__(self, penalty: float):
        self.penalty = penalty
        self.calls: list[tuple[int, int, tuple, int]] = []

    def __call__(self, output: torch.Tensor, targets: torch.Tensor, batch: Batch) -> torch.Tensor:
        self.calls.append((batch.step, batch.epoch, tuple(output.shape), torch.get_num_threads()))
        assert torch.equal(targets, batch.labels) and batch.inputs.shape[0] == output.shape[0]
        return F.cross_entropy(output, targets) + self.penalty


def test_an_objective_of_ones_own_plugs_in_and_its_loss_is_what_the_run_records(images, tmp_path):
    objective = PenalisedCrossEntropy(100.0)
    trainer = Trainer(config(images, tmp_path, name="own", epochs=2), objective=objective)
    result = trainer.fit()
    steps = trainer.steps_per_epoch
    assert [c[:2] for c in objective.calls] == [(s, s // steps) for s in range(2 * steps)]
    assert all(c[2] == (8, 4) for c in objective.calls)
    records = [json.loads(line) for line in RunDir(result.run_dir).metrics_jsonl.read_text().splitlines()]
    assert all(100.0 < r["train_loss"] < 110.0 for r in records)  # the penalty is in the loss the run logs
    assert "train_loss" in RunDir(result.run_dir).metrics_csv.read_text().splitlines()[0]
    resolved = json.loads(RunDir(result.run_dir).config.read_text())["resolved"]
    assert resolved["objective"] == {"name": "PenalisedCrossEntropy"}
    # a resume must be given the objective again, never silently falls back to cross-entropy
    with pytest.raises(ValueError, match="the run was trained with PenalisedCrossEntropy, got CrossEntropy; pass it again"):
        Trainer.resume(result.run_dir, epochs=3)
    again = Trainer.resume(result.run_dir, epochs=3, objective=objective)
    assert again.fit().epochs_done == 3 and len(objective.calls) == 3 * steps


def test_the_default_objective_is_the_trainers_old_loss():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    ce = CrossEntropy(label_smoothing=0.1)
    assert torch.equal(ce(logits, y), F.cross_entropy(logits, y, label_smoothing=0.1))
    soft = F.one_hot(y, 5).float() * 0.7 + F.one_hot(y.roll(1), 5).float() * 0.3
    smoothed = soft * 0.9 + 0.1 / 5
    assert torch.allclose(ce(logits, soft), -(smoothed * logits.log_softmax(1)).sum(1).mean())
    with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\), got 1.5"):
        CrossEntropy(1.5)


def test_distillation_is_the_temperature_scaled_kl_to_the_teachers_logits():
    torch.manual_seed(0)
    teacher = torch.nn.Linear(8, 5)
    x, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    batch = Batch(inputs=x, labels=y, soft_targets=None, epoch=0, step=0)
    student = torch.randn(6, 5, requires_grad=True)
    t, alpha = 3.0, 0.7
    loss = Distillation(teacher, temperature=t, alpha=alpha)(student, y, batch)
    with torch.no_grad():
        p_t = (teacher(x) / t).softmax(1)
    kl = (p_t * (p_t.log() - (student / t).log_softmax(1))).sum(1).mean() * t * t  # written out: sum p_t log(p_t / p_s)
    assert torch.allclose(loss, alpha * kl + (1 - alpha) * F.cross_entropy(student, y), atol=1e-6)
    # the teacher is not trained: no gradient reaches it
    loss.backward()
    assert teacher.weight.grad is None and student.grad is not None
    # minimising the KL term alone makes the student's distribution the teacher's
    pure = Distillation(teacher, temperature=t, alpha=1.0)
    free = torch.zeros(6, 5, requires_grad=True)
    opt = torch.optim.Adam([free], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        pure(free, y, batch).backward()
        opt.step()
    assert torch.allclose((free / t).softmax(1), p_t, atol=1e-3)
    with pytest.raises(ValueError, match="temperature must be a number > 0, got 0"):
        Distillation(teacher, temperature=0)


def test_distillation_plugs_into_the_trainer(images, tmp_path):
    torch.manual_seed(1)
    teacher = smallnets.create_model("mobilenet_v1", num_classes=4, width_mult=0.25, cifar=True)
    objective = Distillation(teacher, temperature=2.0, alpha=0.5)
    trainer = Trainer(config(images, tmp_path, name="distilled"), objective=objective)
    result = trainer.fit()
    assert result.status == "finished" and result.last["train_loss"] > 0
    assert json.loads(RunDir(result.run_dir).config.read_text())["resolved"]["objective"] == {
        "name": "Distillation", "temperature": 2.0, "alpha": 0.5, "teacher": "mobilenet_v1", "base": {"name": "CrossEntropy", "label_smoothing": 0.0}}  # fmt: skip


class Explodes:
    def __init__(self):
        self.threads_seen: list[int] = []

    def __call__(self, output, targets, batch):
        self.threads_seen.append(torch.get_num_threads())
        if batch.step == 1:
            raise RuntimeError("objective failed")
        return F.cross_entropy(output, targets)


def test_the_callers_thread_count_is_restored_after_fit_and_after_an_error(images, tmp_path):
    before = torch.get_num_threads()
    caller = 3 if before != 3 else 2
    torch.set_num_threads(caller)
    try:
        objective = PenalisedCrossEntropy(0.0)
        trainer = Trainer(config(images, tmp_path, name="threads", threads=1), objective=objective)
        assert torch.get_num_threads() == caller  # construction gives the count back too
        trainer.fit()
        assert torch.get_num_threads() == caller
        assert {c[3] for c in objective.calls} == {1}  # the run's own count while it trained
        assert json.loads(RunDir(trainer.run_dir).run_info.read_text())["environment"]["threads"] == 1
        exploding = Explodes()
        failing = Trainer(config(images, tmp_path, name="fails", threads=1), objective=exploding)
        with pytest.raises(RuntimeError, match="objective failed"):
            failing.fit()
        assert exploding.threads_seen == [1, 1] and torch.get_num_threads() == caller
        assert not RunDir(failing.run_dir).lock_file.exists()  # the claim ends with the failed fit too
    finally:
        torch.set_num_threads(before)
