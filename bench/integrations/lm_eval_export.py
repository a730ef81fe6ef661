"""Our tasks inside lm-evaluation-harness: write the generated passkey / long-QA samples and the perplexity documents
as lm-eval task YAML + jsonl, so that any model lm-eval can load (`--model hf`, vLLM, an API) runs them:

    python -m bench.export_lm_eval --out exported/ [our config overrides: eval.lengths=[4096] eval.n=50 ...]
    lm_eval --model hf --model_args pretrained=<dir> --tasks memorybench_passkey_4k --include_path exported/

The samples are exactly the ones our harness scores (same generators, evaluation seeds, lengths and `eval.n`), as
text: our tokenizer's samples decoded, so a model with another tokenizer sees the same words. Scoring is ours,
written as lm-eval filters: passkey exact match of the leading digit run; long-QA exact match of the first word
(articles skipped, case ignored — our normaliser on one-word answers); perplexity with lm-eval's
`loglikelihood_rolling` metrics (word / byte perplexity, bits per byte). Data files are referenced by absolute
path, so the folder works with `TaskManager(include_path=..., include_defaults=False)` offline.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

import tasks
from bench.config.schema import register_configs
from bench.config.validate import validate
from bench.core import atomic
from bench.core.errors import ConfigError
from bench.harness.factory import make_tokenizer, task_data
from bench.harness.preflight import compose_job

log = logging.getLogger(__name__)
EXPORT_VERSION = 1
PREFIX = "memorybench"


def length_name(n: int) -> str:
    """4096 -> '4k', 248 -> '248'."""
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def _write(out: Path, name: str, rows: list[dict[str, Any]], spec: dict[str, Any]) -> str:
    data = out / "data" / f"{name}.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(data, "".join(json.dumps(r) + "\n" for r in rows))
    config = {"task": name, "tag": [PREFIX], "dataset_path": "json",
              "dataset_kwargs": {"data_files": {"test": str(data.resolve())}}, "test_split": "test", **spec}
    (out / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return name


def _first_match_exact(pattern: str, max_gen_toks: int, ignore_case: bool) -> dict[str, Any]:
    """generate_until, greedy, scored by exact match of the regex's first group against the target."""
    return {
        "output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "{{answer}}",
        "target_delimiter": "",
        "generation_kwargs": {"until": [], "max_gen_toks": max_gen_toks, "do_sample": False},
        "filter_list": [{"name": "scored", "filter": [{"function": "regex", "regex_pattern": pattern},
                                                      {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": ignore_case}],
    }


def round_trip_failures(tokenizer: Any, token_lists: list[list[int]]) -> int:
    """How many samples do not re-encode to the tokens our harness scored (lm-eval passes text)."""
    return sum(tokenizer.encode(tokenizer.decode(t)) != list(t) for t in token_lists)


def export_passkey(task: Any, lengths: list[int], n: int, seed: int, out: Path, meta: dict) -> list[str]:
    names, tok = [], task.tokenizer
    for length in lengths:
        samples = [s for d in task.options.depths for s in task.samples(length, d, n, seed)]
        rows = [{"prompt": tok.decode(s.prompt), "answer": s.key, "depth": s.depth, "length": length}
                for s in samples]
        _warn_round_trip(tok, [s.prompt for s in samples], f"passkey {length}")
        spec = _first_match_exact(r"^\s*(\d+)", task.options.max_new_tokens, ignore_case=False)
        names.append(_write(out, f"{PREFIX}_passkey_{length_name(length)}", rows, {**spec, "metadata": meta}))
    return names


def export_longqa(task: Any, lengths: list[int], n: int, seed: int, out: Path, meta: dict) -> list[str]:
    names, tok = [], task.tokenizer
    for family in task.options.families:
        for length in lengths:
            samples = task.samples(family, length, n, seed)
            rows = [{"prompt": tok.decode(s["prompt"]), "answer": s["answers"][0], "answers": s["answers"],
                     "fact_spans": s["fact_spans"], "family": family, "length": length} for s in samples]
            _warn_round_trip(tok, [s["prompt"] for s in samples], f"longqa {family} {length}")
            spec = _first_match_exact(r"^\s*(?:(?:the|a|an)\s+)?([A-Za-z0-9]+)", task.options.max_new_tokens,
                                      ignore_case=True)
            names.append(_write(out, f"{PREFIX}_longqa_{family}_{length_name(length)}", rows,
                                {**spec, "metadata": meta}))
    return names


def export_perplexity(task: Any, n: int, out: Path, meta: dict) -> list[str]:
    tok = task.tokenizer
    documents = task.documents(n)
    _warn_round_trip(tok, documents, "perplexity")
    rows = [{"text": tok.decode(d), "tokens": len(d)} for d in documents]
    spec = {"output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
            "metric_list": [{"metric": m} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")],
            "metadata": meta}
    return [_write(out, f"{PREFIX}_perplexity", rows, spec)]


def _warn_round_trip(tokenizer: Any, token_lists: list[list[int]], what: str) -> None:
    failures = round_trip_failures(tokenizer, token_lists)
    if failures:
        log.warning("%s: %d of %d samples re-encode to other tokens than the harness scored; lm-eval's numbers "
                    "with our tokenizer can differ from ours on those", what, failures, len(token_lists))


def export(task_objects: dict[str, Any], lengths: list[int], n: int, seed: int, out: Path) -> list[str]:
    """Write every given task (name -> our Task object); returns the lm-eval task names."""
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for name, task in task_objects.items():
        meta = {"version": EXPORT_VERSION, "tokenizer": task.tokenizer.fingerprint, "seed": seed, "n": n}
        if name == "passkey":
            names += export_passkey(task, lengths, n, seed, out, meta)
        elif name == "longqa":
            names += export_longqa(task, lengths, n, seed, out, meta)
        elif name == "perplexity":
            names += export_perplexity(task, n, out, meta)
        else:
            raise ValueError(f"no lm-eval export for task {name!r} (exportable: passkey, longqa, perplexity)")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Other arguments are our config overrides (tokenizer, corpus, eval.*).")
    parser.add_argument("--out", required=True, type=Path, help="folder for the task YAML files and data/")
    parser.add_argument("--tasks", default="passkey,longqa,perplexity", help="comma-separated: our task names")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    register_configs()
    try:
        cfg = compose_job(overrides)
        validate(cfg)
        tokenizer, data = make_tokenizer(cfg), task_data(cfg)
        objects = {}
        for name in args.tasks.split(","):
            cls = tasks.get(name)
            options = OmegaConf.to_container(cfg.task, resolve=True) if cfg.task.name == name else {"name": name}
            objects[name] = cls(cls.Options(**options), tokenizer, data)
        names = export(objects, list(cfg.eval.lengths), cfg.eval.n, cfg.eval.seed, args.out)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(names)} lm-eval tasks to {args.out}: {', '.join(names)}")
    print(f"run them: lm_eval --model hf --model_args pretrained=<model> --include_path {args.out} "
          f"--tasks {names[0]}")
    return 0

