"""The prompt registry: a mixed batch of prompts equals each prompt alone (scores within 1e-5, relative
to the row's largest logit beyond 1; same labels), every row is read by its own prompt's head, prompts of different lengths share one forward,
and what cannot be served is refused with its reason."""

import json
import random
import shutil

import pytest
import torch

from resprompt.backbones import load_backbone
from resprompt.cli import main
from resprompt.io import META_FILE
from resprompt.model import ResidualPromptModel
from resprompt.serving.config import RegistryOptions
from resprompt.serving.prompts import TASK_FILE, UnknownPrompt
from resprompt.serving.registry import PromptRegistry
from resprompt.tasks import evaluation
from resprompt.tasks.features import collate, featurize, sorted_batches
from resprompt.tasks.records import DataError
from resprompt.tasks.superglue import get_task
from serving_prompts import (
    TOPIC,
    boolq_records,
    jsonl,
    make_ours,
    make_stock_peft,
    standard_prompts,
    topic_records,
)


@pytest.fixture(scope="module")
def prompts(tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving") / "prompts"
    return root, standard_prompts(tiny_model_dirs["bert"], root)


def alone(model_dir, folder, task, records, batch_size=4):
    """Labels and logits [N, C] of one prompt alone, as `resprompt predict` computes them."""
    backbone, tok, family = load_backbone(model_dir, num_labels=task.num_labels)
    model = ResidualPromptModel.from_pretrained(backbone, folder, tokenizer=tok)
    instances = task.instances(records, family, "records")
    feats = featurize(instances, tok, family, min(256, model.max_text_length), train=False)
    labels = evaluation.predict(model, task, family, instances, feats, tok, batch_size)
    logits = [None] * len(feats)
    with torch.no_grad():
        for idx in sorted_batches([len(f.input_ids) for f in feats], batch_size):
            batch = collate([feats[i] for i in idx], tok.pad_token_id, family)
            out = model(batch["input_ids"], batch["attention_mask"], token_type_ids=batch.get("token_type_ids")).logits
            for row, i in enumerate(idx):
                logits[i] = out[row]
    return [task.labels[k] for k in labels], torch.stack(logits)


def mixed_pairs(specs, seed=0):
    pairs = [(name, i, rec) for name, (_, recs) in specs.items() for i, rec in enumerate(recs)]
    random.Random(seed).shuffle(pairs)
    return pairs


def count_body_forwards(registry):
    calls = []
    body = getattr(registry.backbone, registry.backbone.base_model_prefix)
    return calls, body.register_forward_hook(lambda m, a, k: calls.append(1), with_kwargs=False)


def assert_equal_to_alone(registry, specs, model_dir, root):
    pairs = mixed_pairs(specs)
    preds = registry.predict([(name, rec) for name, _, rec in pairs])
    assert len(preds) == len(pairs)
    for name, (task, records) in specs.items():
        labels, logits = alone(model_dir, root / name, task, records)
        mine = {i: p for (n, i, _), p in zip(pairs, preds) if n == name}
        for i, p in mine.items():
            assert p["label"] == labels[i], (name, i)
            got = torch.tensor([p["scores"][lab] for lab in task.labels])
            # 1e-5, relative to the row's largest logit when that is beyond 1: a mixed batch pads rows to other
            # lengths than alone, so float32 sums run in another order, and the error scales with the features
            # (on a 2-core AMD EPYC, MiniLM logits [18.66, -11.57, 0.40] differed by up to 1.05e-5)
            scale = max(1.0, float(logits[i].abs().max()))
            assert (got - logits[i]).abs().max() <= 1e-5 * scale, (name, i, got, logits[i])
    return pairs, preds


def test_mixed_batch_equals_each_prompt_alone(prompts, tiny_model_dirs):
    """Four prompts (label counts 3/2/2/4, n 3/5/4/2, one a stock PEFT adapter; readouts pooler, mean, PEFT's
    prefix + pooler, cls after a prefix prompt) mixed in one batch, with texts long enough to be truncated."""
    root, specs = prompts
    registry = PromptRegistry.load(tiny_model_dirs["bert"], root, RegistryOptions(max_batch_size=64))
    assert registry.names() == sorted(specs)
    info = {p["name"]: p for p in registry.info()}
    assert info["peft-boolq"]["format"] == "peft" and info["peft-boolq"]["placement"] == "prefix"
    assert [info[n]["num_tokens"] for n in ("cb", "rte", "peft-boolq", "topic")] == [3, 5, 4, 2]
    calls, hook = count_body_forwards(registry)
    try:
        pairs, preds = assert_equal_to_alone(registry, specs, tiny_model_dirs["bert"], root)
    finally:
        hook.remove()
    assert len(calls) == 1  # all 4 prompts, all lengths n, in ONE backbone forward
    # the data discriminates: within a prompt no two records score within the tolerance (a row mix-up fails)
    for name, (task, _) in specs.items():
        first = sorted(p["scores"][task.labels[0]] for (n, _, _), p in zip(pairs, preds) if n == name)
        assert min(b - a for a, b in zip(first, first[1:])) > 1e-5, name


def test_mixed_batch_labels_match_the_predict_command(prompts, tiny_model_dirs, tmp_path, capsys):
    """All four prompts' records in one interleaved mixed batch; each prompt's labels equal what
    `resprompt predict` writes for it alone (pooler, mean, PEFT's readout, cls after a prefix prompt)."""
    root, specs = prompts
    registry = PromptRegistry.load(tiny_model_dirs["bert"], root)
    pairs = [(name, r) for i in range(max(len(v[1]) for v in specs.values()))
             for name, (_, records) in specs.items() if i < len(records) for r in [records[i]]]
    mixed = registry.predict(pairs)
    flags = {"cb": ["--task", "CB"], "rte": ["--task", "RTE"], "peft-boolq": ["--task", "BoolQ"], "topic": []}
    for name, (task, records) in specs.items():
        src, out = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.out.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in records))
        assert main(["predict", "--model", tiny_model_dirs["bert"], "--prompt", str(root / name), *flags[name],
                     "--input", str(src), "--output", str(out)]) == 0
        capsys.readouterr()
        cli = [json.loads(line)["label"] for line in out.read_text().splitlines()]
        mine = [p["label"] for (n, _), p in zip(pairs, mixed) if n == name]
        assert [m.lower() if task.labels == ("False", "True") else m for m in mine] == cli, name


def test_each_row_is_read_by_its_own_head(prompts, tiny_model_dirs, tmp_path):
    """Two prompts identical but for a negated head: in one mixed batch their scores are exact negatives."""
    root, specs = prompts
    twin = tmp_path / "rte-negated"
    registry = PromptRegistry.load(tiny_model_dirs["bert"], root)
    model = registry.get("rte").model
    with torch.no_grad():
        for p in model.head.parameters():
            p.neg_()
    try:
        model.save_pretrained(twin)
    finally:
        with torch.no_grad():
            for p in model.head.parameters():
                p.neg_()
    registry.add("rte-negated", twin)
    records = [{k: v for k, v in r.items() if k != "label"} for r in specs["rte"][1]]
    preds = registry.predict([(name, r) for r in records for name in ("rte", "rte-negated", "cb")])
    for i in range(len(records)):
        a, b = preds[3 * i]["scores"], preds[3 * i + 1]["scores"]
        assert all(abs(a[k] + b[k]) <= 1e-6 and abs(a[k]) > 1e-3 for k in a)
        assert set(preds[3 * i + 2]["scores"]) == {"entailment", "contradiction", "neutral"}


def test_group_by_prompt_gives_the_same_predictions_one_forward_per_prompt(prompts, tiny_model_dirs):
    root, specs = prompts
    mixed = PromptRegistry.load(tiny_model_dirs["bert"], root, RegistryOptions(max_batch_size=64))
    grouped = PromptRegistry.load(tiny_model_dirs["bert"], root, RegistryOptions(max_batch_size=64,
                                                                                   group_by_prompt=True))
    pairs = [(name, rec) for name, _, rec in mixed_pairs(specs, seed=3)]
    calls, hook = count_body_forwards(grouped)
    try:
        b = grouped.predict(pairs)
    finally:
        hook.remove()
    a = mixed.predict(pairs)
    assert len(calls) == len(specs)
    for x, y in zip(a, b):
        assert x["label"] == y["label"] and all(abs(x["scores"][k] - y["scores"][k]) <= 1e-5 for k in x["scores"])


def test_batches_are_cut_at_max_batch_size(prompts, tiny_model_dirs):
    root, specs = prompts
    registry = PromptRegistry.load(tiny_model_dirs["bert"], root, RegistryOptions(max_batch_size=5))
    pairs = [(name, rec) for name, _, rec in mixed_pairs(specs)]
    calls, hook = count_body_forwards(registry)
    try:
        registry.predict(pairs)
    finally:
        hook.remove()
    assert len(calls) == -(-len(pairs) // 5)


def test_bad_records_fail_alone_and_strict_length_refuses_truncation(prompts, tiny_model_dirs):
    root, _ = prompts
    registry = PromptRegistry.load(tiny_model_dirs["bert"], root)
    good = {"premise": "A farmer sold the house.", "hypothesis": "A house was sold."}
    out = registry.predict_each([("rte", good), ("rte", {"premise": "only"}), ("nope", good), ("rte", "text")])
    assert set(out[0]) == {"label", "scores"}
    assert isinstance(out[1], DataError) and "inputs[1]" in str(out[1]) and "'hypothesis' missing" in str(out[1])
    assert isinstance(out[2], UnknownPrompt)
    assert isinstance(out[3], DataError) and "expected an object" in str(out[3])
    with pytest.raises(UnknownPrompt):
        registry.get("../rte")
    long = topic_records(0, long_words=300)[0]
    assert registry.predict([("topic", long)])[0]["label"] in TOPIC.labels  # truncated, as in training
    strict = PromptRegistry.load(tiny_model_dirs["bert"], root, RegistryOptions(strict_length=True))
    with pytest.raises(DataError, match="tokens, more than"):
        strict.predict([("topic", long)])
    assert strict.predict([("topic", {"text": "goal match"})])[0]["label"] in TOPIC.labels


def test_refused_folders_are_skipped_with_their_reason(prompts, tiny_model_dirs, tmp_path):
    root, _ = prompts
    folder = tmp_path / "prompts"
    shutil.copytree(root / "cb", folder / "cb")
    shutil.copytree(root / "cb", folder / "gen")  # a generation prompt on an encoder: not servable
    meta = json.loads((folder / "gen" / META_FILE).read_text())
    meta["task"] = {"name": "story", "kind": "generation", "custom": True, "text_fields": ["text"],
                    "target_field": "ending"}
    (folder / "gen" / META_FILE).write_text(json.dumps(meta))
    shutil.copytree(root / "cb", folder / "odd")  # a task kind no handler serves
    meta["task"] = {"name": "rank", "kind": "ranking"}
    (folder / "odd" / META_FILE).write_text(json.dumps(meta))
    make_ours(tiny_model_dirs["bert"], folder / "record", get_task("ReCoRD"), n=2)
    shutil.copytree(root / "peft-boolq", folder / "no-task")
    (folder / "no-task" / TASK_FILE).unlink()
    shutil.copytree(root / "cb", folder / "broken")
    (folder / "broken" / "prompt.safetensors").write_bytes(b"not a safetensors file")
    shutil.copytree(root / "cb", folder / "bad name")
    shutil.copytree(root / "cb", folder / "labels")  # labels that are not a list of names (a TypeError before)
    meta = json.loads((folder / "labels" / META_FILE).read_text())
    meta["task"]["labels"] = 2
    (folder / "labels" / META_FILE).write_text(json.dumps(meta))
    (folder / ".cb.tmp-123").mkdir()  # a half-written folder of io.atomic_dir: ignored
    registry = PromptRegistry(*load_backbone(tiny_model_dirs["bert"])[:2])
    report = registry.scan(folder)
    assert report.served == ["cb"] and registry.names() == ["cb"]
    assert set(report.skipped) == {"gen", "odd", "record", "no-task", "broken", "bad name", "labels"}
    assert "resprompt_config.json: task.labels=2, expected a list of strings" in report.skipped["labels"]
    assert "task kind 'ranking' is not served (served kinds: classification, generation)" in report.skipped["odd"]
    assert "a generative prompt needs a decoder or seq2seq backbone" in report.skipped["gen"]
    assert "several rows with a variable number of answers" in report.skipped["record"]
    assert TASK_FILE in report.skipped["no-task"]
    assert "prompt.safetensors" in report.skipped["broken"]
    assert "invalid" in report.skipped["bad name"]


def test_an_error_in_one_folder_skips_it_alone(prompts, tiny_model_dirs, tmp_path, monkeypatch):
    """A folder that cannot be read, or whose KV prefix / check fails at load, is skipped with its reason; the
    scan goes on (before: the error escaped scan(), so /v1/reload answered 500 and kept no new folder)."""
    import resprompt.serving.registry as registry_module
    from resprompt.serving.registry import HANDLERS

    root, _ = prompts
    folder = tmp_path / "prompts"
    for name in ("a", "b", "c"):
        shutil.copytree(root / "cb", folder / name)
    handler, check, stamp = HANDLERS["classification"], HANDLERS["classification"].check, registry_module.stamp

    def failing_check(prompt):
        if prompt.name == "b":
            raise RuntimeError("CUDA out of memory")
        return check(prompt)

    def failing_stamp(path):
        if path.name == "c":
            raise PermissionError(13, "Permission denied", str(path))
        return stamp(path)

    monkeypatch.setattr(handler, "check", failing_check)
    monkeypatch.setattr(registry_module, "stamp", failing_stamp)
    registry = PromptRegistry(*load_backbone(tiny_model_dirs["bert"])[:2])
    report = registry.scan(folder)
    assert report.served == ["a"] and sorted(report.skipped) == ["b", "c"]
    assert "CUDA out of memory" in report.skipped["b"]
    assert "PermissionError" in report.skipped["c"] and "Permission denied" in report.skipped["c"]


def test_rescan_adds_reloads_and_drops(prompts, tiny_model_dirs, tmp_path):
    root, specs = prompts
    folder = tmp_path / "prompts"
    shutil.copytree(root / "cb", folder / "cb")
    shutil.copytree(root / "rte", folder / "rte")
    registry = PromptRegistry.load(tiny_model_dirs["bert"], folder)
    cb, rte = registry.get("cb"), registry.get("rte")
    shutil.copytree(root / "topic", folder / "topic")
    shutil.rmtree(folder / "rte")
    make_ours(tiny_model_dirs["bert"], folder / "cb", get_task("CB"), n=6, seed=9)
    report = registry.scan()
    assert (report.added, report.reloaded, report.removed) == (["topic"], ["cb"], ["rte"])
    assert registry.get("cb") is not cb and registry.get("cb").model.num_tokens == 6
    cb = registry.get("cb")
    again = registry.scan()
    assert again.added == again.reloaded == again.removed == [] and registry.get("cb") is cb  # unchanged: kept
    assert rte.model.num_tokens == 5  # a dropped prompt's rows already queued still run
    assert registry.predict([("topic", {"text": "song"})])[0]["label"] in TOPIC.labels


@pytest.mark.real_model
def test_real_minilm_mixed_batch_equals_each_prompt_alone(tmp_path):
    """MiniLM (mean pooling declared by the checkpoint), three prompts, one a stock PEFT adapter."""
    root = tmp_path / "prompts"
    make_ours("minilm", root / "cb", get_task("CB"), n=4, pooling="auto", seed=1)
    make_ours("minilm", root / "topic", TOPIC, n=7, pooling="native", placement="prefix", seed=2)
    make_stock_peft("minilm", root / "peft-boolq", get_task("BoolQ"), n=5, seed=3)
    specs = {"cb": (get_task("CB"), jsonl("CB")), "topic": (TOPIC, topic_records(k=8, long_words=400)),
             "peft-boolq": (get_task("BoolQ"), boolq_records(k=8))}
    registry = PromptRegistry.load("minilm", root)
    assert registry.get("cb").model.pooling == "mean"
    assert_equal_to_alone(registry, specs, "minilm", root)


def test_copa_on_an_encoder_names_the_choice_resprompt_predict_picks(prompts, tiny_model_dirs, tmp_path, capsys):
    """A COPA record is two rows (one per choice), batched with other prompts' rows; its label is the
    choice `resprompt predict` picks and its scores the logit differences `evaluation.predict` gives."""
    root, specs = prompts
    folder = tmp_path / "p"
    shutil.copytree(root / "cb", folder / "cb")
    task = get_task("COPA")
    make_ours(tiny_model_dirs["bert"], folder / "copa", task, n=3, seed=5)
    registry = PromptRegistry.load(tiny_model_dirs["bert"], folder)
    assert registry.names() == ["cb", "copa"]
    assert [p["labels"] for p in registry.info()] == [list(get_task("CB").labels), ["choice1", "choice2"]]
    copa, cb = jsonl("COPA"), specs["cb"][1]
    pairs = [("copa", r) for r in copa] + [("cb", r) for r in cb]
    random.Random(3).shuffle(pairs)
    got = registry.predict(pairs)
    src, out = tmp_path / "copa.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in copa))
    assert main(["predict", "--model", tiny_model_dirs["bert"], "--prompt", str(folder / "copa"), "--input", str(src),
                 "--output", str(out)]) == 0
    capsys.readouterr()
    picked = {line["idx"]: line["label"] for line in map(json.loads, out.read_text().splitlines())}
    backbone, tok, family = load_backbone(tiny_model_dirs["bert"], num_labels=2)
    model = ResidualPromptModel.from_pretrained(backbone, folder / "copa", tokenizer=tok)
    instances = task.instances(copa, family, "copa")
    feats = featurize(instances, tok, family, 256, train=False)
    diffs = evaluation.predict(model, task, family, instances, feats, tok, 4)  # per choice: logit True - False
    served = [(r, p) for (name, r), p in zip(pairs, got) if name == "copa"]
    assert len(served) == len(copa)
    for record, prediction in served:
        k = copa.index(record)
        assert prediction["label"] == f"choice{picked[record['idx']] + 1}"
        expected = [diffs[2 * k], diffs[2 * k + 1]]
        assert [prediction["scores"]["choice1"], prediction["scores"]["choice2"]] == pytest.approx(expected, abs=1e-5)
    assert len({p["label"] for _, p in served}) == 2  # both choices occur: the check is not one-sided


def test_copa_accepts_its_served_labels_back(tiny_model_dirs, tmp_path):
    """Before: a record echoing a served label ("choice2") was refused, and a PEFT adapter whose sidecar
    gave COPA's served labels was skipped ("trained with labels ['choice1', 'choice2']")."""
    folder = tmp_path / "p"
    make_stock_peft(tiny_model_dirs["bert"], folder / "copa", get_task("COPA"), n=3, seed=2)
    (folder / "copa" / TASK_FILE).write_text(json.dumps({"name": "COPA", "labels": ["choice1", "choice2"]}))
    registry = PromptRegistry.load(tiny_model_dirs["bert"], folder)
    assert registry.names() == ["copa"]
    record = jsonl("COPA")[0]
    plain = registry.predict([("copa", record)])[0]
    echoed = registry.predict([("copa", {**record, "label": plain["label"]})])[0]
    assert echoed == plain
    with pytest.raises(DataError, match="label"):
        registry.predict([("copa", {**record, "label": "choice3"})])
