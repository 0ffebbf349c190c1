"""Top-1 agreement of each quant of the default model, transformers read-back and llama.cpp, along sftlab's
greedy fp32 answers to the 12 verification prompts: the measurement behind export's verdict thresholds
(sftlab/export/result.py, NORMAL_TOP1; 2026-12-07, 2-core AMD EPYC).

    .venv/bin/python benchmarks/export_agreement.py 128 bf16 q8_0 q6_k q5_k_m q4_k_m q4_0   # needs `make gguf`

Prints one JSON line per type: answer tokens, transformers' and llama.cpp's top-1 agreement, llama.cpp's equal
greedy answers."""
import json, sys, tempfile, time
from pathlib import Path
import torch
from sftlab.export.arch import check_architecture
from sftlab.export.gguf_file import write_gguf
from sftlab.export.source import load_source, model_config
from sftlab.export.vocab import build_vocab
from sftlab.export.verify import conversations, reference_answers
from sftlab.export import llama_runtime as rt
from sftlab.inference.generate import Generator
from transformers import AutoModelForCausalLM

torch.set_num_threads(1)
model = "smollm2-135m-instruct"
MAX = int(sys.argv[1]) if len(sys.argv) > 1 else 128
arch = check_architecture(model_config(model), model)
source = load_source(model)
vocab = build_vocab(source.tokenizer, source.rows, source.end_of_turn_id, source.chat)
gen = Generator(source.model, source.tokenizer, source.chat)
prompts = [gen.prompt_ids(c) for c in conversations()]
t = time.time()
expected = reference_answers(gen, prompts, MAX)
print("reference", round(time.time() - t), "s", [len(a) for a in expected], flush=True)
out = Path(tempfile.mkdtemp(prefix="export-agreement-"))
for quant in sys.argv[2:]:
    p = out / f"d-{quant}.gguf"
    write_gguf(p, arch, source.model, vocab, source.chat.source, quant, "default")
    back = AutoModelForCausalLM.from_pretrained(str(out), gguf_file=p.name, dtype=torch.float32).eval()
    agree = total = 0
    for ids, want in zip(prompts, expected):
        seq = torch.tensor([ids + want])
        with torch.no_grad():
            logits = back(seq).logits[0, len(ids) - 1: len(ids) - 1 + len(want)]
        agree += sum(a == b for a, b in zip(logits.argmax(-1).tolist(), want))
        total += len(want)
    tf = agree / total
    llm = rt.open_gguf(str(p), n_ctx=512)
    agree = same = 0
    for ids, want in zip(prompts, expected):
        top = rt.argmax_along(llm, ids, want)
        agree += sum(a == b for a, b in zip(top, want))
        same += rt.greedy(llm, ids, MAX) == want
    llm.close()
    print(json.dumps({"quant": quant, "tokens": total, "transformers_top1": round(tf, 4),
                      "llama_cpp_top1": round(agree / total, 4), "llama_cpp_greedy_equal": same}), flush=True)
    p.unlink()
