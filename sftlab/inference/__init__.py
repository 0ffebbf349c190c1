"""Running a model on conversations: the one generation helper (generate: prompt ids, stop tokens, sampling,
streaming, batched answers), replies (a reply's reasoning, answer and tool calls per template family), and its two
front ends, chat (a terminal conversation) and serve (an OpenAI-compatible server). Evaluation and export's checks
generate through the same helper, so an answer is the same wherever it is asked for."""
