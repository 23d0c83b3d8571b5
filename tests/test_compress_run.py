"""smallnets compress RUN: Deep Compression of a trained run (prune, share, Huffman-code), each stage
measured from its file; and the lossless sparse encoding of pruned, unshared tensors in .sncz."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import smallnets
from smallnets.cli import main
from smallnets.compress.packed import packed_summary, read_packed, write_packed
from smallnets.compress.sparsity import prunable_weights, prune_magnitude
from smallnets.rundir import RunDir
from conftest import file_snapshot, tiny_trained_run


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


# ---------------------------------------------------------------------------------------------
# the sparse encoding


def test_sparse_encoding_round_trips_bit_exactly(tmp_path):
    torch.manual_seed(0)
    state = {
        "w": torch.where(torch.rand(64, 32) < 0.4, torch.randn(64, 32), torch.zeros(())),
        "half": torch.where(torch.rand(500) < 0.2, torch.randn(500), torch.zeros(())).half(),
        "neg0": torch.cat([torch.zeros(200), torch.tensor([-0.0, float("nan"), 1.0])]),  # -0.0 and NaN are values
        "zeros": torch.zeros(300), "flags": torch.arange(400) % 97 == 0, "ints": torch.arange(400) * (torch.arange(400) % 50 == 0),
        "dense": torch.randn(50), "tiny": torch.zeros(3), "empty": torch.zeros(0, 4), "step": torch.tensor(7),
    }  # fmt: skip
    for huffman in (True, False):
        path = write_packed(tmp_path / f"s{huffman}.sncz", state, None, huffman=huffman)
        _, back = read_packed(path)
        assert list(back) == list(state)
        for key, value in state.items():
            assert back[key].dtype == value.dtype and back[key].shape == value.shape and _bits(back[key]) == _bits(value), key
        summary = packed_summary(path)
        encodings = {k: t["encoding"] for k, t in summary["tensors"].items()}
        assert {k for k, e in encodings.items() if e == "sparse"} == {"w", "half", "neg0", "zeros", "flags", "ints"}
        assert summary["tensors"]["zeros"]["bytes"] == 0 and summary["tensors"]["neg0"]["values"] == 12
        assert sum(summary["parts"].values()) == summary["bytes"] == path.stat().st_size
    never = write_packed(tmp_path / "dense.sncz", state, None, sparse=False)
    assert {t["encoding"] for t in packed_summary(never)["tensors"].values()} == {"dense"}


def test_a_60_percent_pruned_model_is_smaller_than_fp32_without_sharing(tmp_path):
    torch.manual_seed(0)
    model, _ = prune_magnitude(smallnets.create_model("mobilenet_v2", width_mult=0.35, num_classes=10, cifar=True).eval(), 0.6)
    fp32 = smallnets.save_weights(model, tmp_path / "m.safetensors")
    from smallnets.checkpoint import weights_meta

    path = write_packed(tmp_path / "m.sncz", model, weights_meta(model), shared=None, huffman=False)
    # measured: 60% zeros in float32 is 0.4 x 32 bits of values + ~2 bits of position per weight
    assert path.stat().st_size < 0.6 * fp32.stat().st_size
    loaded = smallnets.load_weights(path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_damaged_sparse_entry_is_refused(tmp_path):
    from smallnets.compress import packed

    path = write_packed(tmp_path / "s.sncz", {"w": torch.cat([torch.zeros(100), torch.ones(3)])}, None)
    header, _ = packed._open(path.read_bytes(), str(path))
    entry = header["tensors"][0]
    assert entry["encoding"] == "sparse"
    entry["nonzero"] = 4
    with pytest.raises(ValueError, match="bytes of values for 4 non-zero float32 values"):
        packed._decode_tensor(entry, lambda ref, where: b"\0" * 12, "tensor 'w'")


# ---------------------------------------------------------------------------------------------
# smallnets compress


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    return tiny_trained_run(tmp_path_factory)



@pytest.fixture(scope="module")
def compressed(source_run):
    before = file_snapshot(source_run)
    argv = ["compress", str(source_run), "--prune", "0.6", "--bits", "6", "--fc-bits", "4", "--huffman", "--finetune-epochs", "1",
            "--name", "deep", "--no-latency", "--batch-size", "4"]  # fmt: skip
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    return {"code": code, "before": before, "printed": printed.getvalue(), "new": source_run.parent / "deep"}


def test_compress_command_writes_every_stage_and_leaves_the_source_alone(source_run, compressed):
    assert compressed["code"] == 0
    assert file_snapshot(source_run) == compressed["before"], "the source run must not be modified"
    new = compressed["new"]
    for name in ("pruned.sncz", "shared.sncz", "compressed.sncz", "compress.json", "compress.png", "prune/last.safetensors",
                 "share/last.safetensors"):  # fmt: skip
        assert (new / name).is_file(), name
    printed = compressed["printed"]
    assert "| fp32 |" in printed and "| pruned |" in printed and "| shared |" in printed and "| Huffman-coded |" in printed
    assert "compression (fp32 bytes / stage bytes): pruned " in printed
    for phase in ("prune", "share"):  # the source's validation split, no EMA, the fine-tune's epochs
        assert RunDir(new / phase).read_split()["val_files"] == RunDir(source_run).read_split()["val_files"]
        config = json.loads((new / phase / "config.json").read_text())
        assert config["train"]["ema"] is False and config["train"]["epochs"] == 1 and config["data"]["batch_size"] == 4


def test_compress_table_bytes_are_measured_and_decrease(source_run, compressed):
    new = compressed["new"]
    report = json.loads((new / "compress.json").read_text())
    rows = {r["stage"]: r for r in report["rows"]}
    assert list(rows) == ["fp32", "pruned", "shared", "Huffman-coded"]
    files = {"fp32": source_run / "best.safetensors", "pruned": new / "pruned.sncz", "shared": new / "shared.sncz",
             "Huffman-coded": new / "compressed.sncz"}  # fmt: skip
    for stage, file in files.items():
        assert rows[stage]["bytes"] == file.stat().st_size
        assert rows[stage]["ratio_to_fp32"] == pytest.approx(rows["fp32"]["bytes"] / rows[stage]["bytes"])
    assert rows["fp32"]["bytes"] > rows["pruned"]["bytes"] > rows["shared"]["bytes"] >= rows["Huffman-coded"]["bytes"]
    assert rows["fp32"]["top1"] == RunDir(source_run).read_run_info()["best_top1"]
    for stage, phase in (("pruned", "prune"), ("shared", "share")):  # the last epoch's top-1: the weights that were written
        last = [json.loads(line) for line in (new / phase / "metrics.jsonl").read_text().splitlines() if line.strip()][-1]
        assert rows[stage]["top1"] == last["val_top1"]
    assert rows["Huffman-coded"]["top1"] == rows["shared"]["top1"]
    assert "last.safetensors" in report["settings"]["weights_used"]


def test_compress_stages_hold_the_target_sparsity_and_codebooks(compressed):
    new = compressed["new"]
    pruned = smallnets.load_weights(new / "pruned.sncz")
    weights = prunable_weights(pruned)
    zeros, total = sum(int((w == 0).sum()) for w in weights.values()), sum(w.numel() for w in weights.values())
    assert zeros == round(0.6 * total)
    assert {t["encoding"] for t in packed_summary(new / "pruned.sncz")["tensors"].values()} >= {"sparse"}
    _, state = read_packed(new / "shared.sncz")
    shared = smallnets.load_weights(new / "shared.sncz")
    for name, module in shared.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            w = state[f"{name}.weight"]
            limit = 2**4 if isinstance(module, torch.nn.Linear) else 2**6
            assert torch.unique(w[w != 0]).numel() <= limit, name
            assert bool((w[pruned.get_parameter(f"{name}.weight") == 0] == 0).all()), f"{name}: pruned zeros must stay zero"


def test_compressed_file_gives_exactly_the_shared_models_logits(compressed):
    new = compressed["new"]
    coded = smallnets.load_weights(new / "compressed.sncz").eval()
    shared = smallnets.load_weights(new / "share" / "last.safetensors").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(coded(x), shared(x))


def test_without_huffman_there_is_no_huffman_stage(source_run, tmp_path):
    from smallnets.compress.deep import compress_run

    report = compress_run(source_run, prune=0.5, bits=4, fc_bits=3, huffman=False, out=tmp_path / "elsewhere", latency=False,
                          data_overrides={"batch_size": 4})  # fmt: skip
    new = tmp_path / "elsewhere" / "source-compressed"
    assert report["run_dir"] == str(new) and [r["stage"] for r in report["rows"]] == ["fp32", "pruned", "shared"]
    assert not (new / "compressed.sncz").exists() and (new / "shared.sncz").is_file()
    assert report["rows"][1]["sparsity"] == pytest.approx(0.5, abs=1e-5)
    assert all(v["clusters"] <= 2**v["bits"] and v["bits"] in (3, 4) for v in report["settings"]["shared"].values())


def test_an_existing_folder_is_never_overwritten(source_run, compressed, capsys):
    before = file_snapshot(compressed["new"])
    assert main(["compress", str(source_run), "--name", "deep", "--no-latency"]) == 2
    assert "exists: compress writes a new folder and never overwrites one" in capsys.readouterr().err
    assert file_snapshot(compressed["new"]) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prune", "1.2"], "prune must be in [0, 1), got 1.2"),
        (["--prune", "-0.1"], "prune must be in [0, 1), got -0.1"),
        (["--bits", "0"], "bits must be an integer in 1..16, got 0"),
        (["--fc-bits", "17"], "fc_bits must be an integer in 1..16, got 17"),
        (["--finetune-epochs", "0"], "finetune_epochs must be an integer >= 1, got 0"),
        (["--epochs", "3"], "--epochs is set by compress itself"),
        (["--teacher", "x"], "--teacher is set by compress itself"),
        (["--ema"], "--ema is set by compress itself"),
        (["--widht-mult", "3"], "unknown option --widht-mult"),
        (["--lr", "-1"], "lr must be > 0, got -1.0"),
    ],
)
def test_compress_command_refuses_bad_arguments(source_run, argv, message, capsys):
    assert main(["compress", str(source_run), "--name", "never", "--no-latency", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (source_run.parent / "never").exists()


def test_compress_command_needs_a_run(tmp_path, capsys):
    assert main(["compress", str(tmp_path), "--name", "never"]) == 2
    assert "source must be a run directory" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
