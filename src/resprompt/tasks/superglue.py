"""SuperGLUE tasks: records -> model instances for each backbone family, evaluation, submission files.

Formats (p = premise, h = hypothesis, q = question; seq2seq inputs follow the T5 paper):

| task | encoder (text_a, text_b) | seq2seq source -> candidates | decoder source -> candidates |
|---|---|---|---|
| CB | (p, h) | "cb hypothesis: h premise: p" -> entailment/contradiction/neutral | "p\\nQuestion: h True, False, or Neither?\\nAnswer:" -> " True"/" False"/" Neither" |
| RTE, AX-b, AX-g | (p, h) (AX-b: sentence1, sentence2) | "rte sentence1: p sentence2: h" -> entailment/not_entailment | "p\\nQuestion: h True or False?\\nAnswer:" -> " True"/" False" |
| BoolQ | (q, passage) | "boolq passage: .. question: .." -> False/True | "passage\\nQuestion: q? True or False?\\nAnswer:" -> " False"/" True" |
| WiC | (word + ": " + sentence1, sentence2) | "wic sentence1: .. sentence2: .. word: .." -> False/True | 'Sentence 1: ..\\nSentence 2: ..\\nQuestion: Is the word "w" used with the same meaning in both sentences? Yes or No?\\nAnswer:' -> " No"/" Yes" |
| WSC | (text, 'Does "span2" refer to "span1"?') | "wsc: text" with span1 marked #..# and span2 *..* -> False/True | 'text\\nQuestion: In the passage above, does "span2" refer to "span1"? Yes or No?\\nAnswer:' -> " No"/" Yes" |
| MultiRC (one instance per answer option, group = question) | (q + " " + answer, passage) | "multirc question: .. answer: .. paragraph: .." -> False/True | "passage\\nQuestion: q\\nProposed answer: a\\nIs the proposed answer correct? Yes or No?\\nAnswer:" -> " No"/" Yes" |
| COPA | choice task: (p + " What was the cause?" / " What happened as a result?", choice), label 1 = correct | "copa choice1: .. choice2: .. premise: .. question: cause" -> choice1/choice2 | p without its final "." + " because" / " so" -> " " + choice with a lowercased first letter |
| ReCoRD | choice task: (passage, query with @placeholder -> entity), one per entity, label 1 = gold | "record query: .. entities: a, b, c passage: .." -> the entities | passage + "\\n" + query up to @placeholder -> " " + entity + rest of the query (a cloze) |

ReCoRD passages have their "@highlight" markers turned into sentence breaks. Classification labels are
class ids in the order of ``labels``; generative labels are candidate indices in the same order.
For choice tasks (COPA, ReCoRD) ``labels`` are the binary encoder classes ("False", "True").
Ids: ``uid`` = record idx ("12"), MultiRC "p<passage>-q<question>-a<answer>" (group "p..-q.."),
ReCoRD "q<query idx>"; encoder choice instances add "-c<i>" and share ``group`` = the record/query.
``meta`` holds the official idx (submissions), ReCoRD gold ``answers``/``entity``/``entities``,
AX-g ``pair_id`` and ``pair`` (idx // 2: the file lists each minimal pair as two consecutive lines).

Metrics (``evaluate``): CB accuracy + f1_macro; MultiRC f1a + em per question; ReCoRD f1 + em per
query (encoder: argmax of the "correct" score in each group); COPA accuracy per record (encoder:
group argmax); AX-b matthews; AX-g accuracy + gender_parity (complete pairs only); others accuracy.
``score`` is the mean of the task's metrics, ``n`` the number of records / questions / queries.
An invalid generative prediction (-1) counts as wrong.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import fmean

from . import metrics as M
from .records import DataError, label_index, need, where

FAMILIES = ("encoder", "seq2seq", "decoder")
BOOL = ("False", "True")


@dataclass(frozen=True)
class Instance:
    uid: str
    text_a: str
    text_b: str | None
    source: str
    candidates: tuple[str, ...]
    label: int | None
    group: str | None = None
    meta: dict = field(default_factory=dict, compare=False)


def _valid(pred, k: int) -> bool:
    """A class id / candidate index in range(k): Python, numpy and torch integers (0-d tensors: torch's
    are no numbers.Integral), never bools nor floats."""
    if isinstance(pred, bool) or "bool" in str(getattr(pred, "dtype", "")) or getattr(pred, "ndim", 0) != 0:
        return False
    try:
        index = operator.index(pred)
    except TypeError:
        return False
    return 0 <= index < k


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]
    verbalizers: tuple[str, ...]
    main_metric: str
    metrics: tuple[str, ...] = ("accuracy",)
    is_choice: bool = False

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def choice(self) -> bool:
        return self.is_choice

    def metadata(self) -> dict:
        """What is saved with a prompt, so that eval / predict / serving rebuild this very task."""
        return {"name": self.name, "kind": "classification", "labels": list(self.labels),
                "verbalizers": list(self.verbalizers), "choice": self.is_choice}

    def instances(self, records: Sequence[dict], family: str, source_name: str) -> list[Instance]:
        if family not in FAMILIES:
            raise DataError(f"family {family!r} unknown, expected one of {FAMILIES}")
        if not records:
            raise DataError(f"{source_name}: no records for task {self.name}")
        out: list[Instance] = []
        for pos, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise DataError(f"{source_name}: record {pos} is {type(rec).__name__}, expected an object")
            rec = rec if "__file__" in rec else {**rec, "__file__": source_name, "__line__": pos + 1}
            out += self._convert(rec, family, pos)
        labeled = [i.label is not None or bool(i.meta.get("answers")) for i in out]
        if any(labeled) and not all(labeled):
            bad = out[labeled.index(False)]
            raise DataError(f"{bad.meta.get('where', source_name)}: field 'label' missing "
                            "(other records of this file have one)")
        return out

    def _convert(self, rec: dict, family: str, pos: int) -> list[Instance]:
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation
    def _pairs(self, instances, preds, family) -> tuple[list, list, list]:
        """(golds, predictions, instances) at the level where the metrics apply."""
        k = max(self.num_labels, 2)
        golds = [i.label for i in instances]
        if any(g is None for g in golds):
            raise DataError(f"{self.name}: {golds.count(None)} instance(s) have no gold label (test split?)")
        # an invalid answer (a generated text matching no candidate) is a class of its own, id k:
        # wrong for accuracy, and for F1 / Matthews a row of its own rather than another class's
        preds = [int(p) if _valid(p, k) else k for p in preds]
        return golds, preds, list(instances)

    def evaluate(self, instances, predictions, family: str) -> dict[str, float]:
        instances, predictions = list(instances), list(predictions)
        if len(instances) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions for {len(instances)} instances")
        if not instances:
            raise DataError(f"{self.name}: nothing to evaluate")
        golds, preds, insts = self._pairs(instances, predictions, family)
        res: dict[str, float] = {}
        for m in self.metrics:
            if m == "accuracy":
                res[m] = M.accuracy(preds, golds)
            elif m == "f1_macro":
                res[m] = M.f1_macro(preds, golds, list(range(self.num_labels)))
            elif m == "matthews":
                res[m] = M.matthews(preds, golds)
            elif m == "gender_parity":
                count = Counter(i.meta.get("pair") for i in insts)
                full = [j for j, i in enumerate(insts) if count[i.meta.get("pair")] == 2]
                if full:  # no complete pair (a slice of the file): parity is undefined, left out, not 0
                    res[m] = M.gender_parity([preds[j] for j in full], [insts[j].meta["pair"] for j in full])
            elif m == "f1a":
                res.update(M.multirc_scores(preds, golds, [i.group for i in insts]))
            elif m == "f1":
                res.update(M.record_scores(preds, golds))
        res["score"] = fmean(res[m] for m in self.metrics if m in res)
        res["n"] = float(len({i.group for i in insts}) if self.name == "MultiRC" else len(insts))
        return res

    def submission(self, instances, predictions, family: str) -> list[dict]:
        instances, predictions = list(instances), list(predictions)
        if len(instances) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions for {len(instances)} instances")
        return [{"idx": i.meta.get("idx", i.uid), "label": self._label_out(p)}
                for i, p in zip(instances, predictions)]

    def _label_out(self, pred):
        lab = self.labels[int(pred) if _valid(pred, self.num_labels) else 0]
        return lab.lower() if self.labels == BOOL else lab


# ---------------------------------------------------------------------- one record, one instance
Fmt = Callable[[dict, str], tuple[str, str | None, str, str]]


@dataclass(frozen=True)
class ClassTask(Task):
    """One record -> one instance. ``fmt(rec, loc)`` -> (text_a, text_b, t5 source, decoder source)."""
    fmt: Fmt | None = field(default=None, repr=False, compare=False)
    decoder_words: tuple[str, ...] = ()
    label_field: str | None = "label"

    def format(self, rec: dict, loc: str):
        return self.fmt(rec, loc)

    def _convert(self, rec, family, pos):
        loc = where(rec)
        a, b, t5, dec = self.format(rec, loc)
        raw = rec.get(self.label_field) if self.label_field else None
        if isinstance(raw, str) and not raw.strip():  # a blank label column (csv): no label, as if absent
            raw = None
        label = None if raw is None else label_index(raw, self.labels, loc)
        idx = rec.get("idx", pos)
        meta = {"idx": idx, "where": loc}
        if self.name == "AX-g":
            meta.update(pair_id=rec.get("pair_id"), pair=idx // 2 if isinstance(idx, int) else rec.get("pair_id"))
        src, cands = {"encoder": ("", self.labels), "seq2seq": (t5, self.verbalizers),
                      "decoder": (dec, self.decoder_words or tuple(" " + v for v in self.verbalizers))}[family]
        return [Instance(str(idx), a, b, src, cands, label, None, meta)]


def _nli(prefix: str, k1: str, k2: str, question: str) -> Fmt:
    def fmt(r, loc):
        p, h = need(r, k1), need(r, k2)
        t5 = f"cb hypothesis: {h} premise: {p}" if prefix == "cb" else f"rte sentence1: {p} sentence2: {h}"
        return p, h, t5, f"{p}\nQuestion: {h} {question}\nAnswer:"
    return fmt


def _boolq(r, loc):
    q, p = need(r, "question"), need(r, "passage")
    qm = q if q.rstrip().endswith("?") else q.rstrip() + "?"
    return q, p, f"boolq passage: {p} question: {q}", f"{p}\nQuestion: {qm} True or False?\nAnswer:"


def _wic(r, loc):
    w, s1, s2 = need(r, "word"), need(r, "sentence1"), need(r, "sentence2")
    dec = (f"Sentence 1: {s1}\nSentence 2: {s2}\nQuestion: Is the word \"{w}\" used with the same "
           "meaning in both sentences? Yes or No?\nAnswer:")
    return f"{w}: {s1}", s2, f"wic sentence1: {s1} sentence2: {s2} word: {w}", dec


def _mark(words: list[str], index, span: str, mark: str) -> None:
    n = len(span.split())
    if not isinstance(index, int) or index < 0 or index + n > len(words):
        return
    chunk = " ".join(words[index: index + n])
    if chunk.lower().startswith(span.lower()):
        words[index: index + n] = [f"{mark}{chunk[:len(span)]}{mark}{chunk[len(span):]}"]


def _wsc(r, loc):
    text, t = need(r, "text"), need(r, "target", dict)
    s1, s2 = (need(t, f"span{i}_text", str, f"{loc}: target") for i in (1, 2))
    words = text.split(" ")
    spans = sorted([(t.get("span1_index"), s1, "#"), (t.get("span2_index"), s2, "*")],
                   key=lambda x: -x[0] if isinstance(x[0], int) else 0)
    for index, span, mark in spans:
        _mark(words, index, span, mark)
    dec = f"{text}\nQuestion: In the passage above, does \"{s2}\" refer to \"{s1}\"? Yes or No?\nAnswer:"
    return text, f'Does "{s2}" refer to "{s1}"?', "wsc: " + " ".join(words), dec


# ---------------------------------------------------------------------- MultiRC
@dataclass(frozen=True)
class MultiRCTask(Task):
    def _convert(self, rec, family, pos):
        loc = where(rec)
        pidx = rec.get("idx", pos)
        passage = need(rec, "passage", dict)
        text = need(passage, "text", str, f"{loc}: passage")
        out = []
        for qn, q in enumerate(need(passage, "questions", list, f"{loc}: passage")):
            qloc = f"{loc}: passage.questions[{qn}]"
            question, qidx = need(q, "question", str, qloc), q.get("idx", qn)
            for an, a in enumerate(need(q, "answers", list, qloc)):
                aloc = f"{qloc}.answers[{an}]"
                ans, aidx = need(a, "text", str, aloc), a.get("idx", an)
                label = None if a.get("label") is None else label_index(a["label"], BOOL, aloc)
                src, cands = {
                    "encoder": ("", self.labels),
                    "seq2seq": (f"multirc question: {question} answer: {ans} paragraph: {text}", BOOL),
                    "decoder": (f"{text}\nQuestion: {question}\nProposed answer: {ans}\nIs the proposed "
                                "answer correct? Yes or No?\nAnswer:", (" No", " Yes"))}[family]
                out.append(Instance(f"p{pidx}-q{qidx}-a{aidx}", f"{question} {ans}", text, src, cands, label,
                                    f"p{pidx}-q{qidx}", {"idx": aidx, "question": qidx, "passage": pidx,
                                                         "where": aloc}))
        return out

    def submission(self, instances, predictions, family):
        out: dict = {}
        for i, p in zip(instances, predictions, strict=True):
            qs = out.setdefault(i.meta["passage"], {})
            qs.setdefault(i.meta["question"], []).append({"idx": i.meta["idx"], "label": int(p == 1)})
        return [{"idx": pidx, "passage": {"questions": [{"idx": q, "answers": a} for q, a in qs.items()]}}
                for pidx, qs in out.items()]


# ---------------------------------------------------------------------- choice tasks (COPA, ReCoRD)
def _group_argmax(instances, scores) -> dict[str, Instance]:
    best: dict[str, tuple[float, Instance]] = {}
    for inst, s in zip(instances, scores, strict=True):
        s = float(s)
        if inst.group not in best or s > best[inst.group][0]:
            best[inst.group] = (s, inst)
    return {g: inst for g, (_, inst) in best.items()}


def _lower_first(s: str) -> str:
    first = s.split(" ", 1)[0]
    return s if first == "I" or first.startswith("I'") or first[1:2].isupper() else s[:1].lower() + s[1:]


@dataclass(frozen=True)
class COPATask(Task):
    def _convert(self, rec, family, pos):
        loc = where(rec)
        p, c1, c2, q = (need(rec, k) for k in ("premise", "choice1", "choice2", "question"))
        if q not in ("cause", "effect"):
            raise DataError(f"{loc}: field 'question' has value {q!r}, expected 'cause' or 'effect'")
        label = None if rec.get("label") is None else label_index(rec["label"], (0, 1), loc)
        idx = rec.get("idx", pos)
        meta = {"idx": idx, "where": loc}
        if family == "encoder":
            a = p + (" What was the cause?" if q == "cause" else " What happened as a result?")
            return [Instance(f"{idx}-c{j}", a, c, "", BOOL, None if label is None else int(label == j),
                             str(idx), {**meta, "choice": j}) for j, c in enumerate((c1, c2))]
        if family == "seq2seq":
            src, cands = f"copa choice1: {c1} choice2: {c2} premise: {p} question: {q}", self.verbalizers
        else:
            src = p.rstrip().rstrip(".!") + (" because" if q == "cause" else " so")
            cands = (" " + _lower_first(c1), " " + _lower_first(c2))
        return [Instance(str(idx), p, None, src, cands, label, None, meta)]

    def _pairs(self, instances, preds, family):
        if family != "encoder":
            return super()._pairs(instances, preds, family)
        golds: dict[str, int | None] = {}
        for i in instances:
            if i.label is None:
                raise DataError(f"{self.name}: instance {i.uid} has no gold label (test split?)")
            if i.label == 1:
                golds[i.group] = i.meta["choice"]
        picked = _group_argmax(instances, preds)
        firsts = list(picked.values())
        return [golds.get(g, -1) for g in picked], [picked[g].meta["choice"] for g in picked], firsts

    def submission(self, instances, predictions, family):
        if family == "encoder":
            picked = _group_argmax(instances, predictions).values()
            return [{"idx": i.meta["idx"], "label": i.meta["choice"]} for i in picked]
        return [{"idx": i.meta["idx"], "label": int(p) if _valid(p, 2) else 0} for i, p in zip(instances, predictions)]


_HIGHLIGHT = re.compile(r"([.!?]?)\s*\n@highlight\n")


@dataclass(frozen=True)
class ReCoRDTask(Task):
    def _convert(self, rec, family, pos):
        loc = where(rec)
        passage = need(rec, "passage", dict)
        raw = need(passage, "text", str, f"{loc}: passage")
        ents: list[str] = []
        for en, e in enumerate(need(passage, "entities", list, f"{loc}: passage")):
            eloc = f"{loc}: passage.entities[{en}]"
            t = e.get("text") if isinstance(e, dict) else None
            if t is None:
                t = raw[need(e, "start", int, eloc): need(e, "end", int, eloc) + 1]
            if t and t not in ents:
                ents.append(t)
        if not ents:
            raise DataError(f"{loc}: passage.entities is empty: a ReCoRD query chooses among the passage's entities")
        text = _HIGHLIGHT.sub(lambda m: (m.group(1) or ".") + " ", raw)
        out = []
        for qn, q in enumerate(need(rec, "qas", list)):
            qloc = f"{loc}: qas[{qn}]"
            # without an idx, a query is named by its passage too: each passage's first query is not one group
            query, qidx = need(q, "query", str, qloc), q.get("idx", f"{rec.get('idx', pos)}-{qn}")
            if "@placeholder" not in query:
                raise DataError(f"{qloc}: field 'query' has no '@placeholder': {query!r}")
            golds = list(dict.fromkeys(self._answer(a, raw, f"{qloc}.answers[{an}]")
                                       for an, a in enumerate(q.get("answers") or [])))
            meta = {"idx": qidx, "passage": rec.get("idx", pos), "answers": golds, "where": qloc}
            if family == "encoder":
                out += [Instance(f"q{qidx}-c{j}", text, query.replace("@placeholder", e), "", BOOL,
                                 int(e in golds) if golds else None, f"q{qidx}", {**meta, "entity": e})
                        for j, e in enumerate(ents)]
                continue
            label = next((j for j, e in enumerate(ents) if e in golds), None)
            if family == "seq2seq":
                src, cands = f"record query: {query} entities: {', '.join(ents)} passage: {text}", tuple(ents)
            else:
                pre, post = query.split("@placeholder", 1)
                src = f"{text}\n{pre.rstrip()}"
                cands = tuple((" " if pre.strip() else "") + e + post for e in ents)
            out.append(Instance(f"q{qidx}", text, query, src, cands, label, None, {**meta, "entities": ents}))
        return out

    @staticmethod
    def _answer(a, raw: str, loc: str) -> str:
        if isinstance(a, dict) and isinstance(a.get("text"), str):
            return a["text"]
        return raw[need(a, "start", int, loc): need(a, "end", int, loc) + 1]

    def _texts(self, instances, preds, family) -> list[tuple[Instance, str]]:
        if family == "encoder":
            return [(i, i.meta["entity"]) for i in _group_argmax(instances, preds).values()]
        ents = [i.meta["entities"] for i in instances]
        return [(i, e[int(p)] if _valid(p, len(e)) else "")
                for i, e, p in zip(instances, ents, preds, strict=True)]

    def _pairs(self, instances, preds, family):
        rows = self._texts(instances, preds, family)
        if not all(i.meta["answers"] for i, _ in rows):
            raise DataError(f"{self.name}: some queries have no gold answers (test split?)")
        return [i.meta["answers"] for i, _ in rows], [t for _, t in rows], [i for i, _ in rows]

    def submission(self, instances, predictions, family):
        return [{"idx": i.meta["idx"], "label": t} for i, t in self._texts(list(instances), list(predictions), family)]


# ---------------------------------------------------------------------- user data
@dataclass(frozen=True)
class UserTask(ClassTask):
    """Classification over the user's own rows: one or two text fields, string labels."""
    text_fields: tuple[str, ...] = ("text",)
    metrics: tuple[str, ...] = ("accuracy", "f1_macro")

    def format(self, rec, loc):
        vals = [need(rec, f) for f in self.text_fields]
        named = [f"{f}: {v}" for f, v in zip(self.text_fields, vals)]
        opts = ", ".join(self.labels[:-1]) + " or " + self.labels[-1]
        dec = "\n".join(named) + f"\nQuestion: {opts}?\nAnswer:"
        return vals[0], (vals[1] if len(vals) > 1 else None), f"{self.name} " + " ".join(named), dec

    def _label_out(self, pred):
        """The user's own label as written (SuperGLUE's lowercase true/false is for its own tasks)."""
        return self.labels[int(pred) if _valid(pred, self.num_labels) else 0]

    def metadata(self) -> dict:
        return {**super().metadata(), "custom": True, "text_fields": list(self.text_fields),
                "label_field": self.label_field}


def user_task(name: str, labels: list[str], text_fields, label_field):
    """A classification Task over the user's own data (metrics accuracy + f1_macro)."""
    labels = tuple(str(x) for x in labels)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise DataError(f"task {name!r}: labels {list(labels)!r}: expected at least two distinct labels")
    if not 1 <= len(text_fields) <= 2:
        raise DataError(f"text_fields {list(text_fields)!r}: expected one or two field names")
    return UserTask(name=name, labels=labels, verbalizers=labels, main_metric="accuracy",
                    text_fields=tuple(text_fields), label_field=label_field)


# ---------------------------------------------------------------------- registry
RTE_LABELS = ("entailment", "not_entailment")
YES_NO = (" No", " Yes")
TASKS: dict[str, Task] = {t.name: t for t in [
    ClassTask("BoolQ", BOOL, BOOL, "accuracy", fmt=_boolq, decoder_words=(" False", " True")),
    ClassTask("CB", ("entailment", "contradiction", "neutral"), ("entailment", "contradiction", "neutral"),
              "f1_macro", ("accuracy", "f1_macro"), fmt=_nli("cb", "premise", "hypothesis",
                                                             "True, False, or Neither?"),
              decoder_words=(" True", " False", " Neither")),
    COPATask("COPA", BOOL, ("choice1", "choice2"), "accuracy", is_choice=True),
    MultiRCTask("MultiRC", BOOL, BOOL, "f1a", ("f1a", "em")),
    ReCoRDTask("ReCoRD", BOOL, (), "f1", ("f1", "em"), is_choice=True),
    ClassTask("RTE", RTE_LABELS, RTE_LABELS, "accuracy", fmt=_nli("rte", "premise", "hypothesis", "True or False?"),
              decoder_words=(" True", " False")),
    ClassTask("WiC", BOOL, BOOL, "accuracy", fmt=_wic, decoder_words=YES_NO),
    ClassTask("WSC", BOOL, BOOL, "accuracy", fmt=_wsc, decoder_words=YES_NO),
    ClassTask("AX-b", RTE_LABELS, RTE_LABELS, "matthews", ("matthews",),
              fmt=_nli("rte", "sentence1", "sentence2", "True or False?"), decoder_words=(" True", " False")),
    ClassTask("AX-g", RTE_LABELS, RTE_LABELS, "accuracy", ("accuracy", "gender_parity"),
              fmt=_nli("rte", "premise", "hypothesis", "True or False?"), decoder_words=(" True", " False")),
]}


def _key(name: str) -> str:
    return re.sub(r"[-_ ]", "", str(name)).lower()


def task_from_metadata(meta: dict, where: str = "prompt") -> Task:
    """The task a prompt was saved with (``Task.metadata``): a SuperGLUE task by name, or the user's."""
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise DataError(f"{where}: task metadata {meta!r} has no name")
    if not meta.get("custom"):
        return get_task(meta["name"])
    try:
        return user_task(meta["name"], meta["labels"], meta["text_fields"], meta.get("label_field"))
    except (KeyError, TypeError) as e:
        raise DataError(f"{where}: custom task metadata is incomplete ({e})") from None


def get_task(name: str) -> Task:
    """Task by name, case-insensitive ("cb", "AX-b", "axb" ...)."""
    found = {_key(k): t for k, t in TASKS.items()}.get(_key(name))
    if found is None:
        raise DataError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return found
