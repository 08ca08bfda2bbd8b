"""The Train page's recipe side: build the recipe from the Model, Data and Train pages, show
what is wrong with it next to the field, save it, load it back into the pages."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from studio.errors import UserError


class RecipeActions:
    """Mixed into TrainPage (uses its model_page, data_page, method_panel, training_form,
    message and status_line)."""

    # ---- the recipe -----------------------------------------------------------------------
    def build_recipe(self):
        """The recipe from the three pages; UserError(field=...) when a method value is bad."""
        from studio.core.recipe import DataSection, MethodSection, ModelSection, Recipe, TrainingSection

        plugin = self.method_panel.plugin()
        if plugin is None:
            raise UserError("no method is chosen (plugins are still loading, or none was found).",
                            field="method.id", fix="Wait a moment, or check the plugin folders.")
        problem = self.method_panel.blocking_problem()
        if problem:
            raise UserError(problem, field="method.id")
        params = plugin.validate(self.method_panel.values())
        settings = self.training_form.values()
        name = str(settings.pop("name")).strip()
        data = self.data_page.settings()
        quantization = self.model_page.quantization()
        if getattr(plugin, "requires_quantization", None) and not quantization:
            quantization = plugin.requires_quantization
        return Recipe(
            name=name,
            model=ModelSection(path=self.model_page.model_path(), quantization=quantization),
            data=DataSection(**data),
            method=MethodSection(id=plugin.id, params=params),
            training=TrainingSection(**settings),
        )

    def checked_recipe(self):
        """build_recipe + Recipe.validate; shows the error next to the field and returns None."""
        self.clear_errors()
        try:
            recipe = self.build_recipe()
            recipe.validate(check_paths=True, check_method=False)
        except UserError as err:
            self.show_user_error(err)
            return None
        return recipe

    def show_user_error(self, err: UserError) -> None:
        field = err.field or ""
        text = str(err)
        if field.startswith("method.params."):
            field = field.removeprefix("method.params.")
        section, _, key = field.partition(".")
        if self.method_panel.form is not None and field in self.method_panel.form.editors:
            self.method_panel.form.show_error(field, text)
        elif field == "name" or (section == "training" and key in self.training_form.editors):
            self.training_form.show_error(key or "name", text)
        elif section in ("data", "model"):
            page = "Data" if section == "data" else "Model"
            self.message.show_error(f"{text}  (set it on the {page} page)")
        else:
            self.message.show_error(text)

    def clear_errors(self) -> None:
        self.message.clear_message()
        self.training_form.clear_errors()
        if self.method_panel.form is not None:
            self.method_panel.form.clear_errors()

    def apply_recipe(self, recipe) -> None:
        """Fill every page from a recipe (Load recipe…, Resume)."""
        self.model_page.set_quantization(recipe.model.quantization)
        if recipe.model.path and recipe.model.path != self.model_page.model_path():
            self.model_page.set_model_path(recipe.model.path)
        self.data_page.apply_settings(vars(recipe.data))
        self._auto_name = False
        self.training_form.set_values({"name": recipe.name, **vars(recipe.training)})
        self.method_panel.set_method(recipe.method.id, recipe.method.params)

    def save_recipe(self, path: str | Path) -> Path | None:
        recipe = self.checked_recipe()
        if recipe is None:
            return None
        saved = recipe.save(path)
        # the message line, not the status line: a live run's status must stay on screen
        self.message.show_info(f"Recipe saved to {saved}. Replay it with: peft-studio train {saved}")
        return saved

    def _save_recipe_dialog(self) -> None:
        name = self.training_form.values().get("name") or "recipe"
        path, _ = QFileDialog.getSaveFileName(self, "Save recipe", f"{name}.toml", "Recipe (*.toml *.json)")
        if path:
            self.save_recipe(path)

    def _load_recipe_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load recipe", "", "Recipe (*.toml *.json)")
        if path:
            self.load_recipe(path)

    def load_recipe(self, path: str | Path) -> bool:
        from studio.core.recipe import Recipe

        self.clear_errors()
        try:
            recipe = Recipe.load(path).resolved()
        except UserError as err:
            self.message.show_error(str(err))
            return False
        self.apply_recipe(recipe)
        self.message.show_info(f"Loaded {path}.")
        return True

    def _on_method_changed(self, _method_id: str = "") -> None:
        """Keep the run name "<method>-<data>" until the user types their own."""
        if not self._auto_name:
            return
        method = self.method_panel.method_id() or "run"
        stem = Path(self.data_page.settings().get("path") or "data").stem
        for suffix in ("_train", "-train", ".train"):
            stem = stem.removesuffix(suffix)
        editor = self.training_form.editors["name"]
        editor.blockSignals(True)
        editor.setText(f"{method}-{stem}")
        editor.blockSignals(False)
