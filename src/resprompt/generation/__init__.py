"""Decoding with soft prompts: settings, the cached / uncached loops, KV prefixes of folded prompts."""
