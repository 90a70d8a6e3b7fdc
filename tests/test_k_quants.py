"""llama.cpp's mixes (Q4_K_M) in quantization-aware training: the types and values the student trains
on are those of the file llama.cpp writes from it. Needs the gguf-runtime extra (skips without it)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from distillab.models.tiny import build_tiny
from distillab.quantization.fake_quant import QuantizeAware
from distillab.quantization.gguf_export import export_gguf, gguf_tensors, interleave_rotary_rows

pytest.importorskip("llama_cpp", reason="needs the gguf-runtime extra")

from distillab.quantization import k_quants, llama_cpp  # noqa: E402  (after the skip: ctypes to llama.cpp)


def _model():
    """64-wide rows (not whole 256-value K blocks: llama.cpp falls back to Q5_0 / Q8_0) and 256-wide
    ffn_down rows (Q4_K, and Q6_K in the layers Q4_K_M gives more bits): every kind of tensor a mix has."""
    return build_tiny("llama", hidden_size=64, intermediate_size=256, num_hidden_layers=4)


@pytest.fixture(scope="module")
def llama_cpp_file(tmp_path_factory):
    """The model, the file llama.cpp's own quantizer writes from its f16 export, and that file's tensors."""
    model, tokenizer = _model()
    folder = tmp_path_factory.mktemp("q4_k_m")
    f16 = export_gguf(model, tokenizer, folder / "m-f16.gguf", "f16")
    path = llama_cpp.quantize_gguf(f16, folder / "m-q4_k_m.gguf", "q4_k_m", threads=1)
    return model, {t.name: t for t in gguf.GGUFReader(path).tensors}


def test_each_tensor_gets_the_type_llama_cpp_gives_it(llama_cpp_file):
    model, tensors = llama_cpp_file
    types = k_quants.tensor_types(model, "q4_k_m", threads=1)
    names = {hf: name for hf, name, _ in gguf_tensors(model, gguf.MODEL_ARCH.LLAMA)}
    assert types == {hf: gguf.GGMLQuantizationType(tensors[name].tensor_type) for hf, name in names.items()}
    kinds = {t.name for t in types.values()}
    assert {"Q4_K", "Q6_K", "Q5_0", "Q8_0"} <= kinds, kinds


def test_the_student_trains_on_llama_cpps_own_values_bit_for_bit(llama_cpp_file):
    """Inside ``applied``, every quantized weight equals the de-quantized tensor of llama.cpp's own
    file (``gguf``'s de-quantizer, which transformers loads): distance 0, in every bit."""
    model, tensors = llama_cpp_file
    names = {hf: name for hf, name, _ in gguf_tensors(model, gguf.MODEL_ARCH.LLAMA)}
    heads = {"q_proj": model.config.num_attention_heads, "k_proj": model.config.num_key_value_heads}
    compared = 0
    with QuantizeAware("q4_k_m").applied(model), torch.no_grad():
        for hf_name, name in names.items():
            tensor = tensors[name]
            if tensor.tensor_type in (0, 1):  # F32 vectors
                continue
            module = model.get_submodule(hf_name.removesuffix(".weight"))
            ours = module.weight.float().numpy()
            for proj, count in heads.items():
                if proj in hf_name:
                    ours = interleave_rotary_rows(ours, count)  # the file's row order
            qtype = gguf.GGMLQuantizationType(tensor.tensor_type)
            theirs = gguf.quants.dequantize(tensor.data, qtype).reshape(ours.shape)
            assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)), (hf_name, qtype.name)
            compared += 1
    assert compared == len([t for t in tensors.values() if t.tensor_type not in (0, 1)])


def test_ggmls_dequantizer_equals_the_gguf_packages_in_chunks_on_threads():
    """The rows are split across threads at arbitrary row boundaries; every type of a mix."""
    weight = (torch.randn(7, 512, generator=torch.Generator().manual_seed(0)) * 0.05).half().float().numpy()
    for qtype in (k_quants.QType.Q4_K, k_quants.QType.Q6_K, k_quants.QType.Q5_0, k_quants.QType.Q8_0):
        ours = k_quants.quantize_dequantize(weight, qtype, threads=3)
        if qtype in (k_quants.QType.Q5_0, k_quants.QType.Q8_0):  # the gguf package quantizes these too
            reference = gguf.quants.dequantize(gguf.quants.quantize(weight, qtype), qtype)
            assert np.array_equal(ours, reference), qtype.name
        assert np.array_equal(ours, k_quants.quantize_dequantize(weight, qtype, threads=1)), qtype.name
        assert 0 < np.abs(ours - weight).max() < 0.05, qtype.name


def _weight(seed: int, width: int = 768) -> np.ndarray:
    """Rows with an all-zero sub-block, an outlier and a nearly-zero sub-block beside normal ones."""
    w = torch.randn(9, width, generator=torch.Generator().manual_seed(seed)) * 0.05
    w[0, :32], w[1, 5], w[3, :16] = 0, 1.0, w[3, :16] * 1e-6
    return w.half().float().numpy()


@pytest.mark.parametrize("qtype", sorted(k_quants.GRID_TYPES))
def test_a_grid_rounds_the_searched_weight_to_llama_cpps_values(qtype):
    """Re-rounding onto the scales llama.cpp chose gives the values its quantizer wrote: the scales
    are read from the right bytes and the rounding is llama.cpp's (bit for bit, a zero's sign aside)."""
    for seed in range(3):
        weight = _weight(seed)
        values, grid = k_quants.quantize_with_grid(weight, qtype, threads=2)
        ours = grid.round(torch.from_numpy(weight)).numpy()
        assert np.array_equal(ours, values), qtype.name
        nonzero = values != 0
        assert np.array_equal(ours.view(np.uint32)[nonzero], values.view(np.uint32)[nonzero])
        assert grid.scale.shape == (9, 768 // (16 if qtype == k_quants.QType.Q6_K else 32))


@pytest.mark.parametrize("qtype", sorted(k_quants.GRID_TYPES))
def test_a_moved_weight_lands_on_the_old_grid(qtype):
    """After the weight moves, each value is still scale·q − min with q in the type's range."""
    weight = _weight(0)
    _, grid = k_quants.quantize_with_grid(weight, qtype, threads=1)
    moved = (
        torch.from_numpy(weight)
        + torch.randn(weight.shape, generator=torch.Generator().manual_seed(5)) * 1e-3
    )
    out = grid.round(moved).reshape(9, grid.scale.shape[1], -1)
    scale, low = grid.scale[..., None], grid.min[..., None]
    q = (out + low) / torch.where(scale == 0, 1, scale)
    live = (scale != 0).expand_as(q)
    torch.testing.assert_close(q[live], q[live].round(), rtol=0, atol=1e-3)
    assert q[live].min() >= grid.low and q[live].max() <= grid.high
    assert (out - moved.reshape(out.shape)).abs().mean() < 0.01  # and near the weight


def test_refresh_every_searches_on_every_nth_step_and_re_rounds_between(monkeypatch):
    """``refresh_every=3`` over 7 optimizer steps: llama.cpp's search on steps 0, 3 and 6 for each
    K-quant weight, the other steps on that search's grid; scoring (``as_stored``) searches afresh."""
    from distillab.quantization import fake_quant

    model, _ = _model()
    qtype = k_quants.tensor_types(model, "q4_k_m", threads=1)["model.layers.0.mlp.down_proj.weight"]
    assert qtype in k_quants.GRID_TYPES
    searches = []
    original = k_quants.quantize_with_grid
    monkeypatch.setattr(
        k_quants, "quantize_with_grid", lambda *a, **k: searches.append(1) or original(*a, **k)
    )
    down = model.model.layers[0].mlp.down_proj

    def latent() -> np.ndarray:  # the f16 export's values of the float weight
        return down.parametrizations.weight.original.detach().half().float().numpy()

    ids = torch.randint(0, model.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(1))
    aware = QuantizeAware("q4_k_m", refresh_every=3)
    with aware.applied(model):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for step in range(7):
            model(input_ids=ids).logits.float().pow(2).mean().backward()
            with torch.no_grad():
                trained_on = down.weight.float().numpy()  # the copy this step's forward used
                fresh, grid = original(latent(), qtype, 1)
            if step % 3 == 0:
                assert np.array_equal(trained_on, fresh), step  # searched this step
                searched_grid = grid
                if step == 0:
                    k_weights = len(searches)  # one search per K-quant weight
            else:
                assert np.array_equal(trained_on, searched_grid.round(torch.from_numpy(latent())).numpy())
                assert not np.array_equal(trained_on, fresh), step  # the weight moved: an older grid
            optimizer.step()
            optimizer.zero_grad()
    assert k_weights >= 1 and len(searches) == 3 * k_weights, (len(searches), k_weights)
    fresh, _ = original(down.weight.detach().half().float().numpy(), qtype, 1)  # the final weights
    with fake_quant.as_stored(model, aware), torch.no_grad():
        assert np.array_equal(down.weight.float().numpy(), fresh)


def test_a_resumed_run_keeps_the_search_schedule(monkeypatch):
    """The schedule follows the optimizer's own step count, which a resume restores: resumed at step
    7 with N = 3, the run searches at its first step (no grid yet), then at step 9, not at 10."""
    model, _ = _model()
    searched_at = []
    original = k_quants.quantize_with_grid
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(1))

    def train(steps: int) -> None:
        for _ in range(steps):
            model(input_ids=ids).logits.float().pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()

    aware = QuantizeAware("q4_k_m", refresh_every=3)
    with aware.applied(model):
        train(7)
    state = optimizer.state_dict()  # what a checkpoint holds
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optimizer.load_state_dict(state)
    step = [7]
    monkeypatch.setattr(
        k_quants, "quantize_with_grid", lambda *a, **k: searched_at.append(step[0]) or original(*a, **k)
    )
    with aware.applied(model):
        for _ in range(4):  # the forwards of steps 7, 8, 9, 10
            train(1)
            step[0] += 1
    assert sorted(set(searched_at)) == [7, 9], searched_at


def test_refresh_every_below_one_is_one_line_naming_the_key():
    from distillab.errors import DistillabError

    with pytest.raises(
        DistillabError, match=r"^quantize_aware.refresh_every: 0 is not valid; valid: an integer >= 1$"
    ):
        QuantizeAware("q4_k_m", refresh_every=0)


def test_a_distill_run_trains_on_the_mix_llama_cpp_assigns(tiny_corpus, tmp_path, caplog):
    from conftest import compose_config, tiny_overrides

    from distillab.distill import run

    cfg = compose_config(
        tiny_overrides(tmp_path, tiny_corpus, "quantize_aware=gguf", "quantize_aware.format=q4_k_m")
    )
    with caplog.at_level("INFO", logger="distillab.quantization.fake_quant"):
        results = run(cfg)
    assert results["quantize_aware"] == "q4_k_m"
    assert "quantize_aware: q4_k_m as llama.cpp assigns it: " in caplog.text  # the types came from llama.cpp
