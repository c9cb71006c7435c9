"""The project's tools: build the notebooks and the release, run the main job, draw figures.

Run them as modules from the top-level folder (``python -m tools.build``); the
Makefile's targets do.
"""
