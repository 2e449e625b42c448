"""Reference values for analysis/probe.go, from scikit-learn and numpy.

Command (from analysis/testdata):  /usr/bin/python3 make_probe_golden.py > probe_golden.json
Debian bookworm: python3-sklearn 1.2.1, python3-numpy 1.24.

- logistic: L2-regularised logistic regression with an unpenalised intercept.
  probe.go minimises mean log-loss + (l2/2)·|w|²; scikit-learn minimises
  0.5·|w|² + C·Σ log-loss, the same optimum for C = 1/(n·l2).
- ranking: features ordered by |mean(class) − mean(rest)|, largest first.
- f1: sklearn.metrics.f1_score, binary (pos_label=1) and average="macro".
"""
import json
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

# newton-cg's own stopping rule never reports convergence at this tol, but
# the optimality check below (gradient of the objective < 1e-9) shows the
# solution is at float64 precision. (lbfgs stops at gradients ~1e-5.)
warnings.filterwarnings("ignore", category=ConvergenceWarning)

rng = np.random.RandomState(20240601)
cases = []
for name, n, k, l2, sep in [("separable-ish", 120, 5, 1e-2, 1.5), ("noisy", 200, 8, 1e-3, 0.4), ("strong-penalty", 80, 3, 0.5, 1.0)]:
    X = rng.randn(n, k).astype(np.float32) * rng.uniform(0.5, 3.0, size=k).astype(np.float32)
    w_true = rng.randn(k)
    logits = sep * (X.astype(np.float64) @ w_true) + 0.3
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logits))).astype(int)
    clf = LogisticRegression(C=1.0 / (n * l2), penalty="l2", fit_intercept=True, solver="newton-cg", tol=1e-10, max_iter=100000)
    clf.fit(X.astype(np.float64), y)
    w, b = clf.coef_[0], clf.intercept_[0]
    r = (1 / (1 + np.exp(-(X.astype(np.float64) @ w + b))) - y) / n
    assert np.abs(np.append(X.T.astype(np.float64) @ r + l2 * w, r.sum())).max() < 1e-9, name
    diff = np.abs(X[y == 1].astype(np.float64).mean(0) - X[y == 0].astype(np.float64).mean(0))
    ranking = sorted(range(k), key=lambda j: (-diff[j], j))
    cases.append(dict(name=name, l2=l2, X=X.tolist(), y=y.tolist(), coef=clf.coef_[0].tolist(),
                      intercept=float(clf.intercept_[0]), ranking=ranking))

f1_cases = []
for n, classes in [(50, 2), (60, 3), (40, 5)]:
    truth = rng.randint(0, classes, size=n)
    pred = np.where(rng.uniform(size=n) < 0.6, truth, rng.randint(0, classes, size=n))
    entry = dict(classes=classes, truth=truth.tolist(), pred=pred.tolist(),
                 macro=float(f1_score(truth, pred, average="macro", zero_division=0)))
    if classes == 2:
        entry["binary"] = float(f1_score(truth, pred, pos_label=1, zero_division=0))
    f1_cases.append(entry)

print(json.dumps(dict(logistic=cases, f1=f1_cases)))
