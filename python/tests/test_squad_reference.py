"""`conveyor task score` with the `squad` metric against T5's own SQuAD scoring
(`t5.evaluation.qa_utils`, which matches the SQuAD v1.1 evaluation script), on random
answers built to hit its normalisation: case, punctuation, articles as whole words and
inside others, non-ASCII letters and punctuation, and every kind of white space."""

import importlib.util
import json
import pathlib
import random
import string
import subprocess
import sys

import pytest

# scripts/setup.sh installs T5's package (without its dependencies) beside the environment.
QA_UTILS = pathlib.Path(sys.prefix) / "t5-reference" / "t5" / "evaluation" / "qa_utils.py"


def reference():
    if not QA_UTILS.is_file():
        pytest.fail(f"{QA_UTILS} is missing: run scripts/setup.sh (make test does)")
    spec = importlib.util.spec_from_file_location("t5_qa_utils", QA_UTILS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WORDS = ["a", "an", "the", "The", "A", "AN", "paris", "Paris", "lyon", "then", "another",
         "anthem", "été", "ÉTÉ", "straße", "ΣΟΦΟΣ", "_x", "x_y", "3", "3.5", "42", "l'a", "a-b",
         # Marks and symbols Rust calls alphabetic and Python's \w does not.
         "\u093e", "\u05b0", "\u0363", "\u0345", "\u0670", "🄰", "²", "½"]
MARKS = list(string.punctuation) + ["’", "“", "”", "«", "»", "¿", "—"]
SPACES = [" ", " ", " ", "  ", "\t", "\n", "\u00a0", "\u2003", "\x1c", "\u0085"]


def text(rng):
    parts = []
    for _ in range(rng.randrange(0, 7) or rng.randrange(0, 7)):
        parts.append(rng.choice(WORDS))
        parts.append(rng.choice(SPACES + MARKS + [""]))
    return "".join(parts)


def variant(rng, answer):
    """The answer as a model might give it: other case, punctuation, articles, spaces, a
    word more or less."""
    out = answer.upper() if rng.random() < 0.3 else answer
    if rng.random() < 0.4:
        out = out.split(" ", 1)[-1]
    if rng.random() < 0.4:
        out += " " + rng.choice(WORDS)
    if rng.random() < 0.5:
        out = rng.choice(["the ", "A ", "", "an "]) + out + rng.choice([".", "!", " ", ""])
    return out


def test_squad_scores_equal_t5s_qa_utils(conveyor_bin, tmp_path):
    qa = reference()
    spec = tmp_path / "qa.toml"
    spec.write_text('name = "qa"\nformat = "jsonl"\ninput_template = "{question}"\n'
                    'target_template = "{answer}"\nanswers_column = "answers"\nmetric = "squad"\n')
    rng = random.Random(7)
    rows = []
    for _ in range(300):
        refs = [text(rng) for _ in range(rng.randrange(1, 4))]
        prediction = variant(rng, rng.choice(refs)) if rng.random() < 0.4 else text(rng)
        rows.append({"prediction": prediction, "target": refs[0], "answers": refs[1:]})

    def score(chosen, name):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in chosen))
        done = subprocess.run([conveyor_bin, "task", "score", "qa", "--task-file", str(spec),
                               "--predictions", str(path), "--json"],
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    def expected(chosen):
        targets = [[qa.normalize_squad(t) for t in [r["target"], *r["answers"]]] for r in chosen]
        predictions = [qa.normalize_squad(r["prediction"]) for r in chosen]
        return qa.qa_metrics(targets, predictions)

    # Each example alone (a difference is named), then all of them at once.
    for i, row in enumerate(rows[:120]):
        got, want = score([row], f"one-{i}.jsonl"), expected([row])
        assert abs(got["accuracy"] * 100 - want["em"]) < 1e-9, (row, got, want)
        assert abs(got["f1"] * 100 - want["f1"]) < 1e-9, (row, got, want)
    got, want = score(rows, "all.jsonl"), expected(rows)
    assert abs(got["accuracy"] * 100 - want["em"]) < 1e-9 and abs(got["f1"] * 100 - want["f1"]) < 1e-9
    # The draws reach every case: exact matches, partial credit, nothing shared.
    partial = [r for r in rows[:120] if 0 < expected([r])["f1"] < 100]
    assert 0 < want["em"] < 100 and 0 < want["f1"] < 100 and len(partial) > 5
