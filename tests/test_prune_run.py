"""smallnets prune RUN: prune a trained run's weights, fine-tune into a new run, report before / after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import smallnets
from smallnets.cli import main
from smallnets.rundir import RunDir
from conftest import file_snapshot, tiny_trained_run


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    return tiny_trained_run(tmp_path_factory)



def test_prune_command_writes_a_smaller_fine_tuned_run(source_run, capsys):
    before = file_snapshot(source_run)
    code = main(["prune", str(source_run), "--target-macs", "0.5", "--finetune-epochs", "1", "--name", "pruned",
                 "--no-latency", "--batch-size", "4", "--warmup-epochs", "0.5"])  # fmt: skip
    assert code == 0
    assert file_snapshot(source_run) == before, "the source run must not be modified"
    printed = capsys.readouterr().out
    assert "| unpruned |" in printed and "| pruned (BN recalibrated on " in printed
    new = source_run.parent / "pruned"
    report = json.loads((new / "prune.json").read_text())
    rows = {r["stage"].split(" +")[0].split(" (")[0]: r for r in report["rows"]}
    assert report["settings"]["bn_recalibration_images"] > 0
    assert rows["pruned"]["macs"] <= 0.5 * rows["unpruned"]["macs"]
    tuned = report["rows"][2]
    assert tuned["bytes"] == (new / "best.safetensors").stat().st_size < rows["unpruned"]["bytes"]
    assert (new / "prune.png").stat().st_size > 0
    # the new run's weights rebuild from its files alone, with the pruned widths, and its config says so
    model = smallnets.load_weights(new)
    assert smallnets.profiler.count_macs(model, tuple(report["settings"]["input_size"])) == tuned["macs"]
    config = json.loads((new / "config.json").read_text())
    assert config["model"]["spec"] is not None and config["train"]["epochs"] == 1 and config["data"]["batch_size"] == 4 and config["train"]["warmup_epochs"] == 0.5
    assert RunDir(new).read_split()["val_files"] == RunDir(source_run).read_split()["val_files"]  # the same validation split


def test_prune_command_distils_from_the_unpruned_run(source_run):
    assert main(["prune", str(source_run), "--ratio", "0.3", "--finetune-epochs", "1", "--name", "distilled", "--distill", "--no-latency"]) == 0
    config = json.loads((source_run.parent / "distilled" / "config.json").read_text())
    assert Path(config["train"]["teacher"]).resolve() == source_run.resolve()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ratio", "1.5"], "ratio must be a number in (0, 1), got 1.5"),
        (["--target-macs", "0.5", "--finetune-epochs", "0"], "finetune_epochs must be an integer >= 1, got 0"),
        (["--target-macs", "0.5", "--epochs", "3"], "--epochs is set by prune itself"),
        (["--target-macs", "0.5", "--widht-mult", "3"], "unknown option --widht-mult"),
    ],
)
def test_prune_command_refuses_bad_arguments(source_run, argv, message, capsys):
    assert main(["prune", str(source_run), "--name", "never", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (source_run.parent / "never").exists()


def test_prune_command_needs_a_run(tmp_path, capsys):
    assert main(["prune", str(tmp_path), "--ratio", "0.3"]) == 2
    assert "source must be a run directory" in capsys.readouterr().err


def test_profile_reports_what_a_shrunk_model_really_costs(tmp_path, capsys):
    """True MACs of a pruned model (from its recorded spec), its bytes on disk, and zeros counted."""
    from smallnets.compress.sparsity import prune_magnitude
    from smallnets.compress.structured import prune

    model = smallnets.create_model("mobilenet_v2", num_classes=10, width_mult=0.35, cifar=True)
    pruned, report = prune(model, target_macs=0.5)
    sparse, _ = prune_magnitude(pruned, 0.5)
    path = smallnets.save_weights(sparse, tmp_path / "small.safetensors", classes=[str(i) for i in range(10)],
                                  preprocessing={"mean": [0.5] * 3, "std": [0.25] * 3, "resize": 32, "crop": 32})  # fmt: skip
    assert main(["profile", "--pretrained", str(path), "--json", "--no-latency", "--no-memory"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["macs"] == report.macs_after
    assert out["file_bytes"] == path.stat().st_size
    assert out["params"] == report.params_after
    assert abs(out["nonzero_params"] - out["params"] / 2) < 0.1 * out["params"]
