"""The architectures sftlab writes as GGUF: their hyperparameters under llama.cpp's keys, and their tensors under
llama.cpp's names and layouts (gguf's own name map; Llama's q/k rows reordered for llama.cpp's RoPE, GPT-2's
Conv1D weights transposed; a tied output head not written, llama.cpp reuses the embeddings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from sftlab.errors import SftlabError

# model_type (config.json) → llama.cpp architecture
SUPPORTED = {"llama": "llama", "qwen2": "qwen2", "gpt2": "gpt2"}
SUPPORTED_TEXT = "llama (SmolLM2, Llama 2, Llama 3), qwen2 (Qwen2, Qwen2.5) and gpt2"


def check_architecture(config: dict[str, Any], where: str) -> str:
    """The llama.cpp architecture of a config.json, or one sentence naming the supported ones."""
    model_type = config.get("model_type")
    if model_type not in SUPPORTED:
        names = ", ".join(config.get("architectures") or []) or "unknown"
        raise SftlabError(f"{where}: sftlab cannot write a '{model_type}' model ({names}) as GGUF; it writes "
                          f"{SUPPORTED_TEXT}. Export it with --format safetensors and convert that folder with "
                          "llama.cpp's convert_hf_to_gguf.py")
    rope = _rope(config)
    if rope.get("rope_type", "default") not in ("default", "linear", None):
        raise SftlabError(f"{where}: RoPE scaling '{rope.get('rope_type')}' is not written by sftlab's GGUF export "
                          "(only none and linear); convert the model with llama.cpp's convert_hf_to_gguf.py")
    return SUPPORTED[model_type]


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    # transformers 5 writes rope_parameters (with rope_theta inside); older configs rope_scaling + rope_theta
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    return params


@dataclass
class Tensor:
    name: str
    data: np.ndarray  # float32


def hyperparameters(arch: str, config: dict[str, Any], rows: int) -> list[tuple[str, Any]]:
    """(GGUFWriter method, value) for everything llama.cpp reads besides the vocabulary and the tensors."""
    def add(method: str, value: Any) -> tuple[str, Any]:
        return (method, value)

    if arch == "gpt2":
        n_embd = config["n_embd"]
        return [add("add_context_length", config["n_positions"]), add("add_embedding_length", n_embd),
                add("add_feed_forward_length", config.get("n_inner") or 4 * n_embd),
                add("add_block_count", config["n_layer"]), add("add_head_count", config["n_head"]),
                add("add_layer_norm_eps", config["layer_norm_epsilon"]), add("add_vocab_size", rows)]
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    rope = _rope(config)
    out = [add("add_context_length", config["max_position_embeddings"]), add("add_embedding_length", hidden),
           add("add_feed_forward_length", config["intermediate_size"]),
           add("add_block_count", config["num_hidden_layers"]), add("add_head_count", heads),
           add("add_head_count_kv", config.get("num_key_value_heads") or heads),
           add("add_rope_freq_base", float(rope["rope_theta"])),
           add("add_layer_norm_rms_eps", config["rms_norm_eps"]), add("add_rope_dimension_count", head_dim),
           add("add_vocab_size", rows)]
    if head_dim != hidden // heads:
        out += [add("add_key_length", head_dim), add("add_value_length", head_dim)]
    if rope.get("rope_type") == "linear":
        import gguf

        out += [add("add_rope_scaling_type", gguf.RopeScalingType.LINEAR),
                add("add_rope_scaling_factor", float(rope["factor"]))]
    return out


def gguf_tensors(arch: str, model: Any) -> Iterator[Tensor]:
    """The model's tensors as llama.cpp names and lays them out, in float32."""
    import gguf

    config = model.config
    blocks = config.n_layer if arch == "gpt2" else config.num_hidden_layers
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), blocks)
    tied = _tied(model)
    for hf_name, value in model.state_dict().items():
        if hf_name.endswith((".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")):
            continue  # buffers, not weights
        if tied and hf_name == "lm_head.weight":
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise SftlabError(f"the model has a tensor '{hf_name}' that llama.cpp's {arch} architecture has no place "
                              "for; convert it with llama.cpp's convert_hf_to_gguf.py")
        data = value.detach().float().cpu().numpy()
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, config.num_attention_heads)
        elif arch == "llama" and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, config.num_key_value_heads or config.num_attention_heads)
        elif arch == "gpt2" and hf_name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            data = data.T  # Conv1D stores (in, out)
        yield Tensor(name, np.ascontiguousarray(data))


def _tied(model: Any) -> bool:
    head = model.get_output_embeddings()
    return head is not None and head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """HF Llama rotates the two halves of each head (rotate_half); llama.cpp's Llama RoPE rotates adjacent
    pairs. Reorder each head's rows from [x0..x(d/2-1), y0..] to [x0, y0, x1, y1, …]."""
    shape = weights.shape
    return weights.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
