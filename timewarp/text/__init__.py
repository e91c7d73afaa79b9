"""Text: temporal wording, caption and question generation, LLM calls, annotations, TRL message rows."""
