"""Test support: a loopback OpenAI-compatible server, a tiny local causal LM and the seeded simulators (simulate)."""
