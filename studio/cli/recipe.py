"""`peft-studio recipe new OUT.toml`: the demo recipe, to edit and train."""

from __future__ import annotations

from pathlib import Path

from studio.errors import UserError


def cmd_recipe_new(args) -> int:
    from studio.core.recipe import Recipe

    out = Path(args.out)
    if out.exists() and not args.force:
        raise UserError("file already exists", path=out, fix="choose another name or add --force")
    recipe = Recipe.default(model_path=args.model, data_path=args.data, method=args.method)
    recipe.validate(check_paths=False)
    recipe.save(out)
    print(f"wrote {out} (method {recipe.method.id}); edit it, then `peft-studio train {out}`")
    return 0


def register(sub) -> None:
    p = sub.add_parser("recipe", help="recipe files")
    recipe_sub = p.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    q = recipe_sub.add_parser("new", help="write the demo recipe to a file")
    q.add_argument("out", help="file to write (.toml or .json)")
    q.add_argument("--method", default="lora", help="adapter method id (see `peft-studio methods`)")
    q.add_argument("--model", help="model folder (default: the installed default model)")
    q.add_argument("--data", help="training data file (default: the dates demo data)")
    q.add_argument("--force", action="store_true", help="overwrite an existing file")
    q.set_defaults(func=cmd_recipe_new)
