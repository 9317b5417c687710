"""Turn logits into (label, probability) pairs, best first."""
import math


def postprocess(logits, labels):
    peak = max(logits)
    exps = [math.exp(x - peak) for x in logits]
    total = sum(exps)
    return sorted(((labels[i], e / total) for i, e in enumerate(exps)), key=lambda p: -p[1])
