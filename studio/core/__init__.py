"""core: models, data, recipes, the training loop, evaluation, statistics, chat, the run store and
the event protocol.

Layer: rank 2. Imports studio.paths / errors / schema / fileio and studio.plugins only; no Qt, no
studio.worker / hyper / ui / cli, and it starts no processes (that is the worker's job). Feature
rooms, the worker, the GUI and the CLI all build on it. See docs/ARCHITECTURE.md.
"""
