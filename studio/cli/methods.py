"""`peft-studio methods`: the adapter methods found, and the plugins that failed to load."""

from __future__ import annotations


def cmd_methods(args) -> int:
    from studio.plugins import discover

    found, problems = discover()
    width = max((len(p.id) for p in found.values()), default=4)
    for plugin in sorted(found.values(), key=lambda p: (p.family, p.id)):
        print(f"{plugin.id.ljust(width)}  {plugin.family:<12}  {plugin.description}")
        if args.sources or not str(plugin.source).startswith("builtin:"):
            print(f"{'':{width}}  from: {plugin.origin}")
    if problems:
        print(f"\n{len(problems)} plugin problem(s):")
        for problem in problems:
            print(f"  {problem}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("methods", help="list adapter methods")
    p.add_argument("--sources", action="store_true",
                   help="also say where each built-in plugin was loaded from (others always do)")
    p.set_defaults(func=cmd_methods)
