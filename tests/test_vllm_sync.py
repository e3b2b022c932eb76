"""vLLM weight sync of the RL trainers (trl_ext.trainers.vllm_sync), on CPU with a fake vLLM engine.

vLLM is not installed here (it needs CUDA). TRL's real ``VLLMGeneration`` is built with ``is_vllm_available``,
``LLM``, ``SamplingParams`` and ``VLLMClient`` of ``trl.generation.vllm_generation`` replaced by fakes that behave like
vLLM where it matters: the engine model is the plain (unquantized) transformers model loaded from the checkpoint,
``load_weights`` rejects unknown names and wrong shapes (as vLLM's ``AutoWeightsLoader`` / ``default_weight_loader``
do), and generation samples from the loaded weights with processed (temperature-scaled) log-probs. Weight syncs run
through TRL's own ``VLLMGeneration.sync_weights`` (colocate: ``llm.llm_engine.model_executor.driver_worker.
model_runner.model.load_weights``; server: ``VLLMClient.update_named_params`` with the metadata pass).

Checked: under QLoRA the 4-bit base stays bit-identical, every synced weight equals dequantized base + LoRA delta (a
reference merged the normal way in fp32), names are the plain model's, no adapter names leak; TRL's stock stream is
packed uint8 that the engine rejects; unquantized PEFT models keep TRL's stream; the synced weights reproduce the
training forward (also after bitsandbytes' CPU repacking); RFTTrainer and ProcessGRPOTrainer train with
use_vllm in colocate and server modes, the engine sampling with exactly the policy (sampling log-prob gap ≈ 0).
"""

import copy
import warnings
from types import SimpleNamespace

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig  # noqa: E402

from trl_ext.models.value_head import ValueHead, attach_value_head  # noqa: E402
from trl_ext.trainers.vllm_sync import install_vllm_weight_sync, iter_vllm_weights  # noqa: E402

from helpers import char_variety, grpo_args, nf4_config, prompt_dataset  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"]  # down_proj stays 4-bit without LoRA


# ----------------------------------------------------------------------------------------------------------------------
# A fake vLLM: engine = the plain model from the checkpoint; load_weights as strict as vLLM's
# ----------------------------------------------------------------------------------------------------------------------


class FakeEngineModel:
    """``model_runner.model`` of a vLLM engine serving the checkpoint unquantized."""

    def __init__(self, path):
        self.hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.loaded = []  # every (name, tensor) received, in order

    def load_weights(self, weights):
        params = dict(self.hf.named_parameters())
        for name, tensor in weights:
            self.loaded.append((name, tensor.detach().clone()))
            if self.hf.config.tie_word_embeddings and name.startswith("lm_head."):
                continue  # vLLM's Llama skips it when the embeddings are tied
            if name not in params:
                raise ValueError(f"There is no module or parameter named {name!r} in {type(self.hf).__name__}")
            if tuple(tensor.shape) != tuple(params[name].shape) or not tensor.is_floating_point():
                raise ValueError(
                    f"{name}: cannot load a {tensor.dtype} tensor of shape {tuple(tensor.shape)} into a parameter of "
                    f"shape {tuple(params[name].shape)}"
                )
            with torch.no_grad():
                params[name].copy_(tensor)

    @torch.no_grad()
    def sample(self, prompt_ids, max_tokens, temperature, seed):
        generator = torch.Generator().manual_seed(seed)
        eos = self.hf.generation_config.eos_token_id
        eos = set([eos] if isinstance(eos, int) else eos or [])
        out, logprobs, past, step_ids = [], [], None, list(prompt_ids)
        for _ in range(max_tokens):
            result = self.hf(torch.tensor([step_ids]), past_key_values=past, use_cache=True, logits_to_keep=1)
            past = result.past_key_values
            logp = (result.logits[0, -1].float() / temperature).log_softmax(-1)
            token = int(torch.multinomial(logp.exp(), 1, generator=generator))
            out.append(token)
            logprobs.append(float(logp[token]))
            step_ids = [token]
            if token in eos:
                break
        return out, logprobs


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class FakeLLM:
    """``vllm.LLM`` in colocate mode."""

    instances = []

    def __init__(self, model, quantization=None, **kwargs):
        self.kwargs = dict(model=model, quantization=quantization, **kwargs)
        self.engine = FakeEngineModel(model)
        runner = SimpleNamespace(model=self.engine)
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner)),
            model_config=SimpleNamespace(max_model_len=1024),
        )
        self.prefix_cache_resets = 0
        self.generate_calls = 0
        FakeLLM.instances.append(self)

    def reset_prefix_cache(self):
        self.prefix_cache_resets += 1

    def generate(self, prompts, sampling_params, use_tqdm=False):
        self.generate_calls += 1
        outputs = []
        for i, prompt in enumerate(prompts):
            ids = prompt["prompt_token_ids"]
            completion, logprobs = self.engine.sample(
                ids, sampling_params.max_tokens, sampling_params.temperature, seed=1000 * self.generate_calls + i
            )
            lps = [{t: SimpleNamespace(logprob=lp, rank=1)} for t, lp in zip(completion, logprobs)]
            outputs.append(
                SimpleNamespace(prompt_token_ids=ids, outputs=[SimpleNamespace(token_ids=completion, logprobs=lps)])
            )
        return outputs


class FakeVLLMClient:
    """``trl.generation.vllm_client.VLLMClient`` talking to a ``trl vllm-serve`` of the unquantized checkpoint."""

    instances = []
    model_path = None

    def __init__(self, base_url=None, group_port=51216, connection_timeout=0.0):
        self.engine = FakeEngineModel(FakeVLLMClient.model_path)
        self.metadata = None
        self.generate_calls = 0
        FakeVLLMClient.instances.append(self)

    def init_communicator(self, device=None):
        pass

    def close_communicator(self):
        pass

    def get_server_info(self):
        return {"model_config": {"logprobs_mode": "processed_logprobs"}}

    def update_named_params(self, metadata, named_params):
        self.metadata = list(metadata)
        received = []
        for (name, dtype_name, shape), (streamed_name, tensor) in zip(metadata, named_params, strict=True):
            announced = (streamed_name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape))
            assert announced == (name, dtype_name, shape), f"stream does not match the metadata: {announced}"
            buffer = torch.empty(shape, dtype=getattr(torch, dtype_name))  # what the server allocates and receives
            buffer.copy_(tensor)
            received.append((name, buffer))
        self.engine.load_weights(received)

    def reset_prefix_cache(self):
        pass

    def generate(self, prompts, features=None, n=1, temperature=1.0, max_tokens=16, **kwargs):
        self.generate_calls += 1
        completion_ids, logprobs = [], []
        for i, ids in enumerate(prompts):
            for j in range(n):
                seed = 1000 * self.generate_calls + 10 * i + j
                out, lps = self.engine.sample(ids, max_tokens, temperature, seed=seed)
                completion_ids.append(out)
                logprobs.append([[lp] for lp in lps])
        return {
            "prompt_ids": prompts,
            "completion_ids": completion_ids,
            "logprobs": logprobs,
            "logprob_token_ids": [[[t] for t in c] for c in completion_ids],
        }


@pytest.fixture
def fake_vllm(monkeypatch, tiny_model_path):
    import trl.generation.vllm_generation as vllm_generation

    monkeypatch.setattr(vllm_generation, "is_vllm_available", lambda: True)
    monkeypatch.setattr(vllm_generation, "LLM", FakeLLM, raising=False)
    monkeypatch.setattr(vllm_generation, "SamplingParams", FakeSamplingParams, raising=False)
    monkeypatch.setattr(vllm_generation, "VLLMClient", FakeVLLMClient)
    # TRL's colocate set-up writes these into os.environ; monkeypatch restores them afterwards
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                       ("MASTER_PORT", "29533")):
        monkeypatch.setenv(key, value)
    FakeLLM.instances.clear()
    FakeVLLMClient.instances.clear()
    FakeVLLMClient.model_path = tiny_model_path
    return SimpleNamespace(llm=FakeLLM, client=FakeVLLMClient)


def _vllm_generation(model, tokenizer, mode):
    """TRL's real ``VLLMGeneration`` (with the fakes above) for ``model``."""
    from accelerate import Accelerator
    from trl.generation.vllm_generation import VLLMGeneration

    return VLLMGeneration(model=model, accelerator=Accelerator(cpu=True), processing_class=tokenizer, mode=mode)


def _engine(generation):
    return generation.llm.llm_engine.model_executor.driver_worker.model_runner.model if generation.mode == "colocate" \
        else generation.vllm_client.engine


# ----------------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------------


def _quantization(kind):
    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return nf4_config(bnb_4bit_use_double_quant=True)


def _peft_model(path, kind="nf4", use_dora=False, seed=0):
    """Tiny Llama (quantized unless ``kind`` is None) + LoRA on TARGETS with a non-zero B, and the RMSNorms as trained
    ``modules_to_save`` copies that differ from the originals."""
    quantization = None if kind is None else _quantization(kind)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, quantization_config=quantization,
                                                 device_map="cpu" if quantization else None)
    torch.manual_seed(seed)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False,
                                             use_dora=use_dora, modules_to_save=["norm"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
            if "modules_to_save" in name:
                param.add_(torch.randn_like(param), alpha=0.1)
    return model


def _quantized_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))}


def _snapshot(model):
    """Every byte that defines the quantized base: parameter objects, packed codes, scales (nested ones too)."""
    snap = {}
    for name, module in _quantized_layers(model).items():
        weight = module.weight
        tensors = [weight.data.clone()]
        state = getattr(weight, "quant_state", None)
        if state is not None:
            tensors.append(state.absmax.clone())
            if state.nested:
                tensors += [state.state2.absmax.clone(), state.offset.clone()]
        if getattr(weight, "SCB", None) is not None:
            tensors.append(weight.SCB.clone())
        snap[name] = (weight, tensors)
    return snap


def _assert_unchanged(model, snap):
    for name, module in _quantized_layers(model).items():
        weight, tensors = snap[name]
        assert module.weight is weight, f"{name}: the quantized parameter was replaced"
        now = _snapshot(model)[name][1]
        assert len(now) == len(tensors)
        for a, b in zip(tensors, now):
            assert a.dtype == b.dtype and torch.equal(a, b), f"{name}: quantized base changed"


def _dequantized(module):
    """Reference dequantization, straight from bitsandbytes."""
    weight = module.weight
    if isinstance(module, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()
    return bnb.functional.int8_vectorwise_dequant(weight.data, weight.SCB).float()


def _reference_merged(path, model):
    """fp32 plain model with the dequantized base, the same adapter merged the normal way (peft merge_and_unload)."""
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        for name, module in _quantized_layers(model.get_base_model()).items():
            ref.get_submodule(name.removesuffix(".base_layer")).weight.copy_(_dequantized(module))
    ref = get_peft_model(ref, copy.deepcopy(model.peft_config["default"]))
    set_peft_model_state_dict(ref, get_peft_model_state_dict(model))
    return ref.merge_and_unload()


def _plain_names(path):
    plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return [n for n, _ in plain.named_parameters()], set(plain.state_dict())


# ----------------------------------------------------------------------------------------------------------------------
# The sync itself
# ----------------------------------------------------------------------------------------------------------------------


def test_trl_stock_sync_of_qlora_streams_packed_codes_and_moves_the_base(tiny_model_path, tokenizer, fake_vllm):
    """Why the hook exists: TRL 1.16's merge/stream/unmerge on a 4-bit PEFT model, as measured on CPU."""
    model = _peft_model(tiny_model_path)
    generation = _vllm_generation(model, tokenizer, "server")  # no hook installed: TRL's own iterator
    snap = _snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        streamed = [(n, t.dtype, tuple(t.shape)) for n, t in generation._iter_named_params()]
    q_proj = dict((n, (d, s)) for n, d, s in streamed)["model.layers.0.self_attn.q_proj.weight"]
    assert q_proj == (torch.uint8, (64 * 64 // 2, 1)), q_proj  # packed 4-bit codes, not a (64, 64) float weight
    with pytest.raises(AssertionError, match="quantized"):  # merge + unmerge re-quantized (replaced) the frozen base
        _assert_unchanged(model, snap)
    with warnings.catch_warnings(), pytest.raises(ValueError, match="q_proj.weight: cannot load a torch.uint8"):
        warnings.simplefilter("ignore")
        generation.sync_weights()  # the full-precision server model cannot take them


@pytest.mark.parametrize("mode,kind", [("colocate", "nf4"), ("server", "nf4"), ("server", "int8")])
def test_quantized_sync_is_dequantized_base_plus_lora(tiny_model_path, tokenizer, fake_vllm, mode, kind):
    model = _peft_model(tiny_model_path, kind)
    generation = _vllm_generation(model, tokenizer, mode)
    assert install_vllm_weight_sync(SimpleNamespace(vllm_generation=generation))
    snap = _snapshot(model)
    reference = _reference_merged(tiny_model_path, model).state_dict()

    generation.sync_weights()  # TRL's own sync_weights, now streaming iter_vllm_weights
    generation.sync_weights()  # a second sync sees the same base
    loaded = _engine(generation).loaded
    names = [n for n, _ in loaded]
    half = len(names) // 2
    assert names[:half] == names[half:]
    synced = dict(loaded[:half])

    # (a) the quantized base is bit-identical (same parameter objects, codes and scales)
    _assert_unchanged(model, snap)
    # (c) exactly the plain model's parameters (tied lm_head once, as named_parameters() and TRL's sync give them)
    plain_names, plain_state_dict = _plain_names(tiny_model_path)
    assert names[:half] == plain_names and set(names) <= plain_state_dict
    # (d) nothing of PEFT leaks
    assert not [n for n in names if any(s in n for s in ("lora_", "base_layer", "modules_to_save", "base_model"))]
    # (b) W = dequant(W_base) + scaling·B@A, as a normal fp32 merge of the same adapter on the same dequantized base
    lora_weights = [n for n in names[:half] if any(f"{t}.weight" in n for t in TARGETS)]
    assert len(lora_weights) == 2 * len(TARGETS)
    for name, tensor in synced.items():
        assert tensor.dtype == torch.float32, name
        # Both sides compute the same fp32 sum (dequantized base + PEFT's get_delta_weight) → equal to fp32 rounding.
        torch.testing.assert_close(tensor, reference[name], rtol=1e-6, atol=1e-7, msg=name)
    for name in lora_weights:  # and the adapter really is in there
        base = _dequantized(_quantized_layers(model)[f"base_model.model.{name.removesuffix('.weight')}.base_layer"])
        assert (synced[name] - base).abs().max() > 1e-3, name
    norms = [n for n in names[:half] if "norm" in n]
    assert len(norms) == 5 and all(not torch.equal(synced[n], torch.ones_like(synced[n])) for n in norms)  # copies
    # the engine serves exactly the reference model
    engine = _engine(generation).hf
    ids = torch.tensor([tokenizer("Compute 3*5.")["input_ids"]])
    with torch.no_grad():
        ref_model = _reference_merged(tiny_model_path, model)
        torch.testing.assert_close(engine(ids).logits, ref_model(ids).logits, rtol=1e-5, atol=1e-5)
    if mode == "server":
        assert [m[0] for m in generation.vllm_client.metadata] == names[:half]


def test_synced_weights_reproduce_the_training_forward(tiny_model_path):
    """``F.linear(x, W_synced)`` equals each layer's own (training) forward, LoRA over 4-bit and 4-bit alone;
    and after bitsandbytes repacked its 4-bit weights for the CPU kernel (what an eval no-grad forward on an
    AVX512-BF16 CPU does, bf16 block scales) the sync still decodes them — PEFT's merge would decode garbage."""
    model = _peft_model(tiny_model_path).train()
    snap = _snapshot(model)
    synced = dict(iter_vllm_weights(model))
    _assert_unchanged(model, snap)
    layers = {n: m for n, m in model.get_base_model().named_modules() if n.endswith(("q_proj", "down_proj"))}
    assert len(layers) == 4  # 2 × (LoRA over 4-bit, 4-bit alone)
    with torch.no_grad():
        for name, module in layers.items():
            inputs = torch.randn(3, module.in_features)
            got = torch.nn.functional.linear(inputs, synced[f"{name}.weight"])
            # the same fp32 math up to summation order (bnb dequantizes to fp32, LoRA adds x·Aᵀ·Bᵀ·s)
            torch.testing.assert_close(got, module(inputs), rtol=1e-4, atol=1e-5, msg=name)

    model.eval()
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3, 4, 5]]))  # repacks on an AVX512-BF16 CPU, a no-op elsewhere
    snap = _snapshot(model)
    repacked = dict(iter_vllm_weights(model))
    _assert_unchanged(model, snap)
    for name, tensor in synced.items():
        # only the block scales were rounded to bf16 by the repacking: each base element moves by ≤ 2⁻⁹ of itself,
        # so the weight by ≤ 2⁻⁹ in norm (2⁻⁸ leaves a margin); a mis-decoded layout would be off by ~100 %
        error = ((repacked[name] - tensor).norm() / tensor.norm()).item()
        assert error < 2**-8, (name, error)


def test_unquantized_peft_model_keeps_trls_sync(tiny_model_path, tokenizer, fake_vllm, monkeypatch):
    from trl.generation.vllm_generation import VLLMGeneration

    model = _peft_model(tiny_model_path, kind=None)
    generation = _vllm_generation(model, tokenizer, "colocate")
    assert install_vllm_weight_sync(SimpleNamespace(vllm_generation=generation))
    merges = []
    original_merge = model.merge_adapter
    monkeypatch.setattr(model, "merge_adapter", lambda *a, **k: (merges.append(1), original_merge(*a, **k))[1])

    ours = [(n, t.clone()) for n, t in generation._iter_named_params()]
    trls = [(n, t.clone()) for n, t in VLLMGeneration._iter_named_params(generation)]
    assert len(merges) == 2  # TRL's merge_adapter path ran both times
    assert [n for n, _ in ours] == [n for n, _ in trls]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(ours, trls))

    # an attached value head (RFTTrainer's critic) is the only thing left out: vLLM rejects unknown names
    attach_value_head(model, ValueHead(64))
    with_head = [n for n, _ in VLLMGeneration._iter_named_params(generation)]
    assert "value_head.summary.weight" in with_head
    assert [n for n, _ in generation._iter_named_params()] == [n for n in with_head if not n.startswith("value_head.")]
    generation.sync_weights()  # the strict fake engine accepts everything


def test_quantized_sync_errors_at_construction(tiny_model_path, tokenizer, fake_vllm):
    from peft import IA3Config

    model = _peft_model(tiny_model_path)
    generation = _vllm_generation(model, tokenizer, "server")
    generation._dist = SimpleNamespace(is_fsdp=True, is_zero3=False)
    with pytest.raises(ValueError, match="sharded parameters"):
        install_vllm_weight_sync(SimpleNamespace(vllm_generation=generation))

    base = AutoModelForCausalLM.from_pretrained(tiny_model_path, quantization_config=_quantization("nf4"),
                                                device_map="cpu")
    ia3 = get_peft_model(base, IA3Config(target_modules=["q_proj", "down_proj"], feedforward_modules=["down_proj"]))
    generation = _vllm_generation(ia3, tokenizer, "server")
    with pytest.raises(ValueError, match="only LoRA adapters"):
        install_vllm_weight_sync(SimpleNamespace(vllm_generation=generation))

    dora = _peft_model(tiny_model_path, use_dora=True)
    generation = _vllm_generation(dora, tokenizer, "colocate")
    with pytest.raises(ValueError, match="DoraLinearVariant.*use_dora"):
        install_vllm_weight_sync(SimpleNamespace(vllm_generation=generation))


# ----------------------------------------------------------------------------------------------------------------------
# The trainers with use_vllm=True
# ----------------------------------------------------------------------------------------------------------------------


def _dataset():
    return prompt_dataset(2)


def _common_args(tmp_path, mode):
    return grpo_args(tmp_path, max_steps=2, learning_rate=1e-2, use_vllm=True, vllm_mode=mode)


def _assert_engine_sampled_the_policy(trainer, engine, n_steps):
    # vLLM's sampling log-probs vs the trainer's recomputed ones (TRL logs the max gap per step): ≈ 0 only if the
    # engine holds the policy's weights at every step (after step 1 the LoRA delta is non-zero). Measured: ≤ 2.2e-4
    # with the sync (the trainer runs its LoRA branch in bf16 under QLoRA, the engine a fp32 merged weight),
    # 0.09–0.19 when the engine keeps step-1 weights (sync skipped).
    gaps = [e["sampling/sampling_logp_difference/max"] for e in trainer.state.log_history
            if "sampling/sampling_logp_difference/max" in e]
    assert len(gaps) == n_steps and max(gaps) < 1e-3, gaps
    names = [n for n, _ in engine.loaded]
    assert names and not [n for n in names if "value_head" in n or "lora_" in n or "base_layer" in n]


def _train_two_steps_through(trainer, engine):
    """Train (2 steps): the quantized base stays as it was, the fake engine generated twice and sampled the policy
    of each step (the weights synced to it)."""
    snap = _snapshot(trainer.model)
    trainer.train()
    _assert_unchanged(trainer.model, snap)
    assert engine.generate_calls == 2
    _assert_engine_sampled_the_policy(trainer, engine.engine, n_steps=2)


@pytest.mark.parametrize("mode,quantized", [("colocate", True), ("server", False)])
def test_rft_trains_with_vllm(tiny_model_path, tmp_path, fake_vllm, mode, quantized):
    from trl_ext.trainers.rft import RFTConfig, RFTTrainer

    trainer = RFTTrainer(
        model=tiny_model_path, reward_funcs=char_variety, train_dataset=_dataset(),
        args=RFTConfig(**_common_args(tmp_path, mode)),
        quantization_config=_quantization("nf4") if quantized else None,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS) if quantized else None,
    )
    if mode == "colocate":
        engine = fake_vllm.llm.instances[-1]
        # TRL asks for in-flight bitsandbytes quantization; the engine must take full-precision weights instead
        assert engine.kwargs["quantization"] is None and engine.kwargs["model"] == tiny_model_path
    else:
        engine = fake_vllm.client.instances[-1]
    _train_two_steps_through(trainer, engine)
    assert all("vf_loss" in e for e in trainer.state.log_history if "loss" in e)


def test_process_grpo_trains_with_qlora_and_vllm_server(tiny_model_path, tmp_path, fake_vllm):
    from trl_ext.rewards.process import ArithmeticStepVerifier
    from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer

    trainer = ProcessGRPOTrainer(
        model=tiny_model_path, reward_funcs=[char_variety], process_reward_funcs=[ArithmeticStepVerifier()],
        args=ProcessGRPOConfig(**_common_args(tmp_path, "server"), num_generations=4, step_separator=" "),
        train_dataset=_dataset(), quantization_config=_quantization("nf4"),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )
    _train_two_steps_through(trainer, fake_vllm.client.instances[-1])
    assert any("process/steps_per_completion" in e for e in trainer.state.log_history)
