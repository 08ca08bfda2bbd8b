"""`peft-studio generate` and `peft-studio hyper ...`: hypernetworks from the command line.

    peft-studio generate "sentence" --out DIR [--hypernetwork DIR] [--model DIR]
    peft-studio generate --kind dnd --prompts FILE --out DIR
    peft-studio hyper build-library --bigbench DIR --tasks 12 --held-out 4 --out LIB
    peft-studio hyper train --library LIB --kind t2l --mode recon --head S --steps 300 --out DIR
    peft-studio hyper info [DIR]
"""

from __future__ import annotations

import json

from studio.cli.common import command_line
from studio.errors import UserError


def cmd_generate(args) -> int:
    from studio.hyper import api

    if args.kind == "dnd" and not args.prompts:
        raise UserError("DnD needs example prompts.", field="--prompts",
                        fix="Pass --prompts FILE (one prompt per line).")
    if args.kind == "t2l" and not args.description:
        raise UserError("no task description given.", field="description",
                        fix='peft-studio generate "Decide whether a sports sentence is plausible." --out DIR')
    # every input is checked before the hypernetwork, the encoder or the model loads
    prompts = api.read_prompts(args.prompts) if args.kind == "dnd" else None
    api.check_task_input(args.kind, args.description, prompts)
    api.check_adapter_target(args.out)
    folder = args.hypernetwork or api.default_hypernetwork_dir(args.kind)
    hn = api.load_hypernetwork(folder)
    if hn.kind != args.kind:
        raise UserError(f"this hypernetwork is a {hn.kind} network, not {args.kind}.",
                        path=folder, field="--kind", fix=f"Pass --kind {hn.kind}.")
    model = args.model
    if model is None:
        from studio.paths import default_model_dir

        model = default_model_dir() if (default_model_dir() / "config.json").is_file() else None
    api.warm_up()
    res = api.generate(hn, args.out, description=args.description, prompts=prompts,
                       base_model=model)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"adapter: {res['adapter_dir']}")
        print(f"generated in {res['seconds'] * 1e3:.0f} ms (encode {res['encode_ms']:.0f} ms, "
              f"hypernetwork {res['emit_ms']:.0f} ms, write {res['write_ms']:.0f} ms); "
              f"{res['size_mb']:.2f} MB, {res['dtype']}")
        if res.get("notice"):
            print(f"note: {res['notice']}")
        if res.get("nearest"):
            from studio.hyper.nearest import nearest_summary

            print(nearest_summary(res["nearest"]))
    return 0


def cmd_build_library(args) -> int:
    from studio.hyper.build_library import build_library, resolve_tasks
    from studio.paths import default_model_dir

    train, held = resolve_tasks(args.bigbench, args.tasks, args.held_out, seed=args.seed)
    result = build_library(args.model or default_model_dir(), train, args.out, held_out_paths=held,
                           steps=args.steps, r=args.r, alpha=2.0 * args.r, lr=args.lr,
                           batch_size=args.batch_size, max_length=args.max_length,
                           checkpoint_every=args.checkpoint_every, seed=args.seed,
                           n_eval=args.eval_examples, command=command_line(),
                           shuffle=not args.no_shuffle, precision=args.precision,
                           shard=_shard(args.shard),
                           log=lambda line: print(line, flush=True))
    print(json.dumps({k: v for k, v in result.items() if k != "built"}, indent=1))
    return 0


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard must look like K/N, not '{text}'.", field="--shard",
                        fix="e.g. --shard 0/2 in one process and --shard 1/2 in another") from None
    return k, n


def cmd_split(args) -> int:
    from studio.hyper.build_library import write_split

    data = write_split(args.bigbench, args.out, args.tasks, args.held_out, seed=args.seed)
    print(f"{len(data['train'])} training tasks ({len(data['train_families'])} families), "
          f"{len(data['held_out'])} held-out tasks ({len(data['held_out_families'])} families) "
          f"-> {args.out}")
    return 0


def _describe(event: dict) -> str | None:
    name = event["event"]
    if name == "started":
        head = f", head {event['head']}" if event.get("head") else ""
        return (f"started: {event['kind']} ({event['mode']}{head}), {event['total_steps']} steps, "
                f"{event['trainable_params']:,} parameters, {len(event['tasks'])} tasks "
                f"(held out: {', '.join(event['held_out_tasks']) or 'none'})")
    if name == "log":
        return (f"step {event['step']}  loss {event['loss']:.5f}  lr {event['lr']:.2e}  "
                f"grad {event['grad_norm']:.3f}  ETA {event['eta_s']:.0f}s")
    if name == "eval":
        what = "held-apart prompts" if event.get("kind") == "dnd" else "held-apart descriptions"
        return f"eval at step {event['step']}: loss {event['eval_loss']:.5f} ({what})"
    if name == "finished":
        m = event["metrics"]
        return (f"finished: {event['adapter_path']} ({m['size_mb']} MB), final loss "
                f"{m['final_loss']:.5f}, eval loss {m['eval_loss']:.5f}, {m['seconds']:.0f} s")
    if name == "cancelled":
        return f"stopped at step {event['step']}; saved to {event['checkpoint']}"
    return None


def cmd_train(args) -> int:
    from studio.hyper import api

    def progress(event):
        event = {**event, "kind": event.get("kind", args.kind)}
        if args.json:
            print(json.dumps(event), flush=True)
        else:
            line = _describe(event)
            if line and (event["event"] != "log" or event["step"] % args.log_every == 0):
                print(line, flush=True)

    encoder = None
    if args.embeddings:
        from studio.hyper.encoder import CachedEncoder

        encoder = CachedEncoder(args.embeddings)
    api.train_hypernetwork(args.library, args.out, kind=args.kind, mode=args.mode, head=args.head,
                           steps=args.steps, lr=args.lr, seed=args.seed, model_path=args.model,
                           progress=progress, hidden=args.hidden, batch_tasks=args.batch_tasks,
                           batch_examples=args.batch_examples, encoder=encoder,
                           device=args.device, command=command_line(),
                           init_from=args.init_from)
    return 0


def cmd_info(args) -> int:
    from studio.hyper import api

    if args.folder:
        print(json.dumps(api.load_hypernetwork(args.folder).info(), indent=1))
        return 0
    for h in api.shipped_hypernetworks():
        print(f"{h['name']}  ({h['kind']}, {h['base_model_type']})  {h['path']}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate a LoRA adapter from a task sentence "
                                               "(Text-to-LoRA) or example prompts (DnD)")
    p.add_argument("description", nargs="?", help="the task in a sentence (T2L)")
    p.add_argument("--out", required=True, help="adapter folder: new, empty, or an adapter (replaced)")
    p.add_argument("--kind", choices=("t2l", "dnd"), default="t2l")
    p.add_argument("--prompts", help="DnD: file with one example prompt per line (or .jsonl)")
    p.add_argument("--hypernetwork", help="hypernetwork folder (default: the shipped one)")
    p.add_argument("--model", help="base model folder (default: the installed default model)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser("hyper", help="build LoRA libraries and train hypernetworks")
    sub = p.add_subparsers(dest="hyper_command", metavar="ACTION", required=True)
    q = sub.add_parser("build-library", help="train task LoRAs from BIG-bench task files")
    q.add_argument("--bigbench", required=True, help="folder of unpacked BIG-bench task files")
    q.add_argument("--out", required=True, help="library folder (resumable)")
    q.add_argument("--tasks", default="12", help="N (first N curated tasks), comma-separated task "
                   "folders, or a split file (.json, from `hyper split`: sets the held-out tasks too)")
    q.add_argument("--held-out", default="4", help="N (curated held-out tasks) or comma-separated list")
    q.add_argument("--model", help="base model folder (default: the installed default model)")
    q.add_argument("--steps", type=int, default=24)
    q.add_argument("--r", type=int, default=4)
    q.add_argument("--lr", type=float, default=2e-3)
    q.add_argument("--batch-size", type=int, default=4)
    q.add_argument("--max-length", type=int, default=96)
    q.add_argument("--eval-examples", type=int, default=16, help="examples kept out of each LoRA's "
                                                                 "training to measure its loss")
    q.add_argument("--checkpoint-every", type=int, default=8, help="keep LoRA checkpoints (DnD targets)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--no-shuffle", action="store_true",
                   help="take examples in file order (how the shipped library was built; some "
                        "task files are sorted by label)")
    q.add_argument("--shard", default="0/1", help="K/N: build every N-th task from the K-th, so N "
                   "processes (e.g. one per core, pinned with taskset) build one library")
    q.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: train under bf16 autocast (LoRA weights stay fp32); ~1.4x faster "
                        "on CPUs with bf16 instructions and on GPUs")
    q.set_defaults(func=cmd_build_library)

    q = sub.add_parser("split", help="choose a family-aware train / held-out task split")
    q.add_argument("--bigbench", required=True, help="folder of unpacked BIG-bench task files")
    q.add_argument("--out", required=True, help="split file to write (JSON)")
    q.add_argument("--tasks", type=int, default=230, help="training tasks: the curated list "
                   "topped up with family-capped picks")
    q.add_argument("--held-out", default="22", help="N (curated held-out tasks) or comma-separated list")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_split)

    q = sub.add_parser("train", help="train a hypernetwork on a LoRA library")
    q.add_argument("--library", required=True, help="library folder, or a folder of adapters "
                                                     "each with description.txt")
    q.add_argument("--out", required=True, help="hypernetwork folder to write")
    q.add_argument("--kind", choices=("t2l", "dnd"), default="t2l")
    q.add_argument("--mode", choices=("recon", "sft"), default="recon")
    q.add_argument("--head", choices=("L", "M", "S"), default="S")
    q.add_argument("--steps", type=int, default=300)
    q.add_argument("--lr", type=float, default=None)
    q.add_argument("--hidden", type=int, default=256)
    q.add_argument("--batch-tasks", type=int, default=4)
    q.add_argument("--batch-examples", type=int, default=4, help="sft: examples per task per step")
    q.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    q.add_argument("--embeddings", help="precomputed description embeddings (.pt, see "
                                        "studio.hyper.encoder.CachedEncoder) instead of the encoder")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--model", help="base model folder for --mode sft (default: the library's)")
    q.add_argument("--init-from", help="t2l: start from this saved network (same head/hidden), "
                                       "e.g. SFT after reconstruction training")
    q.add_argument("--log-every", type=int, default=1)
    q.add_argument("--json", action="store_true", help="one JSON event per line")
    q.set_defaults(func=cmd_train)

    q = sub.add_parser("info", help="list shipped hypernetworks, or describe one")
    q.add_argument("folder", nargs="?")
    q.set_defaults(func=cmd_info)
