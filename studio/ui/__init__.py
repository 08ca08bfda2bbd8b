"""ui: the PySide6 window: app.py (window, sidebar, pages, tools), one module per page or dialog,
widgets.py and theme.py (shared building blocks), tasks.py (work off the GUI thread).

Layer: rank 5. May import every layer below (core, plugins, feature rooms, worker); never the CLI.
No torch, transformers or peft at module level: heavy work runs in tasks.run_async or in a child
process (cli_process.py, the worker). See docs/ARCHITECTURE.md.
"""
