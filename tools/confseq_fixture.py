"""Write tests/fixtures/confseq_capital.json: the capital of the without-replacement betting confidence sequence as
the authors' own implementation computes it, for tests/test_sequential.py to check densepure.core.sequential against.

The oracle is ``confseq.betting.betting_mart`` of confseq 0.0.11 (Waudby-Smith and Ramdas's package, MIT licence),
unchanged: a convex combination (``convex_comb=True``) of the positive and negative capital processes for sampling
without replacement (``N``), with the bets truncated at ``trunc_scale / mu_t(m)`` (``m_trunc=True``). The bets are
handed to it as functions: the predictable plug-in of each bet scale, re-derived here with plain loops from its
formula. The diversified capital is the mean over the scales of confseq's capital at each scale.

    pip download --no-deps --no-binary :all: confseq==0.0.11 && tar xzf confseq-0.0.11.tar.gz
    mkdir stub && touch stub/multiprocess.py   # imported by confseq.misc, unused by betting_mart
    PYTHONPATH=confseq-0.0.11/src:stub python tools/confseq_fixture.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from confseq.betting import betting_mart

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "confseq_capital.json"
SHARES = (1 / 8, 1 / 4, 1 / 2, 1.0)
TRUNCATION = 0.75


def plug_in_bets(x, alpha: float, horizon: float) -> np.ndarray:
    """lambda_t = sqrt(2 log(2 / alpha) / (sigma2_{t-1} horizon)), sigma2_{t-1} = (1/4 + sum_{i<t} (x_i -
    xbar_{i-1})^2) / t with xbar_{i-1} = (1/2 + sum_{j<i} x_j) / i: a function of the draws before t only."""
    bets, squares, total = [], 0.0, 0.0
    for t, value in enumerate(x, start=1):
        bets.append(math.sqrt(2 * math.log(2 / alpha) / ((0.25 + squares) / t * horizon)))
        squares += (value - (0.5 + total) / t) ** 2
        total += value
    return np.array(bets)


def capital(x, N: int, m: float, alpha: float, horizon: float, theta: float) -> list[float]:
    """log of the diversified capital at each t."""
    per_scale = []
    for share in SHARES:
        h = max(1.0, share * horizon)
        per_scale.append(betting_mart(np.asarray(x, float), m, alpha=alpha, N=N, convex_comb=True, theta=theta,
                                      trunc_scale=TRUNCATION, m_trunc=True,
                                      lambdas_fn_positive=lambda xs, _m, h=h: plug_in_bets(xs, alpha, h),
                                      lambdas_fn_negative=lambda xs, _m, h=h: plug_in_bets(xs, alpha, h)))
    return np.log(np.mean(per_scale, axis=0)).tolist()


def main() -> None:
    rng = np.random.default_rng(2026)
    paired = rng.permutation(np.repeat([1.0, 0.0, 0.5], [9, 3, 48]))  # 60 paired images, 9 vs 3 discordant
    cell = rng.permutation(np.repeat([1.0, 0.0], [27, 13]))            # 40 images, 27 certified
    cases = []
    for name, x, n_draws in (("paired", paired, 45), ("cell", cell, 40)):
        N = len(x)
        for theta in (0.5, 0.9):
            for horizon in (N, N // 2):
                for m in (0.35, 0.45, 0.5, 0.55, 0.6, 0.7):
                    m = round(m * 2 * N) / (2 * N)  # on the grid of candidate means
                    cases.append({"population": name, "N": N, "x": x[:n_draws].tolist(), "alpha": 0.05,
                                  "theta": theta, "horizon": horizon, "m": m,
                                  "log_capital": capital(x[:n_draws], N, m, 0.05, horizon, theta)})
    OUT.write_text(json.dumps({"source": "confseq 0.0.11, confseq.betting.betting_mart (tools/confseq_fixture.py)",
                               "cases": cases}, indent=1) + "\n")
    print(f"{OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
