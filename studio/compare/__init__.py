"""compare: put several adapters side by side — where they come from and how they were made
(sources.py), what they changed in the weights (weights.py), how they score on the same examples
(evaluate.py), a weighted blend of them (blend.py) and one self-contained HTML report (report.py).

The GUI's Compare page and `peft-studio compare` both call these functions.

Layer: rank 3 (a feature room). Imports core and plugins (and the base modules) only; never the
worker, ui, cli, or another feature room. No Qt. See docs/ARCHITECTURE.md.
"""
