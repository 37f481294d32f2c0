#!/usr/bin/env python3
"""The reference for canary-judge's fixed-sample statistics, computed with SciPy.

Reads a JSON list of cases on stdin and prints a JSON list of results, one per case, in order.
Infinities are written as the strings "+Inf" / "-Inf" (JSON has no literal for them).

Case kinds and what answers them:

- "mwu": scipy.stats.mannwhitneyu(x, y, use_continuity=True, alternative, method).
- "hl": the Hodges-Lehmann shift and its interval by the rule documented in
  crates/judge/src/rank.rs: the median of all differences x_i - y_j, and [d_(k), d_(N+1-k)]
  where, for the exact method, k is the largest integer >= 1 with P(U <= k-1) <= alpha/2 (with
  a relative slack of 1e-12), P from SciPy's own exact null distribution of U
  (scipy.stats._mannwhitneyu._MWU, the class mannwhitneyu's exact p-values come from); for the
  asymptotic method k = floor(n1*n2/2 + 1/2 - norm.isf(alpha/2) * sigma) with the tie-corrected
  sigma. k = 0 (no k >= 1) means an unbounded interval.
- "rate": scipy.stats.binomtest(k1, k1 + k2, p0, alternative) with
  p0 = rho0*t1 / (rho0*t1 + t2) (t1/(t1+t2) when rho0 = 1), its proportion_ci(method="exact"),
  and the same Clopper-Pearson ends from scipy.special.betaincinv (proportion_ci finds them with
  brentq at xtol=2e-12; betaincinv is exact to double precision, so the Rust side is held to
  1e-9 against it and to brentq's tolerance against proportion_ci).
- "levene": scipy.stats.levene(x, y, center="median") and, for the one-sided p-values,
  scipy.stats.ttest_ind on the absolute deviations from each sample's median.
- "beta_mixture": ln of the Beta-mixture Bayes factor from scipy.special.betaln / betainc.
"""

import json
import math
import sys

import numpy as np
from scipy import special, stats
from scipy.stats._mannwhitneyu import _MWU


def num(v):
    v = float(v)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return v


def resolve(method, x, y, ties):
    if method != "auto":
        return method
    if (len(x) > 8 and len(y) > 8) or ties:
        return "asymptotic"
    return "exact"


def has_ties(x, y):
    pooled = np.concatenate([x, y])
    return len(np.unique(pooled)) < len(pooled)


def sigma(x, y):
    n1, n2 = len(x), len(y)
    n = n1 + n2
    _, t = np.unique(np.concatenate([x, y]), return_counts=True)
    t = t.astype(float)
    tie_term = np.sum(t**3 - t)
    return math.sqrt(max(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))), 0.0))


def mwu(case):
    x, y = np.array(case["x"], float), np.array(case["y"], float)
    res = stats.mannwhitneyu(x, y, use_continuity=True, alternative=case["alternative"],
                             method=case["method"])
    return {"u": num(res.statistic), "p": num(res.pvalue)}


def hl(case):
    x, y = np.array(case["x"], float), np.array(case["y"], float)
    n1, n2 = len(x), len(y)
    total = n1 * n2
    alpha = 1 - case["confidence"]
    method = resolve(case["method"], x, y, has_ties(x, y))
    d = np.sort((x[:, None] - y[None, :]).ravel())
    estimate = float(np.median(d))
    half = alpha / 2 * (1 + 1e-12)
    if method == "exact":
        dist = _MWU(n1, n2)
        cdf = dist.cdf(np.arange(total // 2 + 1))
        order = 0
        for j, c in enumerate(np.atleast_1d(cdf)):
            if c > half:
                break
            order = j + 1
        order = min(order, (total + 1) // 2)
    else:
        z = stats.norm.isf(alpha / 2)
        k = math.floor(total / 2 + 0.5 - z * sigma(x, y))
        order = 0 if k < 1 else min(k, (total + 1) // 2)
    if order == 0:
        lower, upper = -math.inf, math.inf
    else:
        lower, upper = d[order - 1], d[total - order]
    return {"estimate": num(estimate), "lower": num(lower), "upper": num(upper), "order": order}


def rate(case):
    k1, t1, k2, t2 = case["k1"], case["t1"], case["k2"], case["t2"]
    rho0, alt, conf = case["null_ratio"], case["alternative"], case["confidence"]
    n = k1 + k2
    p0 = t1 / (t1 + t2) if rho0 == 1.0 else rho0 * t1 / (rho0 * t1 + t2)
    res = stats.binomtest(k1, n, p0, alternative=alt)
    ci = res.proportion_ci(confidence_level=conf, method="exact")
    alpha = 1 - conf
    tail = alpha / 2 if alt == "two-sided" else alpha
    lo = 0.0 if k1 == 0 else special.betaincinv(k1, n - k1 + 1, tail)
    hi = 1.0 if k1 == n else special.betainccinv(k1 + 1, n - k1, tail)
    if alt == "less":
        lo = 0.0
    if alt == "greater":
        hi = 1.0

    def ratio(p):
        return math.inf if p >= 1.0 else p / (1 - p) * (t2 / t1)

    return {
        "p": num(res.pvalue),
        "ci_low": num(ci.low), "ci_high": num(ci.high),
        "share_low": num(lo), "share_high": num(hi),
        "ratio_low": num(ratio(lo)), "ratio_high": num(ratio(hi)),
        "rate_ratio": num(math.inf if k2 == 0 else (k1 / t1) / (k2 / t2)),
    }


def levene(case):
    x, y = np.array(case["x"], float), np.array(case["y"], float)
    res = stats.levene(x, y, center="median")
    zx, zy = np.abs(x - np.median(x)), np.abs(y - np.median(y))
    greater = stats.ttest_ind(zx, zy, alternative="greater").pvalue
    less = stats.ttest_ind(zx, zy, alternative="less").pvalue
    mx, my = np.median(zx), np.median(zy)
    ratio = 1.0 if mx == 0 and my == 0 else (math.inf if my == 0 else mx / my)
    return {"w": num(res.statistic), "p": num(res.pvalue), "p_greater": num(greater),
            "p_less": num(less), "spread_ratio": num(ratio)}


def beta_mixture(case):
    s, f, p0, c, side = case["s"], case["f"], case["p0"], case["c"], case["side"]
    a, b = c * p0, c * (1 - p0)
    ln_null = s * math.log(p0) + f * math.log1p(-p0)
    mix = special.betaln(a + s, b + f) - special.betaln(a, b)
    if side == "greater":
        mix += math.log(special.betaincc(a + s, b + f, p0)) - math.log(special.betaincc(a, b, p0))
    elif side == "less":
        mix += math.log(special.betainc(a + s, b + f, p0)) - math.log(special.betainc(a, b, p0))
    return {"ln_e": num(mix - ln_null)}


KINDS = {"mwu": mwu, "hl": hl, "rate": rate, "levene": levene, "beta_mixture": beta_mixture}


def main():
    cases = json.load(sys.stdin)
    out = [KINDS[case["kind"]](case) for case in cases]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
