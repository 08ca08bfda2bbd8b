"""worker: process management. The training child (child.py) and the launcher the GUI uses to
start, pause, resume, cancel and kill it (launcher.py), hypernetwork jobs (hyper_jobs.py), and
several methods trained one process each (method_compare.py).

Layer: rank 4. May import core, plugins and the feature rooms (hyper, export, ...); never ui or cli.
No Qt. See docs/ARCHITECTURE.md.
"""
