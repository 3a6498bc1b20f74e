"""The trader's decision making: the decision schema, the deterministic ``rules`` model
and (later in this package) the LangChain providers, prompts and fallbacks."""
