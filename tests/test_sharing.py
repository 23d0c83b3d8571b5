"""Weight sharing by per-layer k-means (Deep Compression sec. 3): linear initialisation, Lloyd, zeros
kept, centroid fine-tuning that keeps every layer shared; and the Huffman coder under the file format."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
from torch import nn

import smallnets
from smallnets.compress import huffman
from smallnets.compress.sharing import PRUNED, CentroidFineTuning, SharedWeights, kmeans_1d, share_weights


def _prune(model: nn.Module, fraction: float, seed: int = 0) -> nn.Module:
    """Zero the smallest-magnitude ``fraction`` of every conv and linear weight."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                w = module.weight
                k = int(fraction * w.numel())
                if k:
                    w[w.abs() <= w.abs().flatten().kthvalue(k).values] = 0
    return model


@pytest.fixture(scope="module")
def squeezenet():
    torch.manual_seed(0)
    return smallnets.create_model("squeezenet1_1", num_classes=10, cifar=True).eval()


def _distinct_nonzero(t: torch.Tensor) -> int:
    return int(t[t != 0].unique().numel())


def test_every_layer_has_at_most_k_values_and_zeros_stay(squeezenet):
    pruned = _prune(copy.deepcopy(squeezenet), 0.5)
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    model, shared = share_weights(pruned, bits=4, fc_bits=3)
    after = model.state_dict()
    assert set(after) == set(before) and all(after[k].dtype == before[k].dtype and after[k].shape == before[k].shape for k in before)
    assert all(torch.equal(pruned.state_dict()[k], before[k]) for k in before)  # inplace=False: the given model is untouched
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert set(shared) == {f"{n}.weight" for n in convs} | {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for name, layer in shared.items():
        w = after[name]
        assert torch.equal(before[name] == 0, w == 0), name  # pruned positions stay exactly 0, nothing else becomes 0
        assert torch.equal(layer.indices == PRUNED, w == 0)
        assert _distinct_nonzero(w) <= 2**layer.bits and layer.codebook.dtype == torch.float32
        assert torch.equal(layer.weight(), w)
    # untouched tensors: biases, BatchNorm
    assert all(torch.equal(after[k], before[k]) for k in before if k not in shared)


def test_bits_per_kind_and_per_layer(squeezenet):
    names = [n for n, m in squeezenet.named_modules() if isinstance(m, nn.Conv2d)]
    first = f"{names[0]}.weight"
    _, shared = share_weights(squeezenet, bits=6, fc_bits=2, layer_bits={first: 3})
    convs = {f"{n}.weight" for n in names}
    assert shared[first].bits == 3 and shared[first].codebook.numel() <= 8
    assert all(shared[n].bits == 6 for n in convs - {first})
    linears = [n for n in shared if n not in convs]
    assert all(shared[n].bits == 2 for n in linears)
    _, only_conv = share_weights(squeezenet, bits=2, include=("conv",))
    assert set(only_conv) == convs


def test_argument_errors(squeezenet):
    with pytest.raises(ValueError, match=r"bits must be an integer in 1\.\.16, got 17"):
        share_weights(squeezenet, bits=17)
    with pytest.raises(ValueError, match=r"fc_bits must be an integer in 1\.\.16, got 0"):
        share_weights(squeezenet, fc_bits=0)
    with pytest.raises(ValueError, match=r"bits must be an integer in 1\.\.16, got True"):
        share_weights(squeezenet, bits=True)
    name = next(f"{n}.weight" for n, m in squeezenet.named_modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(ValueError, match=rf"not a shared layer's weight; did you mean '{name}'"):
        share_weights(squeezenet, layer_bits={name[:-1] + "x": 4})
    with pytest.raises(ValueError, match=r"layer_bits\[.*\] must be an integer in 1\.\.16"):
        share_weights(squeezenet, layer_bits={name: 20})
    with pytest.raises(ValueError, match="include must name layer kinds .* got 'convs'; did you mean 'conv'"):
        share_weights(squeezenet, include=("convs",))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        share_weights({"w": torch.ones(2)})


def test_linear_initialisation_and_lloyd():
    # weights on k evenly spaced levels: linear initialisation puts the centroids on them, so the result is
    # exact after one update (density or random initialisation would not start there)
    levels = (torch.arange(16, dtype=torch.float64) - 6) / 16  # binary fractions: the evenly spaced values are exact
    values = levels[torch.randint(0, 16, (5000,), generator=torch.Generator().manual_seed(0))]
    centroids, cluster, iterations = kmeans_1d(values, 16, max_iter=0)
    assert iterations == 0 and torch.equal(centroids, levels) and torch.equal(centroids[cluster], values)
    centroids, cluster, iterations = kmeans_1d(values, 16)
    assert iterations == 1 and torch.equal(centroids, levels) and torch.equal(centroids[cluster], values)
    # uniformly spaced weights in (-1, 1), 4 clusters: Lloyd reaches the middle of each quarter (to one grid step)
    grid = (torch.arange(4096, dtype=torch.float64) + 0.5) / 2048 - 1
    centroids, cluster, iterations = kmeans_1d(grid, 4)
    assert torch.allclose(centroids, torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64), rtol=0, atol=1 / 2048)
    assert 0 < iterations < 100 and (torch.bincount(cluster) - 1024).abs().max() <= 1
    # nearest-centroid assignment, ties to the lower centroid
    c, a, _ = kmeans_1d(torch.tensor([0.0, 1.0, 2.0]), 2, max_iter=0)
    assert c.tolist() == [0.0, 2.0] and a.tolist() == [0, 0, 1]


def test_kmeans_reduces_the_error_of_the_initialisation():
    torch.manual_seed(0)
    w = torch.randn(20000) ** 3  # heavy tails: evenly spaced centroids waste most of their range
    c0, a0, _ = kmeans_1d(w, 16, max_iter=0)
    c, a, it = kmeans_1d(w, 16)
    err0 = ((w.double() - c0[a0]) ** 2).mean()
    err = ((w.double() - c[a]) ** 2).mean()
    assert it > 1 and err < 0.5 * err0
    assert torch.all(c[1:] >= c[:-1])
    # deterministic
    c2, a2, it2 = kmeans_1d(w, 16)
    assert torch.equal(c, c2) and torch.equal(a, a2) and it == it2


def test_few_distinct_values_are_kept_exactly():
    layer = nn.Linear(8, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.0, 0.5, -0.25, 3.0]).repeat(8, 1).T)
    model, shared = share_weights(nn.Sequential(layer), bits=2)  # 3 distinct non-zero values <= 4
    assert torch.equal(model[0].weight, layer.weight)
    assert shared["0.weight"].codebook.tolist() == [-0.25, 0.5, 3.0] and shared["0.weight"].iterations == 0
    allzero = nn.Sequential(nn.Linear(3, 2, bias=False))
    nn.init.zeros_(allzero[0].weight)
    _, s = share_weights(allzero, bits=1)
    assert s["0.weight"].codebook.numel() == 0 and bool((s["0.weight"].indices == PRUNED).all())


def test_sharing_is_fast_on_a_2m_weight_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2048, 1024, bias=False))  # 2,097,152 weights
    start = time.perf_counter()
    shared_model, shared = share_weights(model, bits=8, inplace=True)
    seconds = time.perf_counter() - start
    assert _distinct_nonzero(shared_model[0].weight) <= 256
    assert seconds < 15, seconds  # ~1 s on a loaded 2-core EPYC (100 Lloyd iterations on uniform weights)


def _fine_tune(model, shared, x, y, hook, steps=8, lr=0.01):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    hook.start(model, steps)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        hook.after_backward(model, step)
        opt.step()
        hook.after_step(model, step)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(("reduce", "hook_lr", "lr"), [("sum", None, 0.01), ("mean", None, 0.2), ("sum", 2e-3, 0.01)])
def test_centroid_fine_tuning_keeps_layers_shared_and_lowers_the_loss(reduce, hook_lr, lr):
    torch.manual_seed(0)
    base = _prune(smallnets.create_model("mobilenet_v2", width_mult=0.35, num_classes=10, cifar=True), 0.5)
    zeros = {k: v == 0 for k, v in base.state_dict().items() if v.dim() > 1}
    model, shared = share_weights(base, bits=4, fc_bits=3)
    model.eval()  # fixed BatchNorm statistics: the loss on the fixed batch is a function of the weights alone
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    hook = CentroidFineTuning(shared, lr=hook_lr, reduce=reduce)
    losses = _fine_tune(model, shared, x, y, hook, lr=lr)
    assert min(losses[-3:]) < losses[0], losses
    state = model.state_dict()
    for name, layer in shared.items():
        w = state[name]
        assert bool((w[zeros[name]] == 0).all()), name  # momentum and weight decay do not revive pruned weights
        assert _distinct_nonzero(w) <= 2**layer.bits, name
        assert torch.equal(layer.weight(), w), name  # the codebook was updated with the weights
    assert hook.describe() == {"type": "CentroidFineTuning", "layers": len(shared), "lr": hook_lr, "reduce": reduce, "bits": [3, 4]}


def test_centroid_gradient_is_the_sum_over_the_cluster():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0, 2.0, 0.0]]))
    model, shared = share_weights(nn.Sequential(layer), bits=1)
    assert shared["0.weight"].codebook.tolist() == [1.0, 2.0]
    hook = CentroidFineTuning(shared, lr=0.5)
    hook.start(model)
    model(torch.tensor([[1.0, 3.0, 5.0, 7.0]])).sum().backward()  # dL/dw = x
    hook.after_backward(model)
    hook.after_step(model)  # no optimizer: centroid -= 0.5 * (sum of its weights' gradients)
    assert shared["0.weight"].codebook.tolist() == [1.0 - 0.5 * (1 + 3), 2.0 - 0.5 * 5]
    assert model[0].weight.tolist() == [[-1.0, -1.0, -0.5, 0.0]]
    # through the optimizer: every weight of a cluster gets the cluster's summed gradient, pruned ones 0
    layer2 = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer2.weight.copy_(torch.tensor([[1.0, 1.0, 2.0, 0.0]]))
    model2, shared2 = share_weights(nn.Sequential(layer2), bits=1)
    hook2 = CentroidFineTuning(shared2)
    model2(torch.tensor([[1.0, 3.0, 5.0, 7.0]])).sum().backward()
    hook2.after_backward(model2)
    assert model2[0].weight.grad.tolist() == [[4.0, 4.0, 5.0, 0.0]]


def test_hook_argument_errors(squeezenet):
    _, shared = share_weights(squeezenet, bits=2)
    with pytest.raises(TypeError, match="shared must be the SharedWeights"):
        CentroidFineTuning({})
    with pytest.raises(ValueError, match="lr must be None or a finite number > 0, got -1"):
        CentroidFineTuning(shared, lr=-1)
    with pytest.raises(ValueError, match="reduce must be 'sum' .* got 'avg'"):
        CentroidFineTuning(shared, reduce="avg")
    with pytest.raises(ValueError, match="the model has no parameter"):
        CentroidFineTuning(shared).start(nn.Linear(2, 2))
    assert isinstance(shared, SharedWeights) and len(shared) == len(list(shared))


# ---------------------------------------------------------------------------------------------
# Huffman coding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["uniform", "skewed", "two", "sparse-alphabet"])
def test_huffman_round_trips(kind):
    rng = np.random.default_rng(1)
    symbols = {
        "uniform": rng.integers(0, 256, 50_000),
        "skewed": np.minimum(rng.geometric(0.05, 50_000) - 1, 999),  # long codes: the length limit is exercised
        "two": rng.integers(0, 2, 1000),
        "sparse-alphabet": rng.choice([3, 70, 4000], 10_000, p=[0.9, 0.09, 0.01]),
    }[kind]
    lengths = huffman.build_code(np.bincount(symbols))
    data, nbits = huffman.encode(symbols, lengths)
    assert len(data) == -(-nbits // 8) and nbits == huffman.encoded_bits(symbols, lengths)
    assert np.array_equal(huffman.decode(data, lengths, symbols.size, nbits), symbols)
    assert np.array_equal(huffman.decode(data, lengths, symbols.size), symbols)
    # no worse than the entropy + 1 bit per symbol (Huffman's bound)
    p = np.bincount(symbols) / symbols.size
    entropy = -(p[p > 0] * np.log2(p[p > 0])).sum()
    assert nbits <= (entropy + 1) * symbols.size


def test_huffman_edge_cases():
    assert huffman.encode([], [1, 1]) == (b"", 0)
    assert huffman.decode(b"", [1, 1], 0).size == 0
    lengths = huffman.build_code([0, 0, 7, 0])  # one symbol: a 1-bit code
    assert lengths.tolist() == [0, 0, 1, 0]
    data, nbits = huffman.encode([2] * 7, lengths)
    assert nbits == 7 and huffman.decode(data, lengths, 7, nbits).tolist() == [2] * 7
    assert huffman.build_code([0, 0]).tolist() == [0, 0]
    # canonical codes: by (length, symbol)
    assert huffman.canonical_codes([2, 1, 3, 3]).tolist() == [0b10, 0b0, 0b110, 0b111]
    with pytest.raises(ValueError, match="symbol 1 has no code"):
        huffman.encode([2, 1], lengths)
    with pytest.raises(ValueError, match="runs out"):
        huffman.decode(data, lengths, 8, nbits)
    with pytest.raises(ValueError, match="no code"):
        huffman.decode(b"\xff", lengths, 1)  # '1' is not the single symbol's code '0'
    with pytest.raises(ValueError, match="not a prefix code"):
        huffman.encode([0], [1, 1, 1])


def test_huffman_length_limit():
    counts = np.array([2**i for i in range(30)])  # Fibonacci-like counts: an unlimited code would be 29 bits deep
    lengths = huffman.build_code(counts, max_length=12)
    assert lengths.max() == 12 and np.sum(np.ldexp(1.0, -lengths)) == 1.0  # still a complete prefix code
    symbols = np.repeat(np.arange(30), 3)
    data, nbits = huffman.encode(symbols, lengths)
    assert np.array_equal(huffman.decode(data, lengths, symbols.size, nbits), symbols)
    assert huffman.build_code(counts).max() <= huffman.MAX_LENGTH


def test_huffman_is_fast_on_2m_symbols():
    rng = np.random.default_rng(0)
    symbols = np.clip(rng.normal(128, 30, 2_000_000).astype(np.int64), 0, 255)
    lengths = huffman.build_code(np.bincount(symbols, minlength=256))
    start = time.perf_counter()
    data, nbits = huffman.encode(symbols, lengths)
    mid = time.perf_counter()
    out = huffman.decode(data, lengths, symbols.size, nbits)
    end = time.perf_counter()
    assert np.array_equal(out, symbols)
    assert mid - start < 10 and end - mid < 10, (mid - start, end - mid)  # ~0.2 s and ~0.5 s on a loaded 2-core EPYC
