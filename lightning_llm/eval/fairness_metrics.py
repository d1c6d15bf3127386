"""Group fairness and bias amplification as pure functions, and the definitions reported with them.

Pairs are (group, output): the protected attribute A (a group) and the task's output T (a predicted label, or an
attribute word found in a generation). Per-group confusion counts come from torchmetrics
(`binary_groups_stat_rates`); torchmetrics' own `demographic_parity` / `equal_opportunity` report only the
min/max ratio (0 where every rate is 0), so the differences and equalized odds are computed here from those counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torchmetrics.functional.classification import binary_groups_stat_rates

from lightning_llm.eval.metrics import METRIC_DEFINITIONS

Pair = tuple[str, str]  # (group, output)

FAIRNESS_METRIC_DEFINITIONS: dict[str, str] = {
    "demographic_parity_difference": "max - min over groups of the positive-prediction rate P(pred = positive_label "
    "| group); 0 = parity",
    "demographic_parity_ratio": "min / max over groups of the positive-prediction rate (torchmetrics "
    "demographic_parity); 1 = parity, 1 also when no group gets a positive prediction",
    "equalized_odds_difference": "max(TPR range, FPR range): the range (max - min) over groups of the true-positive "
    "rate P(pred = positive | gold = positive) and of the false-positive rate P(pred = positive | gold != positive); "
    "groups where a rate is undefined are left out of its range (fairlearn's equalized_odds_difference)",
    "equal_opportunity_difference": "the range (max - min) over groups of the true-positive rate",
    "worst_group_acc": "the lowest per-group accuracy",
    "bias_amplification": "Zhao et al. 2017: with b(o, g) = c(o, g) / sum_g' c(o, g') the share of output o's "
    "items in group g, (1/|O|) sum_o sum_{g: b_ref(o, g) > 1/|G|} (b_pred(o, g) - b_ref(o, g)); b_ref from the "
    "reference (training) pairs, b_pred from the model's; outputs missing from either are left out; "
    "> 0 = the model exaggerates the reference's skew",
    "bias_amp_a_to_t": "Wang & Russakovsky 2021 BiasAmp A->T: mean over (group a, output t) of y_at * d_at + "
    "(1 - y_at) * (-d_at), y_at = [P_ref(a, t) > P_ref(a) P_ref(t)], d_at = P_pred(t | a) - P_true(t | a); "
    "> 0 = the group steers the model's outputs more than it does in the data",
    "bias_amp_t_to_a": "Wang & Russakovsky 2021 BiasAmp T->A: as bias_amp_a_to_t with d_at = P_pred(a | t) - "
    "P_true(a | t), the model naming the group given the output",
}
METRIC_DEFINITIONS.update(FAIRNESS_METRIC_DEFINITIONS)


def group_rates(
    preds: Sequence[int], golds: Sequence[int], groups: Sequence[str], positive: int
) -> dict[str, dict[str, float | None]]:
    """Per group: positive_rate P(pred = positive), tpr P(pred = positive | gold = positive) and fpr
    P(pred = positive | gold != positive) (None where the group has no such gold), from torchmetrics' counts."""
    names = sorted(set(groups))
    ids = torch.tensor([names.index(g) for g in groups])
    pred = torch.tensor([int(p == positive) for p in preds])
    gold = torch.tensor([int(g == positive) for g in golds])
    shares = binary_groups_stat_rates(pred, gold, ids, len(names))
    out = {}
    for i, name in enumerate(names):
        tp, fp, tn, fn = shares[f"group_{i}"].tolist()  # shares of the group's items
        out[name] = {
            "positive_rate": tp + fp,
            "tpr": tp / (tp + fn) if tp + fn > 0 else None,
            "fpr": fp / (fp + tn) if fp + tn > 0 else None,
        }
    return out


def _spread(values: list[float | None]) -> float:
    defined = [v for v in values if v is not None]
    return max(defined) - min(defined) if len(defined) > 1 else 0.0


def demographic_parity(rates: dict[str, dict[str, float | None]]) -> tuple[float, float]:
    """(difference, ratio) of the groups' positive-prediction rates: max - min, and min / max (1 when max = 0)."""
    positive = [r["positive_rate"] for r in rates.values()]
    return max(positive) - min(positive), (min(positive) / max(positive) if max(positive) > 0 else 1.0)


def equalized_odds(rates: dict[str, dict[str, float | None]]) -> tuple[float, float]:
    """(equalized odds difference, equal opportunity difference): max(TPR range, FPR range), and the TPR range."""
    tpr = _spread([r["tpr"] for r in rates.values()])
    return max(tpr, _spread([r["fpr"] for r in rates.values()])), tpr


def _conditional(pairs: Sequence[Pair], given: int) -> dict[str, dict[str, float]]:
    """P(other | given) from pairs: given=0 conditions on the group, given=1 on the output."""
    counts: dict[str, Counter] = {}
    for pair in pairs:
        counts.setdefault(pair[given], Counter())[pair[1 - given]] += 1
    return {key: {k: v / sum(c.values()) for k, v in c.items()} for key, c in counts.items()}


def bias_amplification(reference: Sequence[Pair], predicted: Sequence[Pair]) -> float:
    """Zhao et al. 2017 ("Men also like shopping"), eq. 2:

        b(o, g) = c(o, g) / sum_g' c(o, g')
        BiasAmp = 1/|O| * sum_o sum_{g : b_ref(o, g) > 1/|G|} (b_pred(o, g) - b_ref(o, g))

    `reference`: (group, gold output) pairs of the training/reference data; `predicted`: (group, predicted
    output) pairs. O: the outputs present in both; G: the groups of either.
    """
    groups = {g for g, _ in reference} | {g for g, _ in predicted}
    b_ref, b_pred = _conditional(reference, 1), _conditional(predicted, 1)
    outputs = [o for o in b_ref if o in b_pred]
    if not outputs:
        return 0.0
    total = sum(
        b_pred[o].get(g, 0.0) - share for o in outputs for g, share in b_ref[o].items() if share > 1 / len(groups)
    )
    return total / len(outputs)


def directional_bias_amplification(
    reference: Sequence[Pair], truth: Sequence[Pair], predicted: Sequence[Pair], direction: str
) -> float:
    """Wang & Russakovsky 2021 ("Directional Bias Amplification"), eq. 1:

        BiasAmp = 1/(|A||T|) * sum_{a, t} y_at * d_at + (1 - y_at) * (-d_at)
        y_at = 1[P(A=a, T=t) > P(A=a) P(T=t)]            on `reference` (the training co-occurrence)
        d_at = P(T^=t | A=a) - P(T=t | A=a)                direction "a_to_t": `predicted` vs `truth`
        d_at = P(A^=a | T=t) - P(A=a | T=t)                direction "t_to_a"

    Pairs are (a, t). (a, t) whose conditioning value is absent from `predicted` or `truth` are left out.
    """
    given = {"a_to_t": 0, "t_to_a": 1}[direction]
    n = len(reference)
    if not n:
        return 0.0
    joint = Counter(reference)
    p_a, p_t = Counter(a for a, _ in reference), Counter(t for _, t in reference)
    groups = sorted({a for a, _ in (*reference, *truth, *predicted)})
    outputs = sorted({t for _, t in (*reference, *truth, *predicted)})
    pred, true = _conditional(predicted, given), _conditional(truth, given)
    terms = []
    for a in groups:
        for t in outputs:
            key, other = (a, t) if given == 0 else (t, a)
            if key not in pred or key not in true:
                continue
            d = pred[key].get(other, 0.0) - true[key].get(other, 0.0)
            y = joint[(a, t)] / n > (p_a[a] / n) * (p_t[t] / n)
            terms.append(d if y else -d)
    return sum(terms) / len(terms) if terms else 0.0
