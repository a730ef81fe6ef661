"""Pretrained Hugging Face models through our harness (tiny Llama / Mistral built from a config, offline): the
sliding-window adapter gives transformers' own Mistral sliding-window logits on the same weights, streaming in any
chunking carries the state, prompts sharing a prefix read it once, and `model=hf` runs end to end through the CLI."""

import json

import pytest
import torch

from bench.models.hf import HFStreamingLM, load_model, load_tokenizer
from tests.helpers.hf_models import save_tiny
from tests.helpers.sweeps import run

WINDOW = 8


@pytest.fixture(scope="module")
def mistral_dir(tmp_path_factory):
    return save_tiny("mistral", tmp_path_factory.mktemp("mistral"), sliding_window=WINDOW)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny("llama", tmp_path_factory.mktemp("llama"))


@pytest.mark.parametrize("chunk", [40, 7, 1])
def test_sliding_window_adapter_matches_transformers_native_mistral_window(mistral_dir, chunk):
    """transformers applies Mistral's window itself on a whole-sequence forward (eager attention, its own mask);
    ours streams the same weights in chunks through an explicit window mask and an evicting KV cache."""
    from transformers import MistralForCausalLM

    native = MistralForCausalLM.from_pretrained(mistral_dir, attn_implementation="eager").eval()
    ids = torch.randint(3, native.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = native(ids).logits
        no_window = MistralForCausalLM.from_pretrained(mistral_dir, attn_implementation="eager", sliding_window=None)
        full = no_window.eval()(ids).logits
    assert not torch.allclose(reference[:, WINDOW:], full[:, WINDOW:], atol=1e-3)  # the window matters here
    lm = HFStreamingLM(load_model(str(mistral_dir)), load_tokenizer(str(mistral_dir)), chunk_size=chunk,
                       window=WINDOW)
    logits, (cache, cached_pos), _ = lm._stream(ids)
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)
    assert cached_pos.tolist() == list(range(40 - WINDOW + 1, 40))  # only what a next query can see


def test_full_adapter_streams_like_one_forward_and_its_state_grows(llama_dir):
    model, tok = load_model(str(llama_dir)), load_tokenizer(str(llama_dir))
    ids = torch.randint(3, tok.vocab_size, (1, 50), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(ids).logits
    lm = HFStreamingLM(model, tok, chunk_size=9)
    torch.testing.assert_close(lm._stream(ids)[0], reference, atol=1e-5, rtol=0)
    assert lm.state_bytes_after(64) * 2 == lm.state_bytes_after(128)
    window = HFStreamingLM(model, tok, chunk_size=9, window=16, sinks=2)
    assert window.state_bytes_after(64) == window.state_bytes_after(256)


@pytest.mark.parametrize("window", [None, 16])
def test_prompts_sharing_a_prefix_read_it_once_through_transformers_cache(llama_dir, window):
    """The shared prefix is streamed at batch 1 and transformers' cache repeated to every row
    (`batch_repeat_interleave`): the same last logits as streaming every row, with and without eviction."""
    model, tok = load_model(str(llama_dir)), load_tokenizer(str(llama_dir))
    gen = torch.Generator().manual_seed(3)
    prefix = torch.randint(3, tok.vocab_size, (1, 40), generator=gen)
    ids = torch.cat([prefix.expand(3, -1), torch.randint(3, tok.vocab_size, (3, 6), generator=gen)], dim=1)
    lm = HFStreamingLM(model, tok, chunk_size=9, window=window, sinks=2 if window else 0)
    shared_logits, (cache, _), _ = lm._prefill(ids)
    assert shared_logits.shape[1] == 6 and cache.layers[0].keys.shape[0] == 3
    torch.testing.assert_close(shared_logits[:, -1], lm._stream(ids)[0][:, -1], atol=1e-5, rtol=0)


def test_sinks_stay_visible_to_every_later_query(llama_dir):
    model, tok = load_model(str(llama_dir)), load_tokenizer(str(llama_dir))
    ids = torch.randint(3, tok.vocab_size, (1, 30), generator=torch.Generator().manual_seed(2))
    lm = HFStreamingLM(model, tok, chunk_size=5, window=4, sinks=2)
    _, (_, cached_pos), _ = lm._stream(ids)
    assert cached_pos.tolist() == [0, 1, 27, 28, 29]
    changed = ids.clone()
    changed[0, 0] += 1  # a sink token: the last logits must see it
    assert not torch.allclose(lm._stream(ids)[0][0, -1], lm._stream(changed)[0][0, -1])
    changed = ids.clone()
    changed[0, 5] += 1  # outside the window and not a sink: invisible at the end
    torch.testing.assert_close(lm._stream(ids)[0][0, -1], lm._stream(changed)[0][0, -1])


@pytest.mark.slow  # 34 s: three CLI runs
def test_cli_runs_a_local_hf_model_with_a_training_free_mechanism(llama_dir, tmp_path):
    done = run(tmp_path, "model=hf", f"model.path={llama_dir}", "mechanism=sliding_window", "mechanism.window=32",
               "task=passkey", "eval.lengths=[200]", "eval.n=2", "task.depths=[0.5]", "sweep_name=hf")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "results" / "hf" / "records.jsonl").open()]
    assert {r["model"] for r in rows} == {f"hf-{llama_dir.name}"}
    assert {r["metric"] for r in rows} == {"exact_match", "digit_accuracy"}
    bad = run(tmp_path, "model=hf", f"model.path={llama_dir}", "mechanism=infini", "model.lora_rank=0",
              "eval.lengths=[200]")
    assert bad.returncode == 2 and "model.lora_rank" in bad.stderr
    missing = run(tmp_path, "model=hf", f"model.path={tmp_path / 'nothing'}")
    assert missing.returncode == 2 and "model.path=" in missing.stderr


def test_our_mechanisms_inside_an_hf_model_reproduce_its_logits(llama_dir, mistral_dir):
    """The weight mapping (grouped K/V heads repeated, RoPE theta) is exact: our `full` inside Llama gives Llama's
    logits, and our `sliding_window` inside Mistral gives transformers' native Mistral sliding window."""
    from transformers import AutoModelForCausalLM

    from bench.models.hf_mechanisms import MechanismLM

    ids = torch.randint(3, 200, (2, 40), generator=torch.Generator().manual_seed(3))
    for folder, mechanism, options in ((llama_dir, "full", {}), (mistral_dir, "sliding_window", {"window": WINDOW})):
        reference_model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
        with torch.no_grad():
            reference = reference_model(ids).logits
            ours = MechanismLM(load_model(str(folder)), mechanism, options).eval()
            torch.testing.assert_close(ours(ids)[0], reference, atol=1e-5, rtol=0)
            first, states = ours(ids[:, :17])  # streamed in two chunks, state carried
            second, _ = ours(ids[:, 17:], states, 17)
            torch.testing.assert_close(torch.cat([first, second], 1), reference, atol=1e-5, rtol=0)


def test_lora_training_moves_only_adapters_and_mechanism_parameters(llama_dir):
    from bench.models.hf_mechanisms import MechanismLM, add_lora

    model = MechanismLM(load_model(str(llama_dir)), "infini", {"segment": 8})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = add_lora(model, rank=4, alpha=8)
    assert trainable and all("lora_" in n or n.endswith(".gate") for n in trainable)
    assert any(n.endswith(".gate") for n in trainable)  # Infini's gates train with the adapters
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(3, 200, (2, 33), generator=torch.Generator().manual_seed(4))
    for _ in range(3):
        logits, _ = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = dict(model.named_parameters())
    for name, value in before.items():
        base = name.replace("qkv.weight", "qkv.base_layer.weight").replace("out.weight", "out.base_layer.weight")
        moved = not torch.equal(after[base if base in after else name], value)
        assert moved == name.endswith(".gate"), name
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in after.items() if "lora_B" in n)


@pytest.mark.slow  # 31 s: LoRA training through the CLI, twice
def test_cli_trains_infini_into_an_hf_model_with_lora(llama_dir, tmp_path):
    overrides = ["model=hf", f"model.path={llama_dir}", "model.lora_rank=4", "mechanism=infini",
                 "mechanism.segment=16", "task=passkey", "train.steps=2", "train.batch_size=2",
                 "train.train_length=256", "train.warmup_steps=1", "eval.lengths=[200]", "eval.n=2",
                 "task.depths=[0.5]", "sweep_name=hf"]
    done = run(tmp_path, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "results" / "hf" / "records.jsonl").open()]
    assert {r["model"] for r in rows} == {f"hf-{llama_dir.name}-lora4-2"}
    assert "gate_memory_weight" in {r["metric"] for r in rows}
    assert list((tmp_path / "cache" / "checkpoints").glob("hf-*.pt"))
    again = run(tmp_path, *overrides, "force=true")
    assert again.returncode == 0 and "cached checkpoint" in again.stdout + again.stderr


def test_weights_lora_trains_peft_default_adapters_on_an_hf_reader_and_leaves_its_weights(llama_dir):
    """Memory in the weights on a pretrained model: peft picks the architecture's LoRA targets (Llama: q_proj,
    v_proj), test-time training moves only them, and a fresh context starts from the unchanged model."""
    from mechanisms.weights_lora import WeightsLoRA

    model, tok = load_model(str(llama_dir)), load_tokenizer(str(llama_dir))
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(3, tok.vocab_size, (60,), generator=torch.Generator().manual_seed(2)).tolist()
    reader = HFStreamingLM(model, tok, chunk_size=16)
    untouched = reader.loglikelihood(ids[:4] + ids[-8:], ids[10:14])
    m = WeightsLoRA(reader, steps=4, lr=1e-2, keep_prefix=4, question_tokens=8)
    assert {n.split(".")[-4] for n in m.adapters} == {"q_proj", "v_proj"}
    adapted = m.loglikelihood(ids, ids[10:14])
    assert adapted[0] != untouched[0]
    after = {n.replace(".base_layer", ""): p for n, p in model.named_parameters() if "lora_" not in n}
    assert after.keys() == base.keys() and all(torch.equal(after[n], p) for n, p in base.items())
    assert WeightsLoRA(reader, steps=0, keep_prefix=4, question_tokens=8).loglikelihood(ids, ids[10:14]) == untouched
