"""studio.core.data: every shipped format loads, bad files name file + line + field, and the label
mask trains exactly the assistant turns of the real SmolLM2 chat template."""

from __future__ import annotations

import json

import pytest

from studio import paths
from studio.core import data
from studio.core.data import Example
from studio.errors import UserError

FORMATS = paths.resources_dir() / "demo" / "formats"


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from studio.core.models import load_tokenizer

    return load_tokenizer(model_dir)


# ---- reading every format ---------------------------------------------------------------------

@pytest.mark.parametrize("name, first_user, first_reply", [
    ("alpaca.jsonl", "Give the capital of the country.\n\nFrance", "Paris"),
    ("alpaca.json", "Give the capital of the country.\n\nJapan", "Tokyo"),
    ("alpaca.csv", "Give the capital of the country.\n\nItaly", "Rome"),
    ("chat.jsonl", "What colour is the sky?", "Blue"),
    ("chat_conversations.json", "Spell cat backwards.", "tac"),
    ("sharegpt.jsonl", "Largest planet?", "Jupiter"),
])
def test_conversation_formats_load(name, first_user, first_reply):
    examples = data.load_examples(FORMATS / name)
    assert len(examples) >= 2
    first = examples[0].messages
    assert [m for m in first if m["role"] == "user"][0]["content"] == first_user
    assert [m for m in first if m["role"] == "assistant"][0]["content"] == first_reply
    for ex in examples:
        assert ex.text is None
        assert all(m["role"] in ("system", "user", "assistant") for m in ex.messages)
        assert ex.messages[-1]["role"] == "assistant"


def test_format_details():
    alpaca = data.load_examples(FORMATS / "alpaca.jsonl")
    assert alpaca[1].messages[0] == {"role": "system", "content": "You are a translator."}
    assert alpaca[2].messages[0] == {"role": "user", "content": "Name a primary colour."}
    csv_rows = data.load_examples(FORMATS / "alpaca.csv")
    assert csv_rows[1].messages[0]["content"] == "Sort these words, alphabetically.\n\npear, apple"
    assert csv_rows[2].messages[0]["content"] == "Say hello."          # empty input column
    sharegpt = data.load_examples(FORMATS / "sharegpt.jsonl")
    assert [m["role"] for m in sharegpt[0].messages] == ["system", "user", "assistant"]
    assert sharegpt[1].messages[1]["role"] == "assistant"               # "model" -> assistant


@pytest.mark.parametrize("name", ["text.jsonl", "text.csv"])
def test_text_format_loads(name):
    examples = data.load_examples(FORMATS / name)
    assert len(examples) == 2 and all(ex.messages is None and ex.text for ex in examples)
    if name == "text.csv":
        assert examples[0].text == "A line of plain text, with a comma."


def test_forced_format_and_demo_data(demo_train_path, demo_eval_path):
    assert len(data.load_examples(demo_train_path, "chat")) == 400
    assert len(data.load_examples(demo_eval_path)) == 60
    with pytest.raises(UserError) as err:
        data.load_examples(FORMATS / "alpaca.jsonl", "sharegpt")
    assert err.value.line == 1 and err.value.field == "conversations"
    with pytest.raises(UserError, match="unknown data format"):
        data.load_examples(FORMATS / "alpaca.jsonl", "xml")


# ---- bad files --------------------------------------------------------------------------------

def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    good = json.dumps({"instruction": "a", "output": "b"})
    path = _write(tmp_path, "broken.jsonl", "\n".join([good, good, good, '{"instruction": "a", ',
                                                       good]))
    with pytest.raises(UserError) as err:
        data.load_examples(path)
    assert err.value.path == str(path) and err.value.line == 4
    assert "broken.jsonl, line 4" in str(err.value) and "Fix:" in str(err.value)


def test_missing_field_names_the_field_and_line(tmp_path):
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "response": "d"}]
    path = _write(tmp_path, "missing.jsonl", "\n".join(json.dumps(r) for r in rows))
    with pytest.raises(UserError) as err:
        data.load_examples(path)
    assert (err.value.line, err.value.field) == (2, "output")
    assert "'output'" in str(err.value)


def test_bad_chat_turns_and_json_lines(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}]
    path = _write(tmp_path, "roles.jsonl", "\n".join(json.dumps(r) for r in rows))
    with pytest.raises(UserError) as err:
        data.load_examples(path)
    assert err.value.line == 2 and err.value.field == "messages[1].role"
    no_reply = _write(tmp_path, "noreply.jsonl", json.dumps({"messages": [{"role": "user",
                                                                           "content": "hi"}]}))
    with pytest.raises(UserError, match="no assistant turn"):
        data.load_examples(no_reply)
    # .json arrays report the line where the bad element starts
    text = '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c"}\n]\n'
    with pytest.raises(UserError) as err:
        data.load_examples(_write(tmp_path, "arr.json", text))
    assert (err.value.line, err.value.field) == (3, "output")
    with pytest.raises(UserError) as err:
        data.load_examples(_write(tmp_path, "rows.csv", 'instruction,output\na,b\n"c,d,e\n'))
    assert err.value.path.endswith("rows.csv") and err.value.line is not None


@pytest.mark.parametrize("name, text, match", [
    ("empty.jsonl", "  \n", "empty"),
    ("notes.txt", "hello", "unsupported file type"),
    ("odd.jsonl", json.dumps({"question": "q", "answer": "a"}), "cannot tell the data format"),
    ("list.jsonl", "[1, 2]", "must be a JSON object"),
])
def test_unreadable_files(tmp_path, name, text, match):
    with pytest.raises(UserError, match=match) as err:
        data.load_examples(_write(tmp_path, name, text))
    assert name in str(err.value)
    with pytest.raises(UserError, match="not found"):
        data.load_examples(tmp_path / "nope.jsonl")


# ---- label masks, preview, stats --------------------------------------------------------------

CONVERSATION = Example(messages=[
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "What colour is the sky?"},
    {"role": "assistant", "content": "Blue"},
    {"role": "user", "content": "And grass?"},
    {"role": "assistant", "content": "Green"},
])


def test_labels_train_only_assistant_turns(tokenizer):
    item = data.tokenize_example(CONVERSATION, tokenizer, max_length=512)
    ids, labels = item["input_ids"], item["labels"]
    assert len(ids) == len(labels)
    # the token ids equal a plain tokenization of the template's rendering
    rendered = tokenizer.apply_chat_template(CONVERSATION.messages, tokenize=False)
    assert ids == tokenizer.encode(rendered, add_special_tokens=False)
    trained = [(i, t) for i, (t, lab) in enumerate(zip(ids, labels)) if lab != data.IGNORE]
    assert all(labels[i] == ids[i] for i, _ in trained)
    spans, current = [], []
    for i, t in trained:                      # contiguous trained runs
        if current and i != current[-1][0] + 1:
            spans.append(current)
            current = []
        current.append((i, t))
    spans.append(current)
    texts = [tokenizer.decode([t for _, t in span]) for span in spans]
    assert texts == ["Blue<|im_end|>", "Green<|im_end|>"]
    untrained = tokenizer.decode([t for t, lab in zip(ids, labels) if lab == data.IGNORE])
    assert "What colour is the sky?" in untrained and "<|im_start|>assistant" in untrained
    assert "Blue" not in untrained


def test_text_examples_train_every_token_and_truncate(tokenizer):
    item = data.tokenize_example(Example(messages=None, text="one two three four five"),
                                 tokenizer, max_length=512)
    assert item["labels"] == item["input_ids"]
    assert item["input_ids"][-1] == tokenizer.eos_token_id
    short = data.tokenize_example(CONVERSATION, tokenizer, max_length=8)
    assert len(short["input_ids"]) == len(short["labels"]) == 8


def test_render_preview_marks_trained_pieces(tokenizer):
    pieces = data.render_preview(CONVERSATION, tokenizer)
    assert "".join(text for text, _ in pieces) == tokenizer.apply_chat_template(
        CONVERSATION.messages, tokenize=False)
    assert [text for text, trained in pieces if trained] == ["Blue<|im_end|>", "Green<|im_end|>"]
    assert [flag for _, flag in pieces] == [False, True, False, True, False]


def test_fallback_template_for_base_models(tokenizer):
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    pieces = data.render_preview(CONVERSATION, plain)
    trained = [text for text, on in pieces if on]
    assert [text.strip() for text in trained] == ["Blue<|im_end|>", "Green<|im_end|>"]
    assert "".join(text for text, _ in pieces).count("Assistant:") == 2


def test_length_stats(tokenizer, demo_train_path):
    examples = data.load_examples(demo_train_path)[:40]
    lengths = sorted(len(data.tokenize_example(ex, tokenizer, 10_000)["input_ids"])
                     for ex in examples)
    stats = data.length_stats(examples, tokenizer, max_length=lengths[20])
    assert stats["count"] == 40 and stats["min"] == lengths[0] and stats["max"] == lengths[-1]
    assert stats["mean"] == pytest.approx(sum(lengths) / 40)
    assert stats["min"] <= stats["median"] <= stats["p95"] <= stats["max"]
    assert stats["truncated"] == sum(n > lengths[20] for n in lengths)
    assert data.length_stats([], tokenizer, 64)["count"] == 0


def test_split_is_seeded_disjoint_and_complete():
    examples = [Example(messages=None, text=str(i)) for i in range(50)]
    train, held = data.split_examples(examples, 0.2, seed=3)
    assert (len(train), len(held)) == (40, 10)
    assert sorted(int(e.text) for e in train + held) == list(range(50))
    assert data.split_examples(examples, 0.2, seed=3) == (train, held)
    assert data.split_examples(examples, 0.2, seed=4)[1] != held
    assert len(data.split_examples(examples[:3], 0.01, seed=0)[1]) == 1   # at least one held out
    assert data.split_examples(examples, 0.0, seed=0) == (examples, [])
    with pytest.raises(UserError) as err:
        data.split_examples(examples, 1.5, seed=0)
    assert err.value.field == "eval_fraction"


def test_collate_pads_right_and_masks_padding():
    batch = data.collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                          {"input_ids": [8], "labels": [8]}], pad_id=2)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_a_50_mb_one_line_example_costs_what_a_short_one_costs(tmp_path, model_dir):
    """One example of 50 MB on a single line (a pasted dump): reading, the preview, the length
    statistics and tokenizing never hand the tokenizer more than max_length x 64 characters, the
    example ends up cut at max_length, and the short examples beside it are untouched."""
    from transformers import AutoTokenizer

    huge = "lorem ipsum " * (50 * 2**20 // 12)
    path = tmp_path / "big.jsonl"
    rows = [{"messages": [{"role": "user", "content": huge}, {"role": "assistant", "content": "ok"}]},
            {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert path.stat().st_size > 50 * 10**6 and path.read_text().count("\n") == 2
    examples = data.load_examples(path)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    seen = []
    encode, template = tok.encode, tok.apply_chat_template

    def spy_encode(text, *args, **kw):
        seen.append(len(text))
        return encode(text, *args, **kw)

    def spy_template(conversation, *args, **kw):
        seen.append(sum(len(m["content"]) for m in conversation))
        return template(conversation, *args, **kw)

    tok.encode, tok.apply_chat_template = spy_encode, spy_template
    item = data.tokenize_example(examples[0], tok, 128)
    assert len(item["input_ids"]) == 128 and max(seen) <= 128 * data.CHARS_PER_TOKEN_CAP + 200
    seen.clear()
    stats = data.length_stats(examples, tok, 128)
    assert stats["truncated"] == 1 and stats["max"] > data.stats_cap(128)   # measured up to the cap
    assert max(seen) <= data.stats_cap(128) * data.CHARS_PER_TOKEN_CAP + 200
    preview = data.render_preview(examples[0], tok)
    assert sum(len(text) for text, _ in preview) < 3 * data.PREVIEW_CHARS
    assert any("the rest is not shown" in text for text, _ in preview)
    short = data.tokenize_example(examples[1], tok, 128)
    assert short == data.tokenize_example(Example(examples[1].messages), tok, 128)
    assert any(y != -100 for y in short["labels"])
