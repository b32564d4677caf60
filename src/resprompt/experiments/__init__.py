"""The experiment harness (benchmark grid, report, baselines). The library core never imports it."""
