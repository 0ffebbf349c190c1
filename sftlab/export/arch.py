"""The architectures sftlab writes as GGUF, one record each (the way llama.cpp's converter registers one class per
architecture): its config.json model_type and llama.cpp name, its hyperparameters under llama.cpp's keys, what its
tensors need to be in llama.cpp's layout (gguf's own name map; Llama's q/k rows reordered for llama.cpp's RoPE,
GPT-2's Conv1D weights transposed; a tied output head is not written, llama.cpp reuses the embeddings), and what
verification needs to know of it. Adding one is one record in ARCHITECTURES and its functions
(CONTRIBUTING.md, "An export architecture")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from sftlab.errors import SftlabError

Hyperparameters = Callable[[dict[str, Any], int], list[tuple[str, Any]]]
TensorLayout = Callable[[str, np.ndarray, Any], np.ndarray]


@dataclass(frozen=True)
class Architecture:
    model_type: str  # config.json's model_type
    name: str  # llama.cpp's architecture (general.architecture, the prefix of its keys)
    examples: str  # the models it covers ("" when its name says it), for the sentence that refuses another
    block_count: str  # the config.json key of the number of decoder blocks
    # config.json (a dict) and the vocabulary's rows → (GGUFWriter method, value) for everything llama.cpp reads
    # besides the vocabulary and the tensors.
    hyperparameters: Hyperparameters
    # (HF tensor name, float32 data, the model's config) → the data as llama.cpp lays it out.
    layout: TensorLayout = lambda name, data, config: data
    # Options transformers' GGUF reader needs to load the file back as the source model (context length → kwargs).
    reader_options: Callable[[int], dict[str, Any]] = field(default=lambda context: {})


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    # transformers 5 writes rope_parameters (with rope_theta inside); older configs rope_scaling + rope_theta
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    return params


def _llama_like(config: dict[str, Any], rows: int) -> list[tuple[str, Any]]:
    """Llama and Qwen2: RMSNorm, RoPE, grouped-query attention."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    rope = _rope(config)
    out = [("add_context_length", config["max_position_embeddings"]), ("add_embedding_length", hidden),
           ("add_feed_forward_length", config["intermediate_size"]),
           ("add_block_count", config["num_hidden_layers"]), ("add_head_count", heads),
           ("add_head_count_kv", config.get("num_key_value_heads") or heads),
           ("add_rope_freq_base", float(rope["rope_theta"])),
           ("add_layer_norm_rms_eps", config["rms_norm_eps"]), ("add_rope_dimension_count", head_dim),
           ("add_vocab_size", rows)]
    if head_dim != hidden // heads:
        out += [("add_key_length", head_dim), ("add_value_length", head_dim)]
    if rope.get("rope_type") == "linear":
        import gguf

        out += [("add_rope_scaling_type", gguf.RopeScalingType.LINEAR),
                ("add_rope_scaling_factor", float(rope["factor"]))]
    return out


def _llama_layout(name: str, data: np.ndarray, config: Any) -> np.ndarray:
    if name.endswith(("q_proj.weight", "q_proj.bias")):
        return _permute(data, config.num_attention_heads)
    if name.endswith(("k_proj.weight", "k_proj.bias")):
        return _permute(data, config.num_key_value_heads or config.num_attention_heads)
    return data


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """HF Llama rotates the two halves of each head (rotate_half); llama.cpp's Llama RoPE rotates adjacent
    pairs. Reorder each head's rows from [x0..x(d/2-1), y0..] to [x0, y0, x1, y1, …]."""
    shape = weights.shape
    return weights.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _gpt2(config: dict[str, Any], rows: int) -> list[tuple[str, Any]]:
    n_embd = config["n_embd"]
    return [("add_context_length", config["n_positions"]), ("add_embedding_length", n_embd),
            ("add_feed_forward_length", config.get("n_inner") or 4 * n_embd),
            ("add_block_count", config["n_layer"]), ("add_head_count", config["n_head"]),
            ("add_layer_norm_eps", config["layer_norm_epsilon"]), ("add_vocab_size", rows)]


def _gpt2_layout(name: str, data: np.ndarray, config: Any) -> np.ndarray:
    if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
        return data.T  # Conv1D stores (in, out)
    return data


ARCHITECTURES: dict[str, Architecture] = {a.model_type: a for a in (
    Architecture("llama", "llama", "SmolLM2, Llama 2, Llama 3", "num_hidden_layers", _llama_like, _llama_layout),
    # (Qwen2's RoPE rotates halves in llama.cpp too: no reordering)
    Architecture("qwen2", "qwen2", "Qwen2, Qwen2.5", "num_hidden_layers", _llama_like),
    # (transformers' GGUF reader leaves GPT-2's context at 1024)
    Architecture("gpt2", "gpt2", "", "n_layer", _gpt2, _gpt2_layout,
                 reader_options=lambda context: {"n_positions": context}),
)}


def check_architecture(config: dict[str, Any], where: str) -> Architecture:
    """The architecture of a config.json, or one sentence naming the supported ones."""
    arch = ARCHITECTURES.get(config.get("model_type"))  # type: ignore[arg-type]
    if arch is None:
        names = ", ".join(config.get("architectures") or []) or "unknown"
        each = [f"{a.model_type} ({a.examples})" if a.examples else a.model_type for a in ARCHITECTURES.values()]
        supported = " and ".join([", ".join(each[:-1]), each[-1]] if len(each) > 1 else each)
        raise SftlabError(f"{where}: sftlab cannot write a '{config.get('model_type')}' model ({names}) as GGUF; it "
                          f"writes {supported}. Export it with --format safetensors and convert that folder with "
                          "llama.cpp's convert_hf_to_gguf.py")
    rope = _rope(config)
    if rope.get("rope_type", "default") not in ("default", "linear", None):
        raise SftlabError(f"{where}: RoPE scaling '{rope.get('rope_type')}' is not written by sftlab's GGUF export "
                          "(only none and linear); convert the model with llama.cpp's convert_hf_to_gguf.py")
    return arch


@dataclass
class Tensor:
    name: str
    data: np.ndarray  # float32


def gguf_tensors(arch: Architecture, model: Any) -> Iterator[Tensor]:
    """The model's tensors as llama.cpp names and lays them out, in float32."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.name.upper()), getattr(config, arch.block_count))
    tied = _tied(model)
    for hf_name, value in model.state_dict().items():
        if hf_name.endswith((".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")):
            continue  # buffers, not weights
        if tied and hf_name == "lm_head.weight":
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise SftlabError(f"the model has a tensor '{hf_name}' that llama.cpp's {arch.name} architecture has no "
                              "place for; convert it with llama.cpp's convert_hf_to_gguf.py")
        data = arch.layout(hf_name, value.detach().float().cpu().numpy(), config)
        yield Tensor(name, np.ascontiguousarray(data))


def _tied(model: Any) -> bool:
    head = model.get_output_embeddings()
    return head is not None and head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
