"""The trader's decision making: the decision schema and record, the deterministic
``rules`` model, the LangChain providers and the fallback chain with its guards, the
prompt, the model catalog, and a fake provider server for tests and benchmarks."""
