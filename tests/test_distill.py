"""Knowledge distillation from a run or weights file (--teacher, kd_weight, kd_temperature) and the
trainer's step hooks (start, after_backward, after_step, describe)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

import smallnets
from smallnets.checkpoint import load_state
from smallnets.cli import main
from smallnets.data import build_data
from smallnets.rundir import RunDir
from smallnets.training import RunConfig, TrainConfig, Trainer
from smallnets.training.objective import CrossEntropy, Distillation
from smallnets.training.teacher import Renormalised
from test_train import CLASSES, make_image_folder

STUDENT = {"name": "mobilenet_v1", "width_mult": 0.25, "cifar": True}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes", per_class=8)  # 24 training images, 8 validation


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def config(images: Path, out: Path, cache: Path, *, batch_size: int = 8, **train) -> RunConfig:
    return RunConfig.from_dict({
        "model": dict(STUDENT),
        "data": {"path": str(images), "batch_size": batch_size, "val_fraction": 0.25, "pipeline": "tensor", "cache_dir": str(cache)},
        "train": {"epochs": 1, "lr": 0.05, "precision": "fp32", "progress": False, "out": str(out), **train},
    })  # fmt: skip


@pytest.fixture(scope="module")
def teacher_run(images, cache, tmp_path_factory) -> Path:
    """A trained teacher: a wider MobileNetV1 on the same data (so the same classes and statistics)."""
    out = tmp_path_factory.mktemp("teachers")
    cfg = RunConfig.from_dict({**config(images, out, cache, name="teacher").to_dict(), "model": {**STUDENT, "width_mult": 0.5}})
    return Trainer(cfg).fit().run_dir


def _weights_file(path: Path, *, classes, image_size: int = 16, mean=None, std=None, num_classes: int | None = None) -> Path:
    """A teacher weights file with the sidecar facts a test needs."""
    torch.manual_seed(0)
    model = smallnets.create_model("mobilenet_v1", num_classes=num_classes or len(classes), width_mult=0.25, cifar=True)
    prep = {"pipeline": "tensor", "image_size": image_size, "resize": image_size, "crop": image_size, "interpolation": "bilinear",
            "mean": mean or [0.5, 0.5, 0.5], "std": std or [0.25, 0.25, 0.25]}  # fmt: skip
    smallnets.save_weights(model, path, classes=list(classes) if classes else None, preprocessing=prep)
    return path


# --- step hooks -------------------------------------------------------------------------------------


class Recorder:
    """Records every call with what the model looked like then."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.models: set[int] = set()
        self.weights: list[torch.Tensor] = []  # the first conv's kernel at each call
        self.grad_norms: list[float] = []

    def _kernel(self, model) -> torch.Tensor:
        return next(model.parameters()).detach().clone()

    def start(self, model, total_steps):
        self.models.add(id(model))
        self.calls.append(("start", total_steps))
        self.weights.append(self._kernel(model))

    def after_backward(self, model, step):
        self.models.add(id(model))
        self.calls.append(("after_backward", step))
        self.weights.append(self._kernel(model))
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    def after_step(self, model, step):
        self.models.add(id(model))
        self.calls.append(("after_step", step))
        self.weights.append(self._kernel(model))

    def describe(self):
        return {"calls_so_far": len(self.calls)}


def test_hooks_are_called_in_order_with_global_steps_and_see_the_update(images, cache, tmp_path):
    hook = Recorder()
    trainer = Trainer(config(images, tmp_path, cache, name="hooked", epochs=2, grad_clip=1e-3), hooks=[hook])
    assert trainer.steps_per_epoch == 3
    paused = trainer.fit(max_steps=4)
    assert paused.status == "paused"
    assert hook.calls == [("start", 6)] + [(kind, s) for s in range(4) for kind in ("after_backward", "after_step")]
    assert hook.models == {id(trainer.model)}  # the module itself, never a wrapper
    w = hook.weights
    for i in range(4):  # after_backward sees the weights before the update, after_step the updated ones
        before, after = w[1 + 2 * i], w[2 + 2 * i]
        assert torch.equal(before, w[2 * i]) and not torch.equal(before, after)
    assert all(norm <= 1e-3 * (1 + 1e-4) for norm in hook.grad_norms)  # after clipping to grad_clip
    resolved = json.loads(RunDir(paused.run_dir).config.read_text())["resolved"]
    assert resolved["hooks"] == [{"name": "Recorder", "calls_so_far": 0}]  # described when the run was created
    assert json.loads(RunDir(paused.run_dir).run_info.read_text())["hooks"][0]["name"] == "Recorder"

    # a resume needs its hooks again; they start again with the same total and go on counting
    with pytest.raises(ValueError, match=r"hooks must be the run's own to resume it: the run was trained with \[Recorder\], got \[\]; pass them again"):
        Trainer.resume(paused.run_dir)
    again = Recorder()
    resumed = Trainer.resume(paused.run_dir, hooks=(again,))
    assert resumed.fit().status == "finished"
    assert again.calls == [("start", 6)] + [(kind, s) for s in (4, 5) for kind in ("after_backward", "after_step")]
    assert torch.equal(again.weights[0], w[-1])  # start sees the resumed weights: those after the paused run's last step


class ZeroFirstFilter:
    """A pruning step: the first conv's first filter is zero after every update."""

    def after_step(self, model, step):
        with torch.no_grad():
            next(model.parameters())[0].zero_()


def test_a_hook_that_zeroes_a_parameter_after_each_step_leaves_it_zero_in_the_saved_weights(images, cache, tmp_path):
    result = smallnets.train("mobilenet_v1", images, hooks=[ZeroFirstFilter()], width_mult=0.25, cifar=True, epochs=2, lr=0.05,
                             momentum=0.9, precision="fp32", progress=False, out=str(tmp_path), name="pruned", batch_size=8,
                             val_fraction=0.25, pipeline="tensor", cache_dir=str(cache))  # fmt: skip
    run = RunDir(result.run_dir)
    for path in (run.last, run.best):
        kernel = next(smallnets.load_weights(path).parameters())
        assert torch.count_nonzero(kernel[0]) == 0 and torch.count_nonzero(kernel[1:]) > 0
    # momentum would move the filter again had the hook run before the update
    assert torch.count_nonzero(next(iter(load_state(run.state)["model"].values()))[0]) == 0


def test_hooks_are_checked():
    with pytest.raises(TypeError, match=r"hooks\[0\] must have at least one of the methods start, after_backward, after_step, describe, got a int"):
        from smallnets.training.hooks import Hooks

        Hooks([3])
    with pytest.raises(TypeError, match="hooks must be a sequence of hook objects"):
        Hooks(ZeroFirstFilter())


# --- distillation -----------------------------------------------------------------------------------


def test_distillation_through_the_cli_trains_records_its_teacher_and_resumes(images, cache, teacher_run, tmp_path, capsys):
    common = ["--data", str(images), "--batch-size", "8", "--val-fraction", "0.25", "--pipeline", "tensor", "--cache-dir", str(cache),
              "--lr", "0.05", "--precision", "fp32", "--out", str(tmp_path), "--width-mult", "0.25", "--cifar"]  # fmt: skip
    rc = main(["train", "mobilenet_v1", *common, "--epochs", "1", "--name", "student", "--teacher", str(teacher_run),
               "--kd-weight", "0.7", "--kd-temperature", "2"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"distilling from {teacher_run} (mobilenet_v1), T 2, KL weight 0.7" in err
    run = RunDir(tmp_path / "student")
    saved = json.loads(run.config.read_text())
    assert (saved["train"]["teacher"], saved["train"]["kd_weight"], saved["train"]["kd_temperature"]) == (str(teacher_run), 0.7, 2.0)
    assert saved["resolved"]["objective"] == {"name": "Distillation", "temperature": 2.0, "alpha": 0.7, "teacher": "mobilenet_v1",
                                              "base": {"name": "CrossEntropy", "label_smoothing": 0.0}}  # fmt: skip
    teacher = saved["resolved"]["teacher"]
    assert teacher["file"] == str((teacher_run / "best.safetensors").resolve()) and teacher["renormalised"] is None
    assert teacher["sha256"] == smallnets.read_sidecar(teacher_run)["sha256"]
    # the student's files hold the student alone
    student_keys = set(smallnets.create_model("mobilenet_v1", num_classes=4, width_mult=0.25, cifar=True).state_dict())
    assert set(load_state(run.state)["model"]) == student_keys
    assert smallnets.read_sidecar(run.last)["params"] == sum(p.numel() for p in smallnets.load_weights(run.last).parameters())
    # --resume rebuilds the teacher from config.json
    rc = main(["train", "--resume", str(run.path), "--epochs", "2", "--progress", "false"])
    assert rc == 0, capsys.readouterr().err
    assert [json.loads(line)["epoch"] for line in run.metrics_jsonl.read_text().splitlines()] == [1, 2]
    assert json.loads(run.run_info.read_text())["status"] == "finished"


def test_a_paused_distillation_run_resumes_to_the_uninterrupted_weights(images, cache, teacher_run, tmp_path):
    kd = {"teacher": str(teacher_run), "kd_weight": 0.6, "kd_temperature": 3.0, "epochs": 2}
    straight = Trainer(config(images, tmp_path, cache, name="straight", **kd)).fit()
    paused = Trainer(config(images, tmp_path, cache, name="split", **kd)).fit(max_steps=4)
    resumed = Trainer.resume(paused.run_dir)
    assert isinstance(resumed.objective, Distillation) and resumed.objective.alpha == 0.6 and resumed.objective.temperature == 3.0
    resumed.fit()
    a, b = (load_state(RunDir(r.run_dir).state)["model"] for r in (straight, paused))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_refuses_a_teacher_whose_weights_changed(images, cache, teacher_run, tmp_path):
    teacher = tmp_path / "teacher.safetensors"
    model = smallnets.load_weights(teacher_run)
    meta = model.smallnets_meta
    smallnets.save_weights(model, teacher, classes=meta["classes"], preprocessing=meta["preprocessing"])
    paused = Trainer(config(images, tmp_path, cache, name="changing", epochs=2, teacher=str(teacher))).fit(max_steps=1)
    with torch.no_grad():
        next(model.parameters()).mul_(2)
    smallnets.save_weights(model, teacher, classes=meta["classes"], preprocessing=meta["preprocessing"])
    with pytest.raises(ValueError, match=r"teacher must be the weights the run started with to resume it: .*teacher.safetensors has sha256 [0-9a-f]{64}, "
                                         r"config.json records [0-9a-f]{64}"):  # fmt: skip
        Trainer.resume(paused.run_dir)
    assert not RunDir(paused.run_dir).lock_file.exists() and RunDir(paused.run_dir).state.is_file()  # given up, kept


class Spy:
    """Hands the trainer's objective through, keeping what it was called with and what it returned."""

    def __init__(self, objective):
        self.objective, self.seen = objective, []

    def __call__(self, output, targets, batch):
        loss = self.objective(output, targets, batch)
        self.seen.append((output.detach().clone(), targets.clone(), batch.inputs.detach().clone(), float(loss.detach())))
        return loss


def test_with_kd_weight_one_the_logged_loss_is_the_kl_to_the_teacher_alone(images, cache, teacher_run, tmp_path):
    t = 2.0
    trainer = Trainer(config(images, tmp_path, cache, name="kl", batch_size=24, teacher=str(teacher_run), kd_weight=1.0, kd_temperature=t))
    assert trainer.steps_per_epoch == 1  # the epoch's train loss is this one batch's
    spy = trainer.objective = Spy(trainer.objective)
    result = trainer.fit()
    (student, labels, inputs, loss), = spy.seen
    teacher = smallnets.load_weights(teacher_run).eval()  # the teacher as its files hold it, in eval mode
    with torch.no_grad():
        p_t = (teacher(inputs) / t).softmax(1)
    kl = float((p_t * (p_t.log() - (student / t).log_softmax(1))).sum(1).mean()) * t * t  # written out: T^2 sum p_t log(p_t / p_s)
    # float32 sums of terms near log(10) that nearly cancel: the absolute error is a few ulps of those terms times T^2 (CI saw 2e-7)
    close = dict(rel_tol=1e-5, abs_tol=2e-6)
    assert math.isclose(result.last["train_loss"], kl, **close) and math.isclose(loss, kl, **close)
    ce = float(torch.nn.functional.cross_entropy(student, labels))
    assert abs(kl - (0.5 * kl + 0.5 * ce)) > 1e-2  # a label term in the loss would have shown


def test_a_teacher_with_other_classes_or_input_size_is_refused_before_training(images, cache, tmp_path):
    cases = [
        (_weights_file(tmp_path / "three.safetensors", classes=("a", "b", "c")),
         r"teacher must have the data's classes in the data's order: .*three.safetensors has 3 classes \(a, b, c\), "
         r"but .* has 4 classes \(circle, dots, square, stripes\)"),
        (_weights_file(tmp_path / "shuffled.safetensors", classes=("dots", "circle", "square", "stripes")),
         r"teacher must have the data's classes in the data's order: .*shuffled.safetensors has the same classes in another order"),
        (_weights_file(tmp_path / "unnamed.safetensors", classes=None, num_classes=10),
         r"teacher must have one output per class of the data: .*unnamed.safetensors gives 10 outputs \(its sidecar names no classes\)"),
        (_weights_file(tmp_path / "big.safetensors", classes=sorted(CLASSES), image_size=32),
         r"teacher must take the student's input size: .*big.safetensors was trained at 32 px \(its sidecar's preprocessing\), "
         r"the student trains at 16 px"),
    ]  # fmt: skip
    for i, (path, message) in enumerate(cases):
        with pytest.raises(ValueError, match=message):
            Trainer(config(images, tmp_path / "runs", cache, name=f"refused{i}", teacher=str(path)))
        assert not (tmp_path / "runs" / f"refused{i}").exists()  # nothing written
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not weights")
    for path in (tmp_path / "missing", tmp_path / "empty", tmp_path / "notes.txt"):
        with pytest.raises(ValueError, match=f"teacher must be a run directory .* or a smallnets .safetensors weights file with its .json sidecar, got '{path}'"):
            Trainer(config(images, tmp_path / "runs", cache, name="bad", teacher=str(path)))
    assert not (tmp_path / "runs").exists()
    # unnamed classes of the right count pass
    ok = Trainer(config(images, tmp_path / "runs", cache, name="ok", teacher=str(_weights_file(tmp_path / "four.safetensors", classes=None, num_classes=4))))
    assert isinstance(ok.objective, Distillation)
    with pytest.raises(ValueError, match="teacher must not be given with an objective"):
        Trainer(config(images, tmp_path / "runs", cache, name="both", teacher="runs/big"), objective=CrossEntropy())


def test_bad_kd_settings_are_refused_naming_the_argument_and_value(images, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"kd_weight must be in \[0, 1\], got 1.5"):
        TrainConfig(teacher="runs/big", kd_weight=1.5)
    with pytest.raises(ValueError, match="kd_temperature must be > 0, got -1.0"):
        TrainConfig(teacher="runs/big", kd_temperature=-1)
    with pytest.raises(ValueError, match="kd_temperature must be a finite number, got inf"):
        RunConfig.from_dict({"model": STUDENT, "data": {"path": "x"}, "train": {"teacher": "t", "kd_temperature": float("inf")}})
    with pytest.raises(ValueError, match="kd_weight and kd_temperature apply to distillation: give teacher=RUN_OR_WEIGHTS too"):
        TrainConfig(kd_weight=0.9)
    with pytest.raises(ValueError, match="kd_weight must be a number, got 'high'"):
        TrainConfig(teacher="t", kd_weight="high")
    for flags, message in ((["--kd-weight", "1.5"], "kd_weight must be in [0, 1], got 1.5"),
                           (["--kd-temperature", "0"], "kd_temperature must be > 0, got 0.0")):  # fmt: skip
        rc = main(["train", "mobilenet_v1", "--data", str(images), "--out", str(tmp_path), "--teacher", "runs/big", *flags])
        assert rc == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    with pytest.raises(TypeError, match="teacher must be a run directory or a .safetensors weights file .* got a torch module"):
        smallnets.train("mobilenet_v1", images, teacher=torch.nn.Linear(2, 2))


def test_the_renormalised_teacher_sees_its_own_normalisation_of_the_same_pixels():
    raw = torch.rand(2, 3, 5, 5)  # pixels in [0, 1]
    ms, ss, mt, st = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3], [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    seen = []
    inner = torch.nn.Identity()
    inner.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    wrapped = Renormalised(inner, student_mean=ms, student_std=ss, teacher_mean=mt, teacher_std=st)
    channel = lambda v: torch.tensor(v).reshape(1, 3, 1, 1)  # noqa: E731
    wrapped((raw - channel(ms)) / channel(ss))
    assert torch.allclose(seen[0], (raw - channel(mt)) / channel(st), rtol=0, atol=1e-6)
    cl = ((raw - channel(ms)) / channel(ss)).contiguous(memory_format=torch.channels_last)
    assert wrapped.renormalise(cl).is_contiguous(memory_format=torch.channels_last)  # the run's memory format is kept


def test_a_teacher_trained_with_other_statistics_sees_the_batch_as_its_own_pipeline_gives_it(images, cache, tmp_path):
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet's: not this data's
    path = _weights_file(tmp_path / "imagenet_stats.safetensors", classes=sorted(CLASSES), mean=mean, std=std)
    cfg = config(images, tmp_path, cache, name="renorm", teacher=str(path))
    trainer = Trainer(cfg)
    wrapped = trainer.objective.teacher
    assert isinstance(wrapped, Renormalised) and wrapped.smallnets_config["name"] == "mobilenet_v1"
    student = trainer.data.preprocessing
    record = json.loads(trainer.rundir.config.read_text())["resolved"]["teacher"]["renormalised"]
    assert record == {"student": {"mean": student["mean"], "std": student["std"]}, "teacher": {"mean": mean, "std": std}}
    # the same augmented batch from a pipeline normalising with the teacher's statistics
    own = build_data(dataclasses.replace(cfg.data, mean=tuple(mean), std=tuple(std)), seed=cfg.train.seed, progress=False)
    (x_student, y_student), (x_teacher, y_teacher) = next(trainer.data.train.epoch_batches(0)), next(own.train.epoch_batches(0))
    assert torch.equal(y_student, y_teacher)
    assert torch.allclose(wrapped.renormalise(x_student), x_teacher, rtol=0, atol=1e-5)
    assert trainer.fit().status == "finished"
