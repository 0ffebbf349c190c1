"""sftlab export: GGUF files for tiny random models with the real Qwen2, Llama 3, Llama 2 and GPT-2 vocabularies,
read back by gguf and transformers, and (slow, where llama-cpp-python is installed) by llama.cpp itself."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

from helpers import tokenizer

from sftlab.errors import SftlabError

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed (`make gguf`)")

# tokenizer fixture → (architecture, built-in template)
MODELS = {"qwen2": ("qwen2", "qwen"), "llama3": ("llama", "llama3"), "llama2": ("llama", "llama2"),
          "gpt2": ("gpt2", "chatml")}


def build(path: Path, tok_name: str, arch: str, template: str | None, seed: int = 0) -> Path:
    """A tiny random model as sftlab saves a run: the tokenizer with its chat template, and the template's markers
    added as tokens with embedding rows where the vocabulary lacks them (GPT-2 + chatml)."""
    import torch
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    from sftlab.data.templates import builtin_template, resolve_template
    from sftlab.training.tokens import add_chat_tokens, init_new_rows

    tok = copy.deepcopy(tokenizer(tok_name))
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=512, **common))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**small, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**small, **common))
    if template:
        tok.chat_template = builtin_template(template)
        added = add_chat_tokens(tok, resolve_template(None, tok, warn=False))
        if added:
            init_new_rows(model, tok, tok.convert_tokens_to_ids(added))
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            arch, template = MODELS[name]
            made[name] = build(tmp_path_factory.mktemp(name) / "model", name, arch, template)
        return made[name]

    return get


def write(model_dir: Path, out: Path, quant: str = "f32"):
    """The GGUF of a model folder, written without the verification (the tests check what they need)."""
    from sftlab.export.arch import check_architecture
    from sftlab.export.gguf_file import write_gguf
    from sftlab.export.source import load_source, model_config
    from sftlab.export.vocab import build_vocab

    arch = check_architecture(model_config(str(model_dir)), str(model_dir))
    source = load_source(str(model_dir))
    vocab = build_vocab(source.tokenizer, source.rows, source.end_of_turn_id, source.chat)
    write_gguf(out, arch, source.model, vocab, source.chat.source if source.chat else None, quant, "tiny")
    return source, vocab, arch


# --- vocabulary ------------------------------------------------------------------------------------------------


def test_pre_tokenizer_of_each_real_tokenizer():
    from sftlab.export.vocab import pre_tokenizer

    assert [pre_tokenizer(tokenizer(n)) for n in ("qwen2", "llama3", "gpt2")] == ["qwen2", "llama-bpe", "gpt-2"]


def test_unknown_pre_tokenizer_is_refused_not_guessed():
    from tokenizers import pre_tokenizers

    from sftlab.export.vocab import pre_tokenizer

    tok = copy.deepcopy(tokenizer("gpt2"))
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    with pytest.raises(SftlabError, match="pre-tokenizer is not one sftlab knows"):
        pre_tokenizer(tok)


def test_bos_rule_is_the_tokenizers_own():
    from sftlab.export.vocab import bos_eos_rule

    assert {n: bos_eos_rule(tokenizer(n)) for n in MODELS} == {
        "qwen2": (False, False), "llama3": (False, False), "llama2": (True, False), "gpt2": (False, False)}


def test_chat_tokens_of_a_base_model_are_control_tokens_with_rows(tiny):
    from sftlab.export.source import load_source
    from sftlab.export.vocab import CONTROL, UNUSED, build_vocab

    source = load_source(str(tiny("gpt2")))
    vocab = build_vocab(source.tokenizer, source.rows, source.end_of_turn_id)
    im_start, im_end = source.tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert len(vocab.tokens) == source.rows == 50304  # 50257 + 2 chat tokens, rounded up to 64
    assert (vocab.tokens[im_start], vocab.types[im_start], vocab.types[im_end]) == ("<|im_start|>", CONTROL, CONTROL)
    assert vocab.tokens[-1] == "[PAD50303]" and vocab.types[-1] == UNUSED and vocab.padded_rows == 45
    assert vocab.special["eos"] == vocab.special["eot"] == im_end  # the end-of-turn token, not <|endoftext|>


# --- the file --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama2", "gpt2"])
def test_gguf_reads_back_in_gguf_and_transformers(tiny, tmp_path, name):
    """The same logits from the GGUF as from the model (F32): q/k permutation, GPT-2 transposes, tied heads."""
    import torch
    from transformers import AutoModelForCausalLM

    from sftlab.export.verify import read_back

    path = tmp_path / "m.gguf"
    source, vocab, arch = write(tiny(name), path)
    back = read_back(path, arch, source, vocab, source.chat.source)
    assert back["tensors_by_type"]["F32"] == back["tensors"]
    extra = {"n_positions": 512} if arch.name == "gpt2" else {}
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", dtype=torch.float32, **extra)
    ids = torch.tensor([source.tokenizer.encode("Hello world, 你好 🚀")])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, source.model(ids).logits, atol=1e-5)


def test_quantised_types_keep_norms_in_f32():
    import numpy as np

    from sftlab.export.gguf_file import tensor_type

    matrix, norm = np.zeros((64, 64), np.float32), np.zeros(64, np.float32)
    assert tensor_type("blk.0.attn_q.weight", matrix, "q8_0").name == "Q8_0"
    assert tensor_type("blk.0.attn_norm.weight", norm, "q8_0").name == "F32"
    assert tensor_type("token_embd.weight", matrix, "q4_0").name == "Q8_0"
    assert tensor_type("position_embd.weight", matrix, "f16").name == "F32"


# --- Modelfile -------------------------------------------------------------------------------------------------


# (qwen is Qwen2.5's template, whose tool results go in a user turn: no family renders it, Ollama renders the Jinja.)
@pytest.mark.parametrize("template,family", [("chatml", "chatml"), ("qwen", None), ("llama3", "llama3"),
                                             ("llama2", "llama2"), ("phi3", "phi3"), ("alpaca", "alpaca"),
                                             ("plain", "plain")])
def test_go_template_family_of_each_builtin_template(template, family):
    from sftlab.data.templates import resolve_template
    from sftlab.export.modelfile import go_template

    tok = tokenizer("llama2" if template == "llama2" else "qwen2")
    chat = resolve_template(template, tok, warn=False)
    found, go = go_template(chat, tok.bos_token, tok.eos_token, add_bos=template == "llama2")
    assert found == family and (go is None) == (family is None)


def test_custom_template_gets_no_go_template(tmp_path):
    from sftlab.data.templates import resolve_template
    from sftlab.export.modelfile import go_template

    custom = tmp_path / "t.jinja"
    custom.write_text("{% for m in messages %}<<{{ m.role }}>> {{ m.content }}\n{% endfor %}"
                      "{% if add_generation_prompt %}<<assistant>> {% endif %}")
    tok = tokenizer("qwen2")
    assert go_template(resolve_template(str(custom), tok, warn=False), "", "", False) == (None, None)


# --- refusals: one sentence, exit 2, nothing written -----------------------------------------------------------


def _refused(cli, out: Path, *args) -> str:
    result = cli("export", *args, "--out", out)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "error:" in result.stderr
    assert not out.exists() or out.is_file()
    return " ".join(result.stderr.split())


def test_refuses_an_unsupported_architecture(cli, tmp_path):
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    OPTForCausalLM(OPTConfig(vocab_size=64, hidden_size=16, ffn_dim=32, num_hidden_layers=1, num_attention_heads=2,
                             word_embed_proj_dim=16)).save_pretrained(str(tmp_path / "opt"))
    tokenizer("gpt2").save_pretrained(str(tmp_path / "opt"))
    message = _refused(cli, tmp_path / "out", "--model", tmp_path / "opt")
    assert "cannot write a 'opt' model" in message and "convert_hf_to_gguf.py" in message


def test_refuses_a_prompt_tuning_adapter(cli, tmp_path, tiny):
    from safetensors.torch import save_file
    import torch

    adapter = tmp_path / "pt"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "PROMPT_TUNING", "base_model_name_or_path": str(tiny("llama2")), "num_virtual_tokens": 4}))
    save_file({"prompt_embeddings": torch.zeros(4, 64)}, str(adapter / "adapter_model.safetensors"))
    assert "prompt_tuning adapter adds virtual tokens" in _refused(cli, tmp_path / "out", "--model", adapter)


def test_refuses_an_unknown_pre_tokenizer(cli, tmp_path, tiny):
    import shutil

    model = tmp_path / "odd"
    shutil.copytree(tiny("gpt2"), model)
    data = json.loads((model / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, data["pre_tokenizer"]]}
    (model / "tokenizer.json").write_text(json.dumps(data))
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "TokenizersBackend"  # (GPT2Tokenizer would rebuild GPT-2's own pre-tokenizer)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    assert "pre-tokenizer is not one sftlab knows" in _refused(cli, tmp_path / "out", "--model", model)


def test_refuses_an_existing_out_file(cli, tmp_path, tiny):
    out = tmp_path / "taken"
    out.write_text("mine")
    assert "a file of that name exists" in _refused(cli, out, "--model", tiny("llama2"))
    assert out.read_text() == "mine"


def test_refuses_a_k_quant_without_llama_cpp(cli, tmp_path, tiny, monkeypatch):
    import sftlab.export.gguf_file as gguf_file

    monkeypatch.setattr(gguf_file, "llama_cpp_available", lambda: False)
    message = _refused(cli, tmp_path / "out", "--model", tiny("llama2"), "--quant", "q4_k_m")
    assert "needs llama.cpp's quantiser" in message


# --- llama.cpp itself ------------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_llama_cpp
@pytest.mark.parametrize("name", list(MODELS))
def test_llama_cpp_tokenizes_and_renders_as_hugging_face(tiny, tmp_path, name):
    """The fixed text set (English, Chinese, emoji, code, special-token text) and the rendered chat prompts are the
    same in llama.cpp as in transformers, the end-of-turn token ends generation there, and greedy answers (F32)
    are equal token for token."""
    from sftlab.export.verify import llama_cpp_check, reference_answers
    from sftlab.inference.generate import Generator

    path = tmp_path / "m.gguf"
    source, vocab, arch = write(tiny(name), path)
    generator = Generator(source.model, source.tokenizer, source.chat)
    prompts = [generator.prompt_ids([{"role": "user", "content": q}]) for q in ("Who are you?", "你是谁？")]
    expected = reference_answers(generator, prompts, 8)
    report = llama_cpp_check(path, source, vocab, generator, prompts, expected, exact=True, max_new_tokens=8)
    assert report["tokenization"]["equal"] == report["tokenization"]["texts"] >= 10
    assert report["template"]["rendered_equal"] == report["template"]["conversations"]
    assert report["greedy"]["equal"] == 2
    assert source.end_of_turn in report["end_of_generation"]["tokens"]


@pytest.mark.slow
@needs_llama_cpp
def test_export_of_a_base_model_with_chat_tokens(tmp_path, tiny):
    """GPT-2 vocabulary + chatml: <|im_start|>/<|im_end|> single tokens with rows, EOS = <|im_end|>, a Modelfile
    with the ChatML Go template and both stop tokens, and the report's figures (the whole check, short answers)."""
    from sftlab.export.run import export_model

    out = tmp_path / "export"
    result = export_model(str(tiny("gpt2")), out, quant="f16", max_new_tokens=12)
    report = json.loads((out / "export_report.json").read_text())
    assert report["end_of_turn"] == "<|im_end|>" and report["eos_token_id"] == report["eot_token_id"] == 50258
    assert report["pre_tokenizer"] == "gpt-2" and report["padded_rows"] == 45
    llama = report["verification"]["llama_cpp"]
    assert llama["tokenization"]["equal"] == llama["tokenization"]["texts"]
    assert llama["greedy"]["equal"] == 12  # F16: token for token
    assert report["verification"]["transformers"]["top1_agreement"] == 1.0
    assert report["verdict"] == {"status": "pass", "why": "llama.cpp's greedy answers equal the source model's token "
                                                          "for token on 12/12 prompts; f16 must match on all"}
    assert result.summary_lines()[-1] == f"verdict: pass — {report['verdict']['why']}"
    modelfile = (out / "Modelfile").read_text()
    assert f"FROM ./{report['file']}" in modelfile and "<|im_start|>assistant" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and 'PARAMETER stop "<|endoftext|>"' in modelfile
    assert any(line.startswith("llama.cpp: tokenization equal on") for line in result.summary_lines())


@pytest.mark.slow
def test_lora_run_exports_the_tensors_of_merge_then_export(tmp_path, tiny):
    import numpy as np
    import torch
    from gguf import GGUFReader
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from sftlab.export.source import load_source
    from sftlab.training.merge import merge_adapter

    base = tiny("llama2")
    torch.manual_seed(1)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(str(tmp_path / "lora"))
    tokenizer("llama2").save_pretrained(str(tmp_path / "lora"))
    cfg = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(base)
    assert load_source(str(tmp_path / "lora")).merged_adapter

    write(tmp_path / "lora", tmp_path / "a.gguf")
    merge_adapter(tmp_path / "lora", tmp_path / "merged")
    write(tmp_path / "merged", tmp_path / "b.gguf")
    a, b = GGUFReader(str(tmp_path / "a.gguf")), GGUFReader(str(tmp_path / "b.gguf"))
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    assert all(np.array_equal(x.data, y.data) for x, y in zip(a.tensors, b.tensors))
    q = next(t for t in a.tensors if t.name == "blk.0.attn_q.weight")
    base_q = AutoModelForCausalLM.from_pretrained(str(base)).model.layers[0].self_attn.q_proj.weight
    assert not np.allclose(np.sort(q.data.ravel()), np.sort(base_q.detach().numpy().ravel()))  # the adapter is in


@pytest.mark.slow
@needs_llama_cpp
def test_k_quant_lists_the_tensors_that_fell_back(tmp_path, tiny):
    from sftlab.export.verify import k_fallbacks, read_back

    path = tmp_path / "k.gguf"
    source, vocab, arch = write(tiny("llama2"), path, quant="q4_k_m")
    back = read_back(path, arch, source, vocab, source.chat.source)
    fallbacks = k_fallbacks(back["types"])  # a hidden size of 64 is no multiple of 256: every matrix falls back
    assert fallbacks and all(not f["got"].endswith("_K") for f in fallbacks)


@pytest.mark.slow
def test_safetensors_export_is_a_merged_model_folder_that_stops_at_end_of_turn(cli, tmp_path, tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "full"
    result = cli("export", "--model", tiny("gpt2"), "--out", out, "--format", "safetensors")
    assert result.returncode == 0, result.stderr
    tok = AutoTokenizer.from_pretrained(str(out))
    AutoModelForCausalLM.from_pretrained(str(out))
    assert tok.chat_template == tokenizer_template("chatml") and "<|im_end|>" in tok.get_vocab()
    eos = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    assert tok.convert_tokens_to_ids("<|im_end|>") in eos
    assert json.loads((out / "export_report.json").read_text())["verification"]["logits_equal"]


def tokenizer_template(name: str) -> str:
    from sftlab.data.templates import builtin_template

    return builtin_template(name)


def test_an_architecture_is_one_record_and_the_refusal_names_them_all():
    from sftlab.export.arch import ARCHITECTURES, check_architecture

    assert [(a.model_type, a.name, a.block_count) for a in ARCHITECTURES.values()] == [
        ("llama", "llama", "num_hidden_layers"), ("qwen2", "qwen2", "num_hidden_layers"), ("gpt2", "gpt2", "n_layer")]
    with pytest.raises(SftlabError) as e:
        check_architecture({"model_type": "opt", "architectures": ["OPTForCausalLM"]}, "m")
    assert str(e.value) == ("m: sftlab cannot write a 'opt' model (OPTForCausalLM) as GGUF; it writes llama (SmolLM2, "
                            "Llama 2, Llama 3), qwen2 (Qwen2, Qwen2.5) and gpt2. Export it with --format safetensors "
                            "and convert that folder with llama.cpp's convert_hf_to_gguf.py")
    assert ARCHITECTURES["gpt2"].reader_options(512) == {"n_positions": 512}
    assert ARCHITECTURES["llama"].reader_options(512) == {}


def test_one_list_of_quantisations_for_the_writer_the_command_line_and_the_ui():
    import gguf

    from sftlab.export.quants import K_QUANTS, QUANTS
    from sftlab.ui.jobs import EXPORT_QUANTS

    assert list(QUANTS) == ["q8_0", "f16", "bf16", "f32", "q4_0", "q4_k_m", "q5_k_m", "q6_k"]
    assert EXPORT_QUANTS == tuple(QUANTS) and K_QUANTS == ("q4_k_m", "q5_k_m", "q6_k")
    for q in QUANTS.values():  # every name is one gguf (and llama.cpp) knows
        assert isinstance(getattr(gguf.LlamaFileType, q.file_type), gguf.LlamaFileType)
        assert q.tensor_type is None or isinstance(getattr(gguf.GGMLQuantizationType, q.tensor_type),
                                                   gguf.GGMLQuantizationType)


@pytest.mark.slow
@needs_llama_cpp
def test_llama_cpp_renders_tool_conversations_and_template_options_as_transformers(tmp_path, tiny):
    """llama.cpp's own chat handling of the exported GGUF (llama-cpp-python's formatter of the embedded template)
    against transformers on a tool conversation: sftlab's qwen template (Hermes tool calls), and the real Qwen3
    template trained with template_kwargs {enable_thinking: false}, whose option the GGUF's template carries."""
    import shutil

    from transformers import AutoTokenizer

    from sftlab.data.templates import resolve_template, with_template_kwargs
    from sftlab.export import llama_runtime as rt
    from sftlab.export.verify import TOOL_CONVERSATION, tool_conversation_check

    source, _, _ = write(tiny("qwen2"), tmp_path / "qwen.gguf")
    assert tool_conversation_check(source, rt.open_gguf(str(tmp_path / "qwen.gguf"))) == {
        "rendered_equal": True, "writes_tools": True}

    qwen3 = tmp_path / "qwen3"
    shutil.copytree(tiny("qwen2"), qwen3)
    tok = AutoTokenizer.from_pretrained(str(qwen3))
    tok.chat_template = (Path(__file__).parent / "fixtures" / "templates" / "Qwen-Qwen3-0.6B.jinja").read_text()
    tok.chat_template = with_template_kwargs(resolve_template(None, tok, warn=False), {"enable_thinking": False}).source
    tok.save_pretrained(str(qwen3))
    source, _, _ = write(qwen3, tmp_path / "qwen3.gguf")
    llm = rt.open_gguf(str(tmp_path / "qwen3.gguf"))
    assert llm.metadata["tokenizer.chat_template"] == tok.chat_template  # the options travel inside the template
    assert tool_conversation_check(source, llm) == {"rendered_equal": True, "writes_tools": True}
    prompt = rt.render(llm, TOOL_CONVERSATION[:2])
    assert prompt.endswith("<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")


# ---- heads travel or are refused (issue 46) ----

def _head(path: Path, base: Path, names=("neg", "pos"), task="classification") -> Path:
    """A head model as a classification run saves it (tiny, random head)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    model.config.sftlab_task = task
    model.config.pad_token_id = 0
    model.save_pretrained(str(path))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(path))
    return path


def test_a_head_model_is_refused_as_gguf(cli, tmp_path, tiny_chat_model, monkeypatch):
    import sftlab.export.run as export_run

    monkeypatch.setattr(export_run, "load_source", lambda *a: pytest.fail("loaded before the refusal"))
    head = _head(tmp_path / "head", tiny_chat_model)
    assert (f"{head}: a classification head model has no GGUF form (llama.cpp runs no sequence-classification head, "
            "so the file would be a plain language model without it); export it with --format safetensors"
            in _refused(cli, tmp_path / "out", "--model", head))


def test_a_head_runs_adapter_is_refused_by_export_and_merge(cli, tmp_path, tiny_chat_model):
    from test_files import _adapter

    adapter = _adapter(tmp_path / "checkpoint-4", tiny_chat_model, task_type="SEQ_CLS", modules_to_save=["score"])
    sentence = (f"{adapter}: the adapter of a task head run (task_type SEQ_CLS), which does not hold the head's "
                "labels; the run's own output folder is its merged head model: use that")
    assert sentence in _refused(cli, tmp_path / "out", "--model", adapter, "--format", "safetensors")
    result = cli("merge", "--model", adapter, "--out", tmp_path / "merged")
    assert result.returncode == 2 and sentence in " ".join(result.stderr.split())
    head = _head(tmp_path / "head", tiny_chat_model)
    result = cli("merge", "--model", head, "--out", tmp_path / "merged")
    assert result.returncode == 2 and (f"{head}: a classification head model, whole already (a head run merges its "
                                       "adapter when it saves); eval and `export --format safetensors` read it as it is"
                                       in " ".join(result.stderr.split()))
    assert not (tmp_path / "merged").exists()


@pytest.mark.slow
def test_a_head_model_exports_as_safetensors_with_its_head(cli, tmp_path, tiny_chat_model):
    import torch
    from transformers import AutoModelForSequenceClassification

    head = _head(tmp_path / "head", tiny_chat_model, names=("bug", "feature", "问题"))
    out = tmp_path / "export"
    result = cli("export", "--model", head, "--out", out, "--format", "safetensors")
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForSequenceClassification"]
    assert saved["id2label"] == {"0": "bug", "1": "feature", "2": "问题"}
    assert saved["label2id"] == {"bug": 0, "feature": 1, "问题": 2} and saved["sftlab_task"] == "classification"
    assert not (out / "generation_config.json").exists()  # (a head writes no text)
    report = json.loads((out / "export_report.json").read_text())
    assert report["task"] == "classification" and report["verification"] == {"logits_equal": True}
    ids = torch.tensor([[9707, 11, 220, 108386]])
    with torch.no_grad():
        a = AutoModelForSequenceClassification.from_pretrained(str(head)).eval()(ids).logits
        b = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()(ids).logits
    assert a.shape == (1, 3) and torch.equal(a, b)


def test_a_forged_adapter_loop_is_one_sentence(cli, tmp_path):
    from test_files import _adapter

    a = _adapter(tmp_path / "a", tmp_path / "b")
    _adapter(tmp_path / "b", tmp_path / "a")
    sentence = f"{a}: its base model {tmp_path / 'b'} (adapter_config.json) cannot be used: its base model {a} " \
               "(adapter_config.json) leads back to the adapter: a loop"
    assert sentence in _refused(cli, tmp_path / "out", "--model", a)
    result = cli("merge", "--model", a, "--out", tmp_path / "merged")
    assert result.returncode == 2 and sentence in " ".join(result.stderr.split())


def test_a_forged_report_figure_is_worded_never_computed_with(tmp_path):
    """The UI words a run's export_report.json with summary_lines: a top-1 agreement that is a list once became
    `100 * [...]`, a list a hundred times as long (a 4 MB report: hundreds of MB)."""
    from sftlab.export.result import ExportResult

    greedy = {"equal": 1, "prompts": 1, "top1_agreement": [0.5] * 1000, "ended_at_end_of_generation": 1,
              "max_new_tokens": 8, "sftlab_ended": 1}
    report = {"verification": {"llama_cpp": {"tokenization": {"equal": 1, "texts": 1}, "greedy": greedy}}}
    line = ExportResult(tmp_path, [], report).summary_lines()[-2]  # (the last: the verdict)
    assert line == ("llama.cpp: tokenization equal on 1/1 texts; greedy answers equal on 1/1 prompts, top-1 agreement "
                    "0.0%, 1/1 ended at an end-of-generation token within 8 tokens (sftlab's: 1)")
