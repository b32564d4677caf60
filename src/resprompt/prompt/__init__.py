"""The soft prompt itself: its configuration, its encoders (P -> P'), its initialisers, its placement."""
