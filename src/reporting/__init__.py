"""Comparing models: `street-scene leaderboard` (evaluate every run of a subtask on one test set) and
`street-scene report` (one self-contained HTML file about the registry's runs)."""
