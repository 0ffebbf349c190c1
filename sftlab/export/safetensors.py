"""`--format safetensors`: the model merged into one full folder that vLLM, TGI and `from_pretrained` load:
weights, the tokenizer with the chat template it was trained with, and generation_config.json that stops at the
end-of-turn token."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError


def export_safetensors(source: Any, out: Path, verify: bool, started: float) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from sftlab.export.result import REPORT, ExportResult, verdict
    from sftlab.files import atomic_folder, write_text
    from sftlab.inference.generate import save_generation_config

    report: dict[str, Any] = {"format": "safetensors", "source": source.name, "merged_adapter": source.merged_adapter,
                              "template": source.chat.name if source.chat else None, "end_of_turn": source.end_of_turn,
                              "stop_ids": source.stop_ids,
                              "stop_tokens": source.tokenizer.convert_ids_to_tokens(source.stop_ids)}
    if source.task:  # the head travels: its class, labels and weights are the folder's (config.json)
        report.update(task=source.task, architectures=source.model.config.architectures,
                      labels=source.model.config.id2label if source.task == "classification" else None)
    with atomic_folder(out, "--out") as tmp:
        source.model.save_pretrained(str(tmp))
        source.tokenizer.save_pretrained(str(tmp))
        if not source.task:  # (a head writes no text: nothing to stop)
            save_generation_config(source.model, source.tokenizer, source.chat, tmp)
        if verify:
            loader = AutoModelForSequenceClassification if source.task else AutoModelForCausalLM
            back = loader.from_pretrained(str(tmp), dtype=torch.float32)
            ids = torch.tensor([source.tokenizer.encode("Hello, 你好")])
            with torch.no_grad():
                same = torch.equal(back(ids).logits, source.model(ids).logits)
            if not same:
                raise SftlabError(f"{out}: the saved model's logits differ from the source model's")
            report["verification"] = {"logits_equal": True}
            if not source.task:
                saved = json.loads((tmp / "generation_config.json").read_text(encoding="utf-8"))
                report["verification"]["generation_config_eos"] = saved.get("eos_token_id")
        else:
            report["verification"] = {"skipped": "--no-verify"}  # (as a GGUF export's report says it)
        report["verdict"] = verdict(report)
        report["file_size"] = sum(f.stat().st_size for f in tmp.iterdir() if f.suffix == ".safetensors")
        report["seconds"] = round(time.time() - started, 1)
        write_text(tmp / REPORT, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return ExportResult(out, sorted(out.glob("*.safetensors")) + [out / REPORT], report)
