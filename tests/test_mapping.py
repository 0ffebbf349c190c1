"""A data file's own column, turn-key and role names (datasets[].columns / message_keys / roles): the same
conversation written LLaMA-Factory's, axolotl's or a user's way gives the ids sftlab's own format gives; mistakes
are one sentence in the file's own names. Also: every unknown config key in one sentence."""

import json

import pytest
from helpers import tokenizer

from sftlab.config import DataSettings, load_config
from sftlab.data.load import load_conversations
from sftlab.data.mapping import from_spec
from sftlab.data.pipeline import Source, build_examples
from sftlab.errors import SftlabError

# Qwen2's own chat template (transformers' apply_chat_template, tokenized) of
# system 你是助手。 / user 你好 / assistant 您好！ / user Hi / assistant Hello.
QWEN_IDS = [151644, 8948, 198, 105043, 110498, 1773, 151645, 198,  # <|im_start|>system\n你是助手。<|im_end|>\n
            151644, 872, 198, 108386, 151645, 198,  # <|im_start|>user\n你好<|im_end|>\n
            151644, 77091, 198, 111308, 6313, 151645, 198,  # <|im_start|>assistant\n您好！<|im_end|>\n
            151644, 872, 198, 13048, 151645, 198,  # <|im_start|>user\nHi<|im_end|>\n
            151644, 77091, 198, 9707, 13, 151645, 198]  # <|im_start|>assistant\nHello.<|im_end|>\n
TRAINED = [17, 18, 19, 30, 31, 32]  # each answer and its <|im_end|>, not the newline after it

OWN = {"messages": [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "你好"},
                    {"role": "assistant", "content": "您好！"}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."}]}
# LLaMA-Factory's sharegpt shape (dataset_info.json: "columns": {"messages": "conversations", "system": "system"},
# "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}).
LLAMA_FACTORY = {"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "您好！"},
                                   {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}],
                 "system": "你是助手。"}
# axolotl's chat_template shape (field_messages: dialog; message_property_mappings: {role: speaker, content: text};
# roles: {user: [人, user], assistant: [助手]}).
AXOLOTL = {"dialog": [{"speaker": "system", "text": "你是助手。"}, {"speaker": "人", "text": "你好"},
                      {"speaker": "助手", "text": "您好！"}, {"speaker": "user", "text": "Hi"},
                      {"speaker": "助手", "text": "Hello."}]}


def _file(tmp_path, name, *rows):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _encode(source):
    examples, _ = build_examples([source], tokenizer("qwen2"), DataSettings())
    return examples[0]


def _trained(ex):
    return [i for i, label in enumerate(ex.labels) if label != -100]


@pytest.mark.parametrize("fmt,row,columns,keys,roles", [
    ("messages", OWN, None, None, None),
    ("sharegpt", LLAMA_FACTORY, None, {"role": "from", "content": "value"},
     {"user": ["human"], "assistant": ["gpt"], "system": ["system"]}),
    ("messages", AXOLOTL, {"messages": "dialog"}, {"role": "speaker", "content": "text"},
     {"user": ["人", "user"], "assistant": "助手", "system": "system"}),
])
def test_a_mapped_file_gives_the_ids_of_sftlabs_own_format(tmp_path, fmt, row, columns, keys, roles):
    path = _file(tmp_path, "d.jsonl", row)
    ex = _encode(Source(path, fmt, mapping=from_spec(columns, keys, roles)))
    assert ex.input_ids == QWEN_IDS
    assert _trained(ex) == TRAINED


def test_alpaca_columns_by_other_names(tmp_path):
    mapped = _file(tmp_path, "qa.jsonl", {"question": "你好", "answer": "您好！", "prompt_system": "你是助手。"})
    conv = load_conversations(mapped, mapping=from_spec({"instruction": "question", "output": "answer",
                                                         "system": "prompt_system"})).conversations[0]
    assert [(m.role, m.content) for m in conv.messages] == [
        ("system", "你是助手。"), ("user", "你好"), ("assistant", "您好！")]
    assert load_conversations(mapped, mapping=from_spec({"instruction": "question", "output": "answer"})).format == "alpaca"


def test_columns_may_swap_two_names(tmp_path):
    path = _file(tmp_path, "swap.jsonl", {"instruction": "the answer", "output": "the question"})
    conv = load_conversations(path, "alpaca", mapping=from_spec({"instruction": "output", "output": "instruction"}))
    assert [m.content for m in conv.conversations[0].messages] == ["the question", "the answer"]


def test_function_call_and_observation_roles_of_sharegpt(tmp_path):
    row = {"conversations": [{"from": "human", "value": "天气？"},
                             {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "北京"}}'},
                             {"from": "observation", "value": "晴"}, {"from": "gpt", "value": "北京晴。"}]}
    path = _file(tmp_path, "tools.jsonl", row)
    roles = {"user": "human", "assistant": "gpt", "function_call": "function_call", "tool": "observation"}
    conv = load_conversations(path, "sharegpt", mapping=from_spec(None, None, roles)).conversations[0]
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "assistant"]
    assert conv.messages[1].tool_calls[0]["function"]["name"] == "weather"


@pytest.mark.parametrize("fmt,row,spec,message", [
    ("sharegpt", {"dialog": [{"speaker": "human", "text": "hi"}, {"speaker": "bot", "text": "yo"}]},
     ({"conversations": "dialog"}, {"role": "speaker", "content": "text"}, {"user": "human", "assistant": "gpt"}),
     "row 1, field 'dialog[1].speaker': 'bot' is not one of the role values the mapping names ('human', 'gpt')"),
    ("sharegpt", {"dialog": [{"speaker": "human", "text": 5}, {"speaker": "gpt", "text": "yo"}]},
     ({"conversations": "dialog"}, {"role": "speaker", "content": "text"}, None),
     "row 1, field 'dialog[0].text': content must be a string, got a number"),
    ("alpaca", {"question": "q", "answer": "a"}, ({"instruction": "question", "output": "reply"}, None, None),
     "row 1, field 'reply': missing field"),
    ("alpaca", {"question": "q", "answer": "a"}, ({"instruction": "question", "messages": "answer"}, None, None),
     "columns: format 'alpaca' has no field 'messages' (its fields: instruction, input, output, system, history, tools)"),
    ("alpaca", {"instruction": "q", "output": "a"}, (None, {"role": "from"}, None),
     "message_keys are for rows of turns (format sharegpt or messages), not format 'alpaca'"),
    ("messages", {"messages": []}, (None, None, {"function_call": "fc"}),
     "roles: format 'messages' has no role 'function_call'"),
])
def test_mapping_mistakes_name_the_file_row_and_the_files_own_field(tmp_path, fmt, row, spec, message):
    path = _file(tmp_path, "bad.jsonl", row)
    with pytest.raises(SftlabError) as e:
        load_conversations(path, fmt, mapping=from_spec(*spec))
    assert str(e.value).startswith(f"{path}: {message}") or str(e.value) == f"{path}, {message}"


@pytest.mark.parametrize("entry,message", [
    ("{path: d.json, columns: {question: q}}", "'question' is no field sftlab reads"),
    ("{path: d.json, message_keys: {speaker: s}}", "'speaker' is no key sftlab reads"),
    ("{path: d.json, roles: {bot: gpt}}", "'bot' is no role sftlab reads"),
    ("{path: d.json, roles: {user: human, assistant: [gpt, human]}}", "a value is listed for both 'assistant' and 'user'"),
    ("{path: d.json, roles: {user: []}}", "role 'user' needs the value(s) the file writes for it"),
    ("{path: d.json, columns: {output: ''}}", "'output' maps to an empty name"),
])
def test_a_mapping_in_the_config_is_checked_key_by_key(entry, message):
    with pytest.raises(SftlabError, match="datasets\\[0\\]") as e:
        load_config(None, [f"datasets=[{entry}]"], check_files=False)
    assert message in str(e.value)


def test_a_head_run_refuses_a_mapping():
    with pytest.raises(SftlabError, match="`columns` does not apply to task: classification"):
        load_config(None, ["datasets=[{path: d.json, columns: {output: a}}]", "task=classification"],
                    check_files=False)


def test_the_encode_cache_key_holds_the_mapping(tmp_path):
    from sftlab.data.encode_cache import cache_key

    path = _file(tmp_path, "d.jsonl", LLAMA_FACTORY)
    tok = tokenizer("qwen2")
    plain = cache_key([Source(path, "sharegpt")], tok, None, {})
    mapped = cache_key([Source(path, "sharegpt", mapping=from_spec(None, {"content": "value"}))], tok, None, {})
    assert plain != mapped


# --- unknown keys --------------------------------------------------------------------------------

def test_ten_unknown_keys_in_one_sentence_each_with_what_it_meant_or_nothing(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("datasets: [{path: d.json}]\nper_device_train_batch_size: 1\ngradient_accumulation_steps: 8\n"
                      "num_train_epochs: 3\ncutoff_len: 1024\nmax_samples: 100\nval_size: 0.1\nlerning_rate: 1\n"
                      "overwrite_cache: true\nplot_loss: true\nflash_attn: auto\n")
    with pytest.raises(SftlabError) as e:
        load_config(config, check_files=False)
    assert str(e.value) == (
        f"{config}: unknown keys `per_device_train_batch_size` (did you mean `batch_size`? transformers' name), "
        "`gradient_accumulation_steps` (did you mean `grad_accum`? transformers' name), "
        "`num_train_epochs` (did you mean `epochs`? transformers' name), "
        "`cutoff_len` (did you mean `max_length`? LLaMA-Factory's name), "
        "`max_samples` (did you mean `limit`? LLaMA-Factory's name), "
        "`val_size` (did you mean `eval_split`? LLaMA-Factory's name), "
        "`lerning_rate` (did you mean `learning_rate`?), `overwrite_cache`, `plot_loss`, `flash_attn`; "
        "this looks like another tool's recipe: `sftlab import RECIPE --out config.yaml` translates it and reports "
        "every key (docs/coming-from.md)")


def test_a_key_spelled_like_another_is_not_offered_as_it():
    with pytest.raises(SftlabError) as e:
        load_config(None, ["datasets=[{path: d.json}]", "max_sample=3", "eval_size=0.1"], check_files=False)
    assert str(e.value) == "--set: unknown keys `max_sample`, `eval_size`"


def test_inspect_reads_a_file_by_the_names_the_options_give(tmp_path):
    from typer.testing import CliRunner

    from helpers import FIXTURES
    from sftlab.cli import app

    path = _file(tmp_path, "lf.jsonl", LLAMA_FACTORY)
    args = ["inspect", "--data", path, "--model", str(FIXTURES / "tokenizers" / "qwen2"), "--json", "--format",
            "sharegpt", "--roles", '{"user": "human", "assistant": ["gpt"]}']
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["input_ids"] == QWEN_IDS
    bad = CliRunner().invoke(app, [*args[:-1], '{"user": "human", "assistant": ["human"]}'])
    assert "a value is listed for both 'assistant' and 'user'" in str(bad.exception)


def test_data_check_and_clean_read_a_file_by_its_own_names(tmp_path):
    from typer.testing import CliRunner

    from helpers import FIXTURES
    from sftlab.cli import app

    rows = [{"问题": "你好", "回答": "您好！"}, {"问题": "你好", "回答": "您好！"}, {"问题": "你是谁", "回答": "我是助手。"}]
    path = _file(tmp_path, "zh.jsonl", *rows)
    names = ["--model", str(FIXTURES / "tokenizers" / "qwen2"), "--columns", '{"instruction": "问题", "output": "回答"}']
    result = CliRunner().invoke(app, ["data", "check", path, "--json", "--no-clusters", *names])
    assert result.exit_code == 0, result.output
    found = {f["check"]: f["rows"] for f in json.loads(result.stdout)["findings"]}
    assert found["exact_duplicate"] == [2]
    kept, removed = tmp_path / "kept.jsonl", tmp_path / "removed.jsonl"
    result = CliRunner().invoke(app, ["data", "clean", path, "--out", str(kept), "--rejects", str(removed),
                                      "--drop", "exact_duplicate", *names])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in kept.read_text(encoding="utf-8").splitlines()] == [rows[0], rows[2]]
