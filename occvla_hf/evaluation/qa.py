"""nuScenes-QA accuracy: answer normalisation, accuracy per question type and hop, and overall.

Follows qiantianwen/NuScenes-QA `src/execution/result_eval.py::Eval`: a question is correct when the predicted answer
equals `str(answer)`; accuracy = correct / total, counted over the whole split per `template_type` (exist, count,
object, status, comparison), per `template_type` and `num_hop` (the paper's H0 / H1 columns) and over all questions
("Overall", the paper's "Acc."). The official models classify over the closed vocabulary of 30 answers in
`src/datasets/answer_dict.json` (`occvla_hf.constants.NUSCENES_QA_ANSWERS`), so their output needs no cleaning.

Deviations. (1) A generative model writes free text ("Yes, there is.", "Three", "The car."), so the prediction and
the reference both go through `normalize_answer` before the exact match. The normalisation is the identity on the 30
official answers, so a prediction that is an official answer is scored exactly as the official code scores it.
(2) The report also gives accuracy per hop over all types (`by_hop`), which the official log does not print.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

import numpy as np

from occvla_hf.class_labels import is_class_id, label_name
from occvla_hf.constants import QA_HOPS, QA_QUESTION_TYPES

_NUMBER_WORDS = {
    word: str(n)
    for n, word in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))
}
_NUMBER_WORDS["none"] = "0"
_ARTICLES = frozenset({"a", "an", "the"})
_YES_NO = frozenset({"yes", "no"})
# "-", "_" and "/" separate words ("traffic-cone", "construction_vehicle"); other punctuation is dropped.
_WORD_SEPARATORS = str.maketrans({"-": " ", "_": " ", "/": " "})
_DROP_PUNCTUATION = str.maketrans("", "", "".join(c for c in string.punctuation if c not in "-_/"))


def normalize_answer(answer: str | int) -> str:
    """Canonical form of an answer, comparable with the official vocabulary.

    Lower case; "-", "_", "/" become spaces; other punctuation is dropped; articles (a, an, the) are removed; number
    words zero..ten (and "none") become digits; an answer that starts with "yes" or "no" as a word ("yes, there is")
    becomes that word; whitespace is collapsed. Examples: "Yes." -> "yes", "Three" -> "3",
    "The Traffic-Cone" -> "traffic cone".
    """
    words = str(answer).lower().translate(_WORD_SEPARATORS).translate(_DROP_PUNCTUATION).split()
    words = [_NUMBER_WORDS.get(word, word) for word in words if word not in _ARTICLES]
    if words and words[0] in _YES_NO:
        return words[0]
    return " ".join(words)


def _hop_name(num_hop: int) -> str:
    if isinstance(num_hop, bool) or not isinstance(num_hop, (int, np.integer)) or not 0 <= num_hop < len(QA_HOPS):
        raise ValueError(f"num_hop: expected an int in 0..{len(QA_HOPS) - 1}, got {num_hop!r}")
    return QA_HOPS[num_hop]


def _cell(correct: int, total: int) -> dict:
    """Accuracy of one group: percent (None without questions), correct and total counts."""
    return {"accuracy_pct": 100.0 * correct / total if total else None, "correct": int(correct), "total": int(total)}


class QAAccuracyAccumulator:
    """Counts correct answers per (question type, hop) over batches and reports accuracies (accumulate-then-divide)."""

    def __init__(self) -> None:
        self._correct = np.zeros((len(QA_QUESTION_TYPES), len(QA_HOPS)), dtype=np.int64)
        self._total = np.zeros_like(self._correct)

    def update(
        self,
        predictions: Sequence[str],
        answers: Sequence[str | int],
        template_types: Sequence[str],
        num_hops: Sequence[int],
    ) -> None:
        """Add a batch: generated answers, reference answers, question types (QA_QUESTION_TYPES), hops (0 or 1)."""
        lengths = {len(predictions), len(answers), len(template_types), len(num_hops)}
        if len(lengths) != 1:
            raise ValueError(
                "predictions/answers/template_types/num_hops: expected equal lengths, got "
                f"{len(predictions)}, {len(answers)}, {len(template_types)}, {len(num_hops)}"
            )
        for prediction, answer, template_type, num_hop in zip(predictions, answers, template_types, num_hops):
            if is_class_id(template_type):
                template_type = label_name("template_type", template_type)  # the class id of a built dataset
            if template_type not in QA_QUESTION_TYPES:
                raise ValueError(f"template_type: expected one of {QA_QUESTION_TYPES}, got {template_type!r}")
            index = QA_QUESTION_TYPES.index(template_type), QA_HOPS.index(_hop_name(num_hop))
            self._total[index] += 1
            self._correct[index] += normalize_answer(prediction) == normalize_answer(answer)

    def compute(self) -> dict:
        """The JSON-ready report.

        `num_questions`; `overall`; `by_hop` {H0, H1}; `by_type` {type: {H0, H1, all}}; each group a dict with
        `accuracy_pct` (None when the group has no question), `correct` and `total`.
        """
        total = int(self._total.sum())
        if total == 0:
            raise ValueError("QAAccuracyAccumulator: no question was added")
        by_type = {}
        for t, template_type in enumerate(QA_QUESTION_TYPES):
            by_type[template_type] = {
                hop: _cell(self._correct[t, h], self._total[t, h]) for h, hop in enumerate(QA_HOPS)
            }
            by_type[template_type]["all"] = _cell(self._correct[t].sum(), self._total[t].sum())
        return {
            "num_questions": total,
            "overall": _cell(self._correct.sum(), total),
            "by_hop": {hop: _cell(self._correct[:, h].sum(), self._total[:, h].sum()) for h, hop in enumerate(QA_HOPS)},
            "by_type": by_type,
        }


def format_qa_table(rows: Mapping[str, Mapping]) -> str:
    """A text table in the nuScenes-QA paper's layout: per type H0 / H1 / All accuracy (%), then overall "Acc.".

    `rows` maps a method name to a `QAAccuracyAccumulator.compute()` report; groups without questions print "-".
    """
    cell = 5
    groups = [*QA_HOPS, "all"]
    name_width = max([len("Method"), *(len(name) for name in rows)])
    type_width = len(groups) * (cell + 1) - 1

    def fmt(group: Mapping) -> str:
        value = group["accuracy_pct"]
        return f"{value:>{cell}.1f}" if value is not None else f"{'-':>{cell}}"

    titles = " | ".join(f"{t.capitalize():^{type_width}}" for t in QA_QUESTION_TYPES)
    lines = [f"{'':<{name_width}} | {titles} |"]
    subtitles = " | ".join(
        " ".join(f"{g.capitalize() if g == 'all' else g:>{cell}}" for g in groups) for _ in QA_QUESTION_TYPES
    )
    lines.append(f"{'Method':<{name_width}} | {subtitles} | {'Acc.':>{cell}}")
    lines.append("-" * len(lines[-1]))
    for name, report in rows.items():
        cells = " | ".join(" ".join(fmt(report["by_type"][t][g]) for g in groups) for t in QA_QUESTION_TYPES)
        lines.append(f"{name:<{name_width}} | {cells} | {fmt(report['overall'])}")
    return "\n".join(line.rstrip() for line in lines)
