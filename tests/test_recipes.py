"""`sftlab import` (sftlab/recipes/): real recipes of LLaMA-Factory, axolotl and TRL (tests/fixtures/recipes/, their
sources in its README) become sftlab configs with every key reported; expected values are written out by hand from
the recipes and the tools' documented defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sftlab.config.load import load_config
from sftlab.config.train import TrainConfig
from sftlab.errors import SftlabError
from sftlab.recipes import detect, import_argv, import_data, import_recipe, split_command

from helpers import tokenizer

RECIPES = Path(__file__).parent / "fixtures" / "recipes"
LF = RECIPES / "llamafactory"
LF_DATA = LF / "data"
AX = RECIPES / "axolotl"
TRL = RECIPES / "trl"


def lf(name: str, **kw):
    return import_recipe(LF / name, dataset_dir=str(LF_DATA), **kw)


def by_key(imported):
    return {item.key: item for item in imported.report}


# The keys of the LLaMA-Factory examples (read off the files), which every report must hold, each once.
LF_COMMON = ["model_name_or_path", "trust_remote_code", "stage", "do_train", "finetuning_type", "dataset",
             "cutoff_len", "max_samples", "preprocessing_num_workers", "dataloader_num_workers", "output_dir",
             "logging_steps", "save_steps", "plot_loss", "overwrite_output_dir", "save_only_model", "report_to",
             "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "num_train_epochs",
             "lr_scheduler_type", "warmup_ratio", "bf16", "ddp_timeout", "resume_from_checkpoint"]
LF_KEYS = {
    "llama3_lora_sft.yaml": LF_COMMON + ["lora_rank", "lora_target", "template", "overwrite_cache",
                                         "dataset_info[identity].file_name", "dataset_info[alpaca_en_demo].file_name"],
    "qwen3_lora_sft.yaml": LF_COMMON + ["lora_rank", "lora_target", "template", "dataset_info[identity].file_name",
                                        "dataset_info[alpaca_en_demo].file_name"],
    "qwen3_full_sft.yaml": LF_COMMON + ["deepspeed", "template", "dataset_info[identity].file_name",
                                        "dataset_info[alpaca_en_demo].file_name"],
    "qwen3_lora_pretrain.yaml": LF_COMMON + ["lora_rank", "lora_target", "dataset_info[c4_demo].file_name",
                                             "dataset_info[c4_demo].columns.prompt"],
    "qwen3vl_lora_sft.yaml": LF_COMMON + [
        "image_max_pixels", "video_max_pixels", "lora_rank", "lora_target", "template",
        "dataset_info[identity].file_name", "dataset_info[alpaca_en_demo].file_name",
        "dataset_info[mllm_demo].file_name", "dataset_info[mllm_demo].formatting",
        "dataset_info[mllm_demo].columns.messages", "dataset_info[mllm_demo].columns.images",
        "dataset_info[mllm_demo].tags.role_tag", "dataset_info[mllm_demo].tags.content_tag",
        "dataset_info[mllm_demo].tags.user_tag", "dataset_info[mllm_demo].tags.assistant_tag"],
}
AX_COMMON = ["base_model", "datasets[0].path", "datasets[0].type", "val_set_size", "output_dir", "adapter", "lora_r",
             "lora_alpha", "lora_dropout", "sequence_len", "sample_packing", "wandb_project", "wandb_entity",
             "wandb_watch", "wandb_name", "wandb_log_model", "gradient_accumulation_steps", "micro_batch_size",
             "num_epochs", "optimizer", "lr_scheduler", "learning_rate", "bf16", "tf32", "gradient_checkpointing",
             "resume_from_checkpoint", "logging_steps", "attn_implementation", "warmup_ratio", "evals_per_epoch",
             "saves_per_epoch", "weight_decay"]
AX_KEYS = {
    "llama-3-lora-1b.yml": AX_COMMON + ["lora_model_dir", "eval_sample_packing", "lora_target_modules",
                                        "loss_watchdog_threshold", "loss_watchdog_patience", "special_tokens.pad_token"],
    "llama-3-instruct-lora-8b.yml": AX_COMMON + ["model_type", "tokenizer_type", "load_in_8bit", "load_in_4bit",
                                                 "chat_template", "dataset_prepared_path", "lora_model_dir",
                                                 "lora_target_linear", "special_tokens.pad_token"],
    "gemma-3-1b-qlora.yml": AX_COMMON + [
        "ddp_find_unused_parameters", "load_in_8bit", "load_in_4bit", "chat_template", "eot_tokens",
        "datasets[0].field_messages", "datasets[0].message_property_mappings.role",
        "datasets[0].message_property_mappings.content", "unfrozen_parameters", "lora_target_linear",
        "eval_sample_packing", "gradient_checkpointing_kwargs.use_reentrant", "special_tokens"],
    "lfm2-8b-a1b-lora.yaml": AX_COMMON + [
        "plugins", "load_in_8bit", "eot_tokens", "datasets[0].split", "datasets[0].field_messages",
        "datasets[0].message_field_role", "datasets[0].message_field_content", "dataset_prepared_path",
        "lora_model_dir", "lora_target_modules"],
}


@pytest.mark.parametrize("name", sorted(LF_KEYS))
def test_every_key_of_a_llamafactory_example_is_reported_once(name):
    imported = lf(name)
    assert imported.tool == "llamafactory"
    assert sorted(i.key for i in imported.report) == sorted(LF_KEYS[name])
    TrainConfig(**imported.config)


@pytest.mark.parametrize("name", sorted(AX_KEYS))
def test_every_key_of_an_axolotl_example_is_reported_once(name):
    imported = import_recipe(AX / name)
    assert imported.tool == "axolotl"
    assert sorted(i.key for i in imported.report) == sorted(AX_KEYS[name])
    TrainConfig(**imported.config)


def test_every_key_of_the_trl_example_is_reported_once():
    imported = import_recipe(TRL / "example_config.yaml")
    assert imported.tool == "trl"
    assert sorted(i.key for i in imported.report) == sorted(
        ["model_name_or_path", "dataset_name", "report_to", "learning_rate", "lr_scheduler_type"])
    TrainConfig(**imported.config)


def _all_imports():
    return ([lf(n) for n in LF_KEYS] + [import_recipe(AX / n) for n in AX_KEYS]
            + [import_recipe(TRL / "example_config.yaml"), import_argv(split_command((TRL / "sft_lora_command.txt")
                                                                                  .read_text()))])


def test_every_item_says_why_and_names_a_real_key():
    fields = set(TrainConfig.model_fields)
    for imported in _all_imports():
        for item in imported.report:
            assert item.status in ("mapped", "ignored", "unsupported")
            assert item.why.strip(), item.key
            assert "\n" not in item.why and "{value}" not in item.why, item.key
            assert item.to is None or item.to.split(".")[0].split("[")[0] in fields, item
            assert item.to is None or item.status != "ignored", item
            assert list(item.to_dict()) == ["key", "status", "to", "why"]


# ---- LLaMA-Factory ------------------------------------------------------------------------------------------------

def test_llamafactory_lora_recipe_values():
    imported = lf("llama3_lora_sft.yaml")
    c = imported.config
    assert c["model"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert c["datasets"] == [{"path": f"{LF_DATA}/identity.json", "format": "alpaca"},
                             {"path": f"{LF_DATA}/alpaca_en_demo.json", "format": "alpaca"}]
    assert (c["batch_size"], c["grad_accum"]) == (1, 8)
    assert (c["learning_rate"], c["epochs"], c["lr_scheduler"], c["warmup_ratio"]) == (1.0e-4, 3.0, "cosine", 0.1)
    assert c["max_length"] == 2048
    assert (c["method"], c["lora_r"], c["lora_alpha"], c["lora_dropout"], c["lora_targets"]) == (
        "lora", 8, 16, 0.0, "all-linear")  # alpha 2 × rank and dropout 0: LLaMA-Factory's defaults
    assert c["limit"] == 2000  # max_samples 1000 per dataset, two datasets
    assert (c["precision"], c["gradient_checkpointing"], c["output_dir"]) == ("bf16", True, "saves/llama3-8b/lora/sft")
    assert "train_on" not in c and TrainConfig(**c).train_on == "all_assistant"
    assert imported.source_template == ("llamafactory", "llama3")
    items = by_key(imported)
    assert (items["cutoff_len"].status, items["cutoff_len"].to) == ("mapped", "max_length")
    assert "in proportion" in items["cutoff_len"].why and "keeps the start" in items["cutoff_len"].why
    assert "each dataset" in items["max_samples"].why
    assert items["template"].status == "ignored" and "model's own chat template" in items["template"].why
    assert [items[k].status for k in ("do_train", "plot_loss", "overwrite_output_dir", "ddp_timeout",
                                      "trust_remote_code", "resume_from_checkpoint")] == ["ignored"] * 6
    assert any("batch_size 1 × grad_accum 8 = 8 examples" in n for n in imported.notes)
    assert any(n.startswith("lora_alpha: 16") for n in imported.notes)


def test_llamafactory_paths_are_relative_to_the_working_folder_by_default(monkeypatch):
    monkeypatch.chdir(LF)
    imported = import_recipe("qwen3_lora_sft.yaml")
    assert [d["path"] for d in imported.config["datasets"]] == ["data/identity.json", "data/alpaca_en_demo.json"]


def test_llamafactory_full_recipe_keeps_no_lora_key_and_maps_deepspeed():
    c = lf("qwen3_full_sft.yaml").config
    assert c["method"] == "full" and not any(k.startswith("lora_") for k in c)
    assert (c["grad_accum"], c["learning_rate"]) == (2, 1.0e-5)
    assert c["distributed"] == {"strategy": "deepspeed", "deepspeed": "examples/deepspeed/ds_z3_config.json"}


def test_llamafactory_pretraining_is_raw_text_packed():
    imported = lf("qwen3_lora_pretrain.yaml")
    c = imported.config
    assert c["datasets"] == [{"path": f"{LF_DATA}/c4_demo.jsonl", "format": "text"}]
    assert c["packing"] is True and c["limit"] == 1000
    assert by_key(imported)["stage"].status == "mapped" and "raw text" in by_key(imported)["stage"].why
    assert any("blocks of cutoff_len" in n for n in imported.notes)
    assert imported.source_template is None


def test_llamafactory_multimodal_parts_are_unsupported():
    imported = lf("qwen3vl_lora_sft.yaml")
    items = by_key(imported)
    assert [d["path"].rsplit("/", 1)[1] for d in imported.config["datasets"]] == ["identity.json", "alpaca_en_demo.json"]
    for key in ("image_max_pixels", "video_max_pixels", "dataset_info[mllm_demo].columns.images",
                "dataset_info[mllm_demo].file_name"):
        assert items[key].status == "unsupported", key
    assert "text only" in items["dataset_info[mllm_demo].columns.images"].why
    assert imported.config["limit"] == 2000  # max_samples 1000 × the two datasets sftlab reads
    assert any(n.startswith("a multimodal recipe (image_max_pixels, video_max_pixels)") for n in imported.notes)


def _lf_recipe(tmp_path, info, **keys):
    (tmp_path / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    recipe = {"model_name_or_path": "m", "stage": "sft", "finetuning_type": "lora", **keys}
    return import_data(recipe, "r.yaml", dataset_dir=str(tmp_path))


def test_llamafactory_sharegpt_tags_become_message_keys_and_complete_roles(tmp_path):
    info = {"chat": {"file_name": "chat.json", "formatting": "sharegpt",
                     "columns": {"messages": "dialog", "system": "sys", "tools": "functions"},
                     "tags": {"role_tag": "role", "content_tag": "text", "user_tag": "user",
                              "assistant_tag": "assistant"}}}
    imported = _lf_recipe(tmp_path, info, dataset="chat")
    assert imported.config["datasets"] == [{
        "path": f"{tmp_path}/chat.json", "format": "sharegpt",
        "columns": {"conversations": "dialog", "system": "sys", "tools": "functions"},
        "message_keys": {"role": "role", "content": "text"},
        # the tags not given keep LLaMA-Factory's defaults: observation, function_call, system
        "roles": {"user": "user", "assistant": "assistant", "system": "system", "tool": "observation",
                  "function_call": "function_call"}}]
    items = by_key(imported)
    assert items["dataset_info[chat].columns.messages"].to == "datasets[0].columns.conversations"
    assert items["dataset_info[chat].tags.user_tag"].to == "datasets[0].roles.user"


def test_llamafactory_openai_shape_is_the_messages_format(tmp_path):
    info = {"oai": {"file_name": "o.jsonl", "formatting": "openai", "columns": {"messages": "messages"},
                    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                             "assistant_tag": "assistant", "system_tag": "system", "observation_tag": "tool"}}}
    spec = _lf_recipe(tmp_path, info, dataset="oai").config["datasets"][0]
    assert spec == {"path": f"{tmp_path}/o.jsonl", "format": "messages"}  # every name is sftlab's own


def test_llamafactory_data_of_each_shape_loads_as_sftlab_reads_it(tmp_path):
    """The entries the import writes are read by sftlab's own pipeline: every row converts (Chinese included)."""
    from sftlab.data.pipeline import Source, build_examples

    info = json.loads((LF_DATA / "dataset_info.json").read_text(encoding="utf-8"))
    for name in ("identity", "alpaca_zh_demo", "glaive_toolcall_zh_demo"):
        info[name]["file_name"] = str(LF_DATA / info[name]["file_name"])
    imported = _lf_recipe(tmp_path, info, dataset="identity,alpaca_zh_demo,glaive_toolcall_zh_demo",
                          model_name_or_path=str(RECIPES))
    config = TrainConfig(**imported.config)
    assert [d.format for d in config.datasets] == ["alpaca", "alpaca", "sharegpt"]
    examples, report = build_examples([Source.of(d) for d in config.datasets], tokenizer("qwen2"), config.data)
    assert report.to_dict()["rows_read"] == 12 and len(examples) == 12


def test_llamafactory_keys_with_their_own_meanings(tmp_path):
    (tmp_path / "a.json").write_text("[]")
    imported = _lf_recipe(tmp_path, {"a": {"file_name": "a.json"}}, dataset="a", finetuning_type="full",
                          lora_rank=4, train_on_prompt=True, val_size=0.1, max_steps=100, warmup_steps=10,
                          lora_target="q_proj,v_proj", neftune_noise_alpha=5, made_up_key=1, logging_steps=0)
    c = imported.config
    assert "lora_r" not in c and by_key(imported)["lora_rank"].status == "ignored"  # full reads no rank
    assert (c["train_on"], c["eval_split"], c["max_steps"], c["warmup_ratio"], c["neftune_alpha"]) == (
        "all", 0.1, 100, 0.1, 5)
    items = by_key(imported)
    assert items["made_up_key"].status == "unsupported" and "importer knows" in items["made_up_key"].why
    assert items["logging_steps"].status == "unsupported" and "refuses" in items["logging_steps"].why
    assert "logging_steps" not in c
    lora = _lf_recipe(tmp_path, {"a": {"file_name": "a.json"}}, dataset="a", quantization_bit=4, mask_history=True,
                      lora_target="q_proj,v_proj", val_size=50)
    assert (lora.config["method"], lora.config["train_on"], lora.config["lora_targets"]) == (
        "qlora", "last_assistant", ["q_proj", "v_proj"])
    assert by_key(lora)["val_size"].status == "unsupported" and "eval_split" not in lora.config


def test_llamafactory_defaults_where_the_recipe_is_silent(tmp_path):
    imported = _lf_recipe(tmp_path, {"a": {"file_name": "a.json"}}, dataset="a", finetuning_type=None, stage=None)
    c = imported.config
    # LLaMA-Factory's own defaults: LoRA of rank 8, alpha 2 × rank, no dropout, 2048 tokens, transformers' 5e-5,
    # batch 8, a linear schedule without warmup, gradient checkpointing
    assert (c["method"], c["lora_r"], c["lora_alpha"], c["lora_dropout"], c["max_length"]) == ("lora", 8, 16, 0.0, 2048)
    assert (c["learning_rate"], c["batch_size"], c["lr_scheduler"], c["warmup_ratio"]) == (5e-5, 8, "linear", 0.0)
    assert c["gradient_checkpointing"] is True and "packing" not in c
    assert any(n.startswith("method: 'lora', as LLaMA-Factory does without `finetuning_type`") for n in imported.notes)


def test_llamafactory_hub_datasets_stay_named_and_are_reported(tmp_path):
    info = {"alpaca_en": {"hf_hub_url": "llamafactory/alpaca_en", "ms_hub_url": "llamafactory/alpaca_en"}}
    imported = _lf_recipe(tmp_path, info, dataset="alpaca_en")
    assert imported.config["datasets"] == [{"path": "llamafactory/alpaca_en", "format": "alpaca"}]
    items = by_key(imported)
    assert items["dataset_info[alpaca_en].hf_hub_url"].status == "unsupported"
    assert items["dataset_info[alpaca_en].ms_hub_url"].status == "ignored"
    assert any("hub dataset 'llamafactory/alpaca_en'" in n for n in imported.notes)


def test_llamafactory_refusals_are_one_sentence(tmp_path):
    with pytest.raises(SftlabError, match=r"stage 'dpo' is LLaMA-Factory's DPO preference training; sftlab trains "
                                          r"stage sft"):
        lf("qwen3_lora_dpo.yaml")
    with pytest.raises(SftlabError, match=r"dataset: 'alpaca_en_dem' is not in .*dataset_info.json \(close names: "
                                          r"alpaca_en_demo"):
        import_data({"model_name_or_path": "m", "stage": "sft", "dataset": "alpaca_en_dem"}, "r.yaml",
                    dataset_dir=str(LF_DATA))
    with pytest.raises(SftlabError, match="no dataset_info.json in the dataset folder"):
        import_data({"model_name_or_path": "m", "stage": "sft", "dataset": "x"}, "r.yaml", dataset_dir=str(tmp_path))
    for unread in ("mllm_demo", "dpo_en_demo", "wiki_demo"):  # images, preference pairs, a .txt file
        with pytest.raises(SftlabError, match=r"names no training data sftlab can read \(dataset_info\["):
            import_data({"model_name_or_path": "m", "stage": "sft", "dataset": unread}, "r.yaml",
                        dataset_dir=str(LF_DATA))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SftlabError, match="a recipe is a mapping of keys to values"):
        import_recipe(tmp_path / "list.yaml")
    with pytest.raises(SftlabError, match="are not those of a LLaMA-Factory, axolotl or TRL recipe"):
        import_data({"learning_rate": 1e-4}, "r.yaml")


# ---- axolotl ------------------------------------------------------------------------------------------------------

def test_axolotl_alpaca_recipe_values():
    imported = import_recipe(AX / "llama-3-lora-1b.yml")
    c = imported.config
    assert c["model"] == "NousResearch/Llama-3.2-1B"
    assert c["datasets"] == [{"path": "teknium/GPT4-LLM-Cleaned", "format": "alpaca"}]
    assert c["template"] == "alpaca"  # axolotl's type alpaca writes the Alpaca prompt whatever the model
    assert (c["batch_size"], c["grad_accum"], c["epochs"], c["learning_rate"]) == (2, 2, 1, 0.0002)
    assert (c["max_length"], c["packing"], c["eval_split"], c["precision"]) == (2048, True, 0.1, "auto")
    assert (c["method"], c["lora_r"], c["lora_alpha"], c["lora_dropout"]) == ("lora", 16, 32, 0.05)
    assert c["lora_targets"] == ["gate_proj", "down_proj", "up_proj", "q_proj", "v_proj", "k_proj", "o_proj"]
    items = by_key(imported)
    assert items["datasets[0].path"].status == "unsupported" and "hub dataset" in items["datasets[0].path"].why
    assert items["optimizer"].status == "unsupported" and "8-bit" in items["optimizer"].why
    assert items["sequence_len"].to == "max_length" and "drops a longer example" in items["sequence_len"].why
    assert items["evals_per_epoch"].status == "unsupported"


def test_axolotl_chat_template_recipes_map_fields_and_roles():
    gemma = import_recipe(AX / "gemma-3-1b-qlora.yml")
    assert gemma.config["datasets"] == [{
        "path": "cgato/SlimOrcaDedupCleaned", "format": "messages", "columns": {"messages": "conversations"},
        "message_keys": {"role": "from", "content": "value"},
        "roles": {"user": ["human", "user"], "assistant": ["gpt", "assistant"], "system": ["system"],
                  "tool": ["tool"]}}]
    assert (gemma.config["method"], gemma.config["lora_targets"], gemma.config["lora_r"]) == ("qlora", "all-linear", 32)
    assert gemma.source_template == ("axolotl", "gemma3")
    assert by_key(gemma)["unfrozen_parameters"].status == "unsupported"
    lfm = import_recipe(AX / "lfm2-8b-a1b-lora.yaml")
    assert lfm.config["datasets"][0]["message_keys"] == {"role": "from", "content": "value"}  # the old key names
    assert lfm.config["learning_rate"] == 5e-5  # written `5e-5`, which YAML reads as text
    assert lfm.config["lora_targets"] == r"model.layers.[\d]+.(mlp|cross_attn|self_attn).(up|down|gate|q|k|v|o)_proj"
    assert by_key(lfm)["load_in_8bit"].status == "unsupported" and lfm.config["method"] == "lora"
    assert by_key(lfm)["datasets[0].split"].status == "unsupported"
    instruct = import_recipe(AX / "llama-3-instruct-lora-8b.yml")
    assert instruct.source_template == ("axolotl", "llama3") and "template" not in instruct.config


def _ax(tmp_path, dataset, **keys):
    recipe = {"base_model": "m", "sequence_len": 256, "micro_batch_size": 1, "learning_rate": 1e-4,
              "datasets": [dataset], **keys}
    return import_data(recipe, "r.yml")


def test_axolotl_local_files_and_masks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("chat.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    Path("raw.jsonl").write_text('{"body": "some text"}\n')
    chat = {"path": "chat.jsonl", "type": "chat_template", "ds_type": "json", "roles_to_train": ["assistant"],
            "train_on_eos": "turn"}
    imported = _ax(tmp_path, chat)
    assert imported.config["datasets"][0]["path"] == "chat.jsonl"
    assert "message_keys" not in imported.config["datasets"][0]
    assert {k: by_key(imported)[f"datasets[0].{k}"].status for k in ("path", "ds_type", "roles_to_train",
                                                                      "train_on_eos")} == {
        "path": "mapped", "ds_type": "ignored", "roles_to_train": "mapped", "train_on_eos": "mapped"}
    no_eos = _ax(tmp_path, {**chat, "train_on_eos": "none", "roles_to_train": ["user", "assistant"]})
    assert by_key(no_eos)["datasets[0].train_on_eos"].status == "unsupported"
    assert by_key(no_eos)["datasets[0].roles_to_train"].status == "unsupported"
    inputs = _ax(tmp_path, chat, train_on_inputs=True, lr_scheduler="one_cycle", rl=None)
    assert inputs.config["train_on"] == "all" and "lr_scheduler" not in inputs.config
    assert by_key(inputs)["lr_scheduler"].status == "unsupported"
    text = _ax(tmp_path, {"path": "raw.jsonl", "type": "completion", "field": "body"})
    assert text.config["datasets"] == [{"path": "raw.jsonl", "format": "text", "columns": {"text": "body"}}]
    with pytest.raises(SftlabError, match="rl 'dpo' is axolotl's preference or reinforcement training"):
        _ax(tmp_path, chat, rl="dpo")


def test_axolotl_sharegpt_shaped_turns_load_as_sftlab_reads_them(tmp_path, monkeypatch):
    """field_messages + message_property_mappings + axolotl's default roles (human/gpt) read by sftlab's pipeline."""
    from sftlab.data.pipeline import Source, build_examples

    monkeypatch.chdir(tmp_path)
    rows = [{"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "您好！"}]},
            {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "user", "value": "Hi"},
                               {"from": "assistant", "value": "Hello."}]}]
    Path("turns.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    imported = _ax(tmp_path, {"path": "turns.jsonl", "type": "chat_template", "field_messages": "conversations",
                              "message_property_mappings": {"role": "from", "content": "value"}})
    config = TrainConfig(**imported.config)
    examples, report = build_examples([Source.of(d) for d in config.datasets], tokenizer("qwen2"), config.data)
    assert report.to_dict()["rows_read"] == 2 and len(examples) == 2


# ---- TRL ----------------------------------------------------------------------------------------------------------

def test_trl_config_file_values():
    imported = import_recipe(TRL / "example_config.yaml")
    c = imported.config
    assert (c["model"], c["learning_rate"], c["lr_scheduler"], c["report_to"]) == (
        "Qwen/Qwen2.5-0.5B", 0.0001, "cosine", "none")
    # SFTConfig's defaults where the file says nothing: batch 8, no warmup, gradient checkpointing
    assert (c["batch_size"], c["warmup_ratio"], c["gradient_checkpointing"]) == (8, 0.0, True)
    assert "method" not in c and "max_length" not in c  # full fine-tune and 1024 tokens: sftlab's own defaults
    assert c["datasets"] == [{"path": "stanfordnlp/imdb"}]


def test_trl_command_line_from_its_docs():
    argv = split_command((TRL / "sft_lora_command.txt").read_text())
    assert argv[:2] == ["python", "trl/scripts/sft.py"]
    imported = import_argv(argv)
    c = imported.config
    assert (c["method"], c["lora_r"], c["lora_alpha"], c["packing"]) == ("lora", 32, 16, True)
    assert (c["batch_size"], c["grad_accum"], c["learning_rate"], c["epochs"]) == (2, 8, 2.0e-4, 1)
    assert (c["eval_steps"], c["output_dir"], c["lr_scheduler"]) == (100, "Qwen2-0.5B-SFT", "linear")
    items = by_key(imported)
    assert (items["eos_token"].status, items["push_to_hub"].status) == ("unsupported", "unsupported")
    assert any("q_proj and v_proj" in n for n in imported.notes)
    with pytest.raises(SftlabError, match="trl dpo is TRL's dpo training, not SFT"):
        import_argv(["trl", "dpo", "--model_name_or_path", "m", "--dataset_name", "d"])


@pytest.mark.parametrize("rows, keys, train_on", [
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}', {}, "all"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
     {"assistant_only_loss": True}, "all_assistant"),
    ('{"prompt": "a", "completion": "b"}', {}, "all_assistant"),
    ('{"prompt": "a", "completion": "b"}', {"completion_only_loss": False}, "all"),
])
def test_trl_masks_follow_the_data(tmp_path, rows, keys, train_on):
    data = tmp_path / "d.jsonl"
    data.write_text(rows + "\n")
    imported = import_data({"model_name_or_path": "m", "dataset_name": str(data), **keys}, "r.yaml")
    assert TrainConfig(**imported.config).train_on == train_on


def test_trl_text_field_and_a_local_mixture(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"content": "raw text"}\n')
    (tmp_path / "u.jsonl").write_text('{"content": "more"}\n')
    imported = import_data({"model_name_or_path": "m", "dataset_text_field": "content", "datasets": [
        {"path": str(tmp_path / "t.jsonl"), "fraction": 0.25}, {"path": str(tmp_path / "u.jsonl"), "fraction": 0.75}]},
        "r.yaml")
    assert imported.config["datasets"] == [
        {"path": str(tmp_path / "t.jsonl"), "weight": 0.25, "format": "text", "columns": {"text": "content"}},
        {"path": str(tmp_path / "u.jsonl"), "weight": 0.75, "format": "text", "columns": {"text": "content"}}]


def test_detect_tells_each_tool_by_its_own_keys():
    assert detect({"model_name_or_path": "m", "stage": "sft"}) == "llamafactory"
    assert detect({"model_name_or_path": "m", "cutoff_len": 1024}) == "llamafactory"
    assert detect({"base_model": "m", "micro_batch_size": 2}) == "axolotl"
    assert detect({"model_name_or_path": "m", "dataset_name": "d"}) == "trl"
    assert detect({"model_name_or_path": "m", "assistant_only_loss": True}) == "trl"
    assert detect({"model_name_or_path": "m"}) is None
    assert detect({"learning_rate": 1e-4}) is None


def test_model_given_to_the_import_replaces_the_recipes():
    imported = lf("qwen3_lora_sft.yaml", model="runs/base")
    assert imported.config["model"] == "runs/base"
    assert "overridden by the model given to the import" in by_key(imported)["model_name_or_path"].why
    assert any("in place of the recipe's 'Qwen/Qwen3-4B-Instruct-2507'" in n for n in imported.notes)


# ---- the command ---------------------------------------------------------------------------------------------------

def test_import_command_writes_a_config_that_loads(cli, tmp_path):
    out = tmp_path / "config.yaml"
    r = cli("import", LF / "llama3_lora_sft.yaml", "--out", out, "--dataset-dir", LF_DATA)
    assert r.returncode == 0, r.stderr
    assert "cutoff_len" in r.stdout and "max_length" in r.stdout
    assert r.stderr.strip().splitlines()[-1] == f"wrote {out}; train it with: sftlab train {out}"
    text = out.read_text(encoding="utf-8")
    assert text.startswith(f"# sftlab config imported by `sftlab import` from {LF / 'llama3_lora_sft.yaml'} "
                           "(LLaMA-Factory recipe).\n")
    assert all(line.startswith("#") or "#" not in line for line in text.splitlines())  # nothing after a key
    config = load_config(out, check_files=False)
    assert (config.lora_r, config.lora_alpha, config.max_length, config.batch_size, config.grad_accum) == (
        8, 16, 2048, 1, 8)
    assert yaml.safe_load(text)["datasets"][0] == {"path": f"{LF_DATA}/identity.json", "format": "alpaca"}


def test_import_command_json_report_and_mistakes(cli, tmp_path):
    out = tmp_path / "c.yaml"
    r = cli("import", AX / "gemma-3-1b-qlora.yml", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert {tuple(item) for item in report} == {("key", "status", "to", "why")}
    assert {"key": "lora_r", "status": "mapped", "to": "lora_r", "why": "the LoRA rank (32)"} in report
    recipe = tmp_path / "r.yaml"
    recipe.write_text((LF / "qwen3_lora_sft.yaml").read_text())
    r = cli("import", recipe, "--out", recipe)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--out" in r.stderr and "is the recipe" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("import", LF / "qwen3_lora_dpo.yaml", "--out", out, "--dataset-dir", LF_DATA)
    assert r.returncode == 2 and "stage 'dpo'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("import", "--out", out, "--", "trl", "sft", "--model_name_or_path", "m", "--dataset_name",
            str(tmp_path / "none.jsonl"), "--assistant_only_loss")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(out.read_text())["model"] == "m"
    r = cli("import", "--tool", "trl", "--out", out, "--", "--model_name_or_path", "m2", "--dataset_name", "d.jsonl")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(out.read_text())["model"] == "m2"


@pytest.mark.slow
def test_imported_llamafactory_lora_recipe_trains(cli, tmp_path, tiny_chat_model):
    config = tmp_path / "config.yaml"
    r = cli("import", LF / "llama3_lora_sft.yaml", "--out", config, "--dataset-dir", LF_DATA,
            "--model", tiny_chat_model)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    r = cli("train", config, "--set", "max_steps=2", "--set", f"output_dir={run}", "--quiet")
    assert r.returncode == 0, r.stderr
    assert (run / "adapter_config.json").is_file()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    report = json.loads((run / "data_report.json").read_text())
    assert report["rows_read"] == 9  # identity 5 + alpaca_en_demo 4 (the limit, 2000, is above both)


# ---- sftlab train RECIPE -----------------------------------------------------------------------------------------

def test_train_takes_a_recipe_as_import_translates_it(monkeypatch, tmp_path, capsys):
    from sftlab.cli import _train_config

    monkeypatch.chdir(RECIPES / "llamafactory")  # (LLaMA-Factory finds data/dataset_info.json from the working folder)
    config = _train_config(Path("qwen3_lora_sft.yaml"), [f"output_dir={tmp_path / 'out'}"])
    assert (config.method, config.lora_r, config.batch_size, config.grad_accum) == ("lora", 8, 1, 8)
    assert config.output_dir == str(tmp_path / "out")  # --set still wins
    said = capsys.readouterr().err
    assert "qwen3_lora_sft.yaml is a LLaMA-Factory recipe: training it as sftlab import translates it" in said


def test_train_refuses_a_recipe_with_keys_it_cannot_follow(monkeypatch, tmp_path):
    from sftlab.cli import _train_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: m\nstage: sft\nfinetuning_type: lora\ncutoff_len: 512\n"
                      "logging_steps: 0.5\ndataset_dir: " + str(RECIPES / "llamafactory" / "data") + "\n"
                      "dataset: identity\n")
    with pytest.raises(SftlabError) as e:
        _train_config(recipe, [])
    assert str(e.value).startswith(f"{recipe} is a LLaMA-Factory recipe with 1 key(s) sftlab cannot follow: "
                                   "`logging_steps`:")
    assert str(e.value).endswith("`sftlab import " + str(recipe) + " --out config.yaml` writes the translated config, "
                                 "to edit and train")
    with pytest.raises(SftlabError, match="stage 'dpo' is LLaMA-Factory's DPO preference training"):
        _train_config(RECIPES / "llamafactory" / "qwen3_lora_dpo.yaml", [])


def test_import_compares_the_recipes_template_with_the_models(monkeypatch):
    from sftlab.recipes.compare import imported_comparison

    monkeypatch.chdir(RECIPES / "llamafactory")
    tokenizer_folder = str(Path(__file__).parent / "fixtures" / "tokenizers" / "qwen2")
    lines = imported_comparison(import_recipe("qwen3_lora_sft.yaml", model=tokenizer_folder), n=1)
    assert lines[0] == "template: LLaMA-Factory's 'qwen3_nothink' against sftlab's:"
    assert "  conversation 1: newline_after_end_trained: '\\n' is trained by LLaMA-Factory, not by sftlab" in lines
    unreadable = imported_comparison(import_recipe("qwen3_lora_sft.yaml"), n=1)
    assert len(unreadable) == 1 and "not compared" in unreadable[0] and "give --model" in unreadable[0]


@pytest.mark.slow
@pytest.mark.parametrize("recipe,data,dataset", [
    # axolotl's alpaca example on sftlab's alpaca fixture rows (its hub dataset, local here); TRL's example config
    # (stanfordnlp/imdb: a `text` column) on raw text rows — each recipe's own data shape.
    (AX / "llama-3-lora-1b.yml", "alpaca_zh_demo.json", lambda p: {"datasets": [{"path": p, "type": "alpaca"}]}),
    (TRL / "example_config.yaml", "c4_demo.jsonl", lambda p: {"dataset_name": p}),
])
def test_imported_axolotl_and_trl_recipes_train(cli, tmp_path, tiny_chat_model, recipe, data, dataset):
    import yaml

    given = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    local = tmp_path / recipe.name
    local.write_text(yaml.safe_dump({**given, **dataset(str(Path(__file__).parent / "fixtures" / "data" / data))}),
                     encoding="utf-8")
    config, run = tmp_path / "config.yaml", tmp_path / "run"
    r = cli("import", local, "--out", config, "--model", tiny_chat_model, "--compare", "0")
    assert r.returncode == 0, r.stderr
    r = cli("train", config, "--set", "max_steps=2", "--set", f"output_dir={run}", "--set", "max_length=64",
            "--set", "limit=8", "--set", "eval_split=0", "--quiet")
    assert r.returncode == 0, r.stderr
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps[-1] == 2
