"""Evaluation: held-out loss, generations, reference metrics, LLM-as-judge, the mask probe."""
