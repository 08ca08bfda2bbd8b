"""Which tasks a Text-to-LoRA network learned are closest to a typed sentence.

A hypernetwork folder may hold tasks.json: {"tasks": [{"name": ..., "descriptions": [...]}]},
the training tasks and their training descriptions (`hyper train` writes it from the library).
For a description, nearest_tasks() ranks those tasks by the cosine similarity between its
sentence embedding and each task's closest description, so the Generate page and the CLI can say
when a request is far from anything the network learned (where its adapter is a guess).
"""

from __future__ import annotations

from pathlib import Path

from studio.fileio import read_json_object, write_json_atomic

TASKS_FILE = "tasks.json"
FAR = 0.35      # below this best similarity the request is unlike every training description

_cache: dict[tuple[str, float], tuple[list[dict], object]] = {}


def write_tasks(out_dir: str | Path, tasks_trained) -> Path:
    """tasks.json from the training tasks (objects with .name and .descriptions, the training
    descriptions: studio.hyper.losses.HyperTask)."""
    tasks = [{"name": t.name, "descriptions": list(dict.fromkeys(t.descriptions))}
             for t in tasks_trained]
    path = Path(out_dir) / TASKS_FILE
    write_json_atomic(path, {"tasks": tasks}, indent=1)
    return path


def read_tasks(folder: str | Path) -> list[dict]:
    """The folder's training tasks ([] when it has no tasks.json)."""
    path = Path(folder) / TASKS_FILE
    if not path.is_file():
        return []
    data = read_json_object(path, what="tasks.json",
                            fix="Re-train the hypernetwork, or delete tasks.json.")
    tasks = data.get("tasks")
    if not isinstance(tasks, list):
        return []
    return [t for t in tasks if isinstance(t, dict) and isinstance(t.get("name"), str)
            and isinstance(t.get("descriptions"), list) and t["descriptions"]]


def _table(folder: Path, encoder):
    """(rows, unit embeddings [N, D]) of every (task, description), cached per folder."""
    import torch

    path = folder / TASKS_FILE
    key = (str(path.resolve()), path.stat().st_mtime if path.is_file() else 0.0)
    if key not in _cache:
        rows = [(t["name"], d) for t in read_tasks(folder) for d in t["descriptions"]
                if isinstance(d, str) and d.strip()]
        emb = encoder.embed([d for _, d in rows]) if rows else torch.zeros(0, 1)
        _cache[key] = (rows, torch.nn.functional.normalize(emb.float(), dim=-1))
    return _cache[key]


def nearest_tasks(folder: str | Path, embedding, encoder, k: int = 3) -> list[dict]:
    """The `k` training tasks closest to `embedding` (the description's sentence embedding, [D]
    or [1, D]): [{"task", "description" (its closest one), "similarity"}], best first."""
    import torch

    rows, table = _table(Path(folder), encoder)
    if not rows:
        return []
    query = torch.nn.functional.normalize(embedding.reshape(1, -1).float(), dim=-1)
    sims = (table @ query.T).squeeze(1).tolist()
    best: dict[str, tuple[float, str]] = {}
    for (name, text), sim in zip(rows, sims):
        if name not in best or sim > best[name][0]:
            best[name] = (sim, text)
    ranked = sorted(best.items(), key=lambda item: -item[1][0])[:k]
    return [{"task": name, "description": text, "similarity": round(sim, 3)}
            for name, (sim, text) in ranked]


def nearest_summary(nearest: list[dict]) -> str:
    """'closest tasks it learned: a (0.71), b (0.55)' plus a warning when all are far."""
    if not nearest:
        return ""
    parts = ", ".join(f"{n['task']} ({n['similarity']:.2f})" for n in nearest)
    text = f"closest tasks it learned: {parts}"
    if nearest[0]["similarity"] < FAR:
        text += (f". This request is far from every task the network learned (best similarity "
                 f"below {FAR}): expect the adapter to do little")
    return text
