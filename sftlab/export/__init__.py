"""Export a model sftlab trained to where people run it: GGUF (llama.cpp, Ollama, LM Studio) with a Modelfile, or a
merged safetensors folder (vLLM, TGI, from_pretrained); verified against the model it came from.
`sftlab.export.run.export_model` does it (imported from there: the command line reads sftlab.export.quants
before its arguments, without the export's libraries)."""
