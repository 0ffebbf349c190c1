"""Export a model sftlab trained to where people run it: GGUF (llama.cpp, Ollama, LM Studio) with a Modelfile, or a
merged safetensors folder (vLLM, TGI, from_pretrained); verified against the model it came from."""

from sftlab.export.run import ExportResult, export_model

__all__ = ["ExportResult", "export_model"]
