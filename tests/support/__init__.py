"""Test support: a loopback OpenAI-compatible server and a tiny local causal LM."""
