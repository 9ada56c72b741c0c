"""The gradient aggregators (all K task gradients at once): declared properties for every registered
one, exact values on one fixed matrix, cross-checks against torchjd and against brute-force references
written from the papers' equations, then the engine and the trainer end to end."""

from __future__ import annotations

import copy
import itertools
import json
import math
import warnings

import numpy as np
import pytest
import torch

from hf_mtl.tasks import GLUE_TASKS
from hf_mtl.weighting import WEIGHTINGS, build_weighting
from hf_mtl.weighting.pcgrad import pcgrad_weights

from conftest import tiny_model
from test_engine import TASKS, assert_same, engine_gradient, micro_batches, task_gradients, task_rows  # noqa: F401
from test_trainer import datasets, make_trainer  # noqa: F401

try:
    import torchjd.aggregation as torchjd_aggregation
except ImportError:
    torchjd_aggregation = None
needs_torchjd = pytest.mark.skipif(torchjd_aggregation is None, reason="torchjd (test extra) is not installed")

#: Every registered aggregator: each must pin its exact values in `EXACT` below.
AGGREGATORS = [name for name, cls in WEIGHTINGS.items() if cls.kind == "aggregator"]
ALL_TASKS = list(GLUE_TASKS.values())

#: How the update scales when every gradient is multiplied by c > 0: c**degree (1 unless listed).
#: FairGrad at its default α = 2: (1 − α)/(1 + α); MoCo scales every gradient to its loss.
UPDATE_DEGREE = {"nash_mtl": 0, "fairgrad": -1 / 3, "moco": 0}
#: Methods that promise g_iᵀd >= 0 for every task. Not imtl (see test_imtl_can_conflict_with_every_task),
#: cagrad, aligned_mtl, pcgrad (K > 2), db_mtl, gradvac, graddrop, sdmgrad (λ > 0 leaves MGDA's hull), moco and
#: excess_mtl; conflict_free only with linearly independent gradients (test_conflict_free_...).
NON_CONFLICTING = {"mgda", "upgrad", "nash_mtl", "dualproj", "fairgrad"}
#: Randomised per task (each row draws its own order of the others): the update depends on the task order.
ORDER_DEPENDENT = {"pcgrad", "gradvac"}


def build(name, k, seed=0, **hparams):
    """`name` for the first k GLUE tasks with these flags (cagrad_c, db_beta, ...) and `seed` (pcgrad)."""
    return build_weighting(name, ALL_TASKS[:k], hparams=hparams, seed=seed)


def aggregate(name, grads, losses=None, dtype=torch.float32, **hparams):
    """`name`'s update on `grads` as the engine's float32 rows (or `dtype`), returned as float64."""
    grads = torch.as_tensor(grads, dtype=dtype)
    k = grads.shape[0]
    return build(name, k, **hparams).aggregate(grads, losses if losses is not None else [1.0] * k).double()


def random_matrix(k, p=20, seed=0):
    return torch.randn(k, p, generator=torch.Generator().manual_seed(seed))


def assert_close(actual, expected, rtol=1e-5):
    actual, expected = torch.as_tensor(actual, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64)
    assert float((actual - expected).norm()) <= rtol * float(expected.norm()) + 1e-12, (actual, expected)


# Declared properties, every registered aggregator -----------------------------------------------

EDGE_CASES = {
    "random": lambda: random_matrix(3),
    "tiny": lambda: random_matrix(3) * 1e-15,
    "huge": lambda: random_matrix(3) * 1e15,
    "mixed_scales": lambda: random_matrix(3) * torch.tensor([[1e-6], [1.0], [1e6]]),
    "equal_rows": lambda: random_matrix(1).repeat(3, 1),
    "zero_row": lambda: random_matrix(3) * torch.tensor([[1.0], [0.0], [1.0]]),
    "all_zero": lambda: torch.zeros(3, 20),
    "one_task": lambda: random_matrix(1),
    "more_tasks_than_dims": lambda: random_matrix(5, p=3),
}


@pytest.mark.parametrize("case", EDGE_CASES)
@pytest.mark.parametrize("name", AGGREGATORS)
def test_update_is_finite(name, case):
    grads = EDGE_CASES[case]()
    update = aggregate(name, grads)
    assert update.shape == (grads.shape[1],)
    assert torch.isfinite(update).all()
    if case == "all_zero":
        assert not update.any()


@pytest.mark.parametrize("name", AGGREGATORS)
def test_non_finite_gradients_pass_through_to_the_grad_scaler(name):
    grads = random_matrix(3)
    grads[1, 4] = math.inf
    weighting = build(name, 3)
    assert not torch.isfinite(weighting.aggregate(grads, [1.0] * 3)).all()
    assert weighting.state_dict() == build(name, 3).state_dict()  # nothing learned from a faulty step


@pytest.mark.parametrize("name", [n for n in AGGREGATORS if n not in ORDER_DEPENDENT])
def test_permuting_tasks_does_not_change_the_update(name):
    grads, losses = random_matrix(5, seed=1), [0.5, 1.0, 2.0, 3.0, 0.25]
    perm = [3, 0, 4, 2, 1]
    assert_close(aggregate(name, grads[perm], [losses[i] for i in perm]), aggregate(name, grads, losses))


def test_pcgrad_is_permutation_equivariant_for_fixed_orders():
    """PCGrad's random orders make its update order-dependent; with the orders carried along, permuting
    the tasks permutes the weights. K = 2 has one order only, so there the update itself is invariant."""
    grads = random_matrix(4, seed=2).double()
    gram = (grads @ grads.T).numpy()
    orders = [np.random.default_rng(i).permutation(4) for i in range(4)]
    perm = np.array([2, 0, 3, 1])
    inverse = np.argsort(perm)
    moved = [[int(inverse[j]) for j in orders[perm[a]]] for a in range(4)]
    np.testing.assert_allclose(pcgrad_weights(gram[perm][:, perm], moved), pcgrad_weights(gram, orders)[perm], rtol=1e-12)
    two = random_matrix(2, seed=3)
    assert_close(aggregate("pcgrad", two[[1, 0]]), aggregate("pcgrad", two))


@pytest.mark.parametrize("scale", [1e-3, 1e3])
@pytest.mark.parametrize("name", AGGREGATORS)
def test_declared_scale_behaviour(name, scale):
    grads = random_matrix(4, seed=4)
    expected = aggregate(name, grads) * scale ** UPDATE_DEGREE.get(name, 1)
    assert_close(aggregate(name, grads * scale), expected)


@pytest.mark.parametrize("k, p", [(2, 20), (3, 20), (5, 20), (5, 3)])
@pytest.mark.parametrize("name", sorted(NON_CONFLICTING))
def test_no_task_gradient_conflicts_with_the_update(name, k, p):
    for seed in range(5):
        grads = random_matrix(k, p, seed=seed).double()
        update = aggregate(name, grads)
        inner = grads @ update
        assert (inner >= -1e-6 * grads.norm(dim=1) * grads.norm(dim=1).max()).all(), (seed, inner)


@pytest.mark.parametrize("name", ["imtl", "nash_mtl"])
def test_direction_ignores_one_task_loss_scale(name):
    grads = random_matrix(3, seed=5)
    scaled = grads * torch.tensor([[7.0], [1.0], [1.0]])
    base, changed = aggregate(name, grads), aggregate(name, scaled)
    assert torch.nn.functional.cosine_similarity(base, changed, dim=0) > 1 - 1e-6
    if name == "nash_mtl":  # the bargaining solution itself is invariant: α_1 is divided by 7
        assert_close(changed, base, 1e-5)


def test_db_mtl_ignores_one_task_loss_scale():
    """∇log(cL) = ∇log L: scaling task 0's loss (so its gradient and loss value) changes nothing."""
    grads, losses = random_matrix(3, seed=6), [0.7, 1.3, 2.0]
    scaled = grads * torch.tensor([[50.0], [1.0], [1.0]])
    assert_close(aggregate("db_mtl", scaled, [35.0, 1.3, 2.0]), aggregate("db_mtl", grads, losses))


# Exact values: g_1 = (1, 0), g_2 = (-1, 1), G = [[1, -1], [-1, 2]], worked by hand -------------------

R2 = math.sqrt(2.0)
FIXED = [[1.0, 0.0], [-1.0, 1.0]]
EXACT = {
    # g_1·g_2 = -1: g_1^PC = g_1 + g_2/2 = (.5, .5), g_2^PC = g_2 + g_1 = (0, 1); summed.
    "pcgrad": [0.5, 1.5],
    # K = 2 closed form α_1 = (g_2 - g_1)·g_2 / ‖g_1 - g_2‖² = 3/5: d = (1/5, 2/5), g_1·d = g_2·d = ‖d‖² = 1/5.
    "mgda": [0.2, 0.4],
    # π(g_1) = (.5, .5), π(g_2) = (0, 1), averaged.
    "upgrad": [0.25, 0.75],
    # α_2 = 1/(1 + √2) from d·u_1 = d·u_2, α_1 = 1 - α_2: d = (3 - 2√2, √2 - 1).
    "imtl": [3 - 2 * R2, R2 - 1],
    # Gα = 1/α: α_1² = 2 + √2, α_2 = α_1 - 1/α_1; d = (α_1 - α_2, α_2), ‖d‖² = 2.
    "nash_mtl": [1 / math.sqrt(2 + R2), (1 + R2) / math.sqrt(2 + R2)],
    # √G = (G + I)/√5, G^-½ = [[3, 1], [1, 2]]/√5, σ_min = (√5 - 1)/2: α = B·(½, ½) = (√5-1)/√5·(1, ¾).
    "aligned_mtl": [(1 - 1 / math.sqrt(5)) * 0.25, (1 - 1 / math.sqrt(5)) * 0.75],
    # g_0 = (0, ½), c‖g_0‖ = 0.2; the dual (1-w)/2 + 0.2·√(5w² - 6w + 2) decreases on [0, 1]: w = e_1,
    # d = g_0 + 0.2·g_1.
    "cagrad": [0.2, 0.5],
    # One step from zero averages, β = .9, losses (2, .5): m_1 = (.05, 0), m_2 = (-.2, .2);
    # d = ‖m_2‖·(m_1/‖m_1‖ + m_2/‖m_2‖) = (.2(√2 - 1), .2).
    "db_mtl": [0.2 * (R2 - 1), 0.2],
    # s = 0 at the start: IMTL-G on the raw rows.
    "imtl_h": [3 - 2 * R2, R2 - 1],
    # Every target starts at 0: the first step is PCGrad's (cos = -1/√2 < 0 corrects to 0), summed.
    "gradvac": [0.5, 1.5],
    # Coordinate 2: both gradients >= 0 (purity 1), kept. Coordinate 1: (1, -1), purity ½: the positive part 1
    # is kept when U < ½. U of seed 0, step 0 at coordinate 1 is GRADDROP_U0 (pinned below).
    "graddrop": None,
    # u_1 = (1, 0), u_2 = (-1, 1)/√2; u_iᵀĝ = 1 gives ĝ = (1, 1 + √2), Σ g_iᵀĝ = 1 + √2, ‖ĝ‖² = 4 + 2√2:
    # d = (1 + √2)/(4 + 2√2)·ĝ = ĝ/(2√2).
    "conflict_free": [R2 / 4, (R2 + 2) / 4],
    # g_0 = (0, ½) has g_1ᵀg_0 = 0 and g_2ᵀg_0 = ½: it is in the dual cone already.
    "dualproj": [0.0, 0.5],
    # α = 2 has no closed form: the reference is an independent root finder (fairgrad_reference below).
    "fairgrad": None,
    # Shifted rows h_i = g_i + .3 g_0 = g_i + (0, .15): min-norm weight α_1 = (h_2 - h_1)·h_2/‖h_1 - h_2‖² = .63,
    # point (.26, .52), divided by 1 + λ.
    "sdmgrad": [0.2, 0.4],
    # t = 1: y = ½ (L_i g_i/‖g_i‖) = ((1, 0), a(-1, 1)), a = 1/(4√2); λ = Π(½ - .1 (YYᵀ)½) = ½ ∓ 15/640 (the a
    # terms cancel in the projection); d = λ_1 y_1 + λ_2 y_2.
    "moco": [0.4765625 - 0.5234375 / (4 * R2), 0.5234375 / (4 * R2)],
    # The first step only records the excess-risk baselines: w = 1, the sum.
    "excess_mtl": [0.0, 1.0],
}
#: torch.Generator(seed from SeedSequence([0, 0])) draws for graddrop on P = 2, pinned: a change of the stream
#: breaks every resumed graddrop run's reproducibility, so it must be deliberate.
GRADDROP_U0 = (0.13016098737716675, 0.8172805309295654)
ONE_TASK = {"nash_mtl": lambda g: g / g.norm(), "cagrad": lambda g: 1.4 * g, "db_mtl": lambda g: 0.1 * g / 2.0,
            # G w = w^(-1/2): n² w = w^(-1/2), w = n^(-4/3).
            "fairgrad": lambda g: g * g.norm() ** (-4 / 3),
            # y = ½ L g/‖g‖ with L = 2, λ = 1.
            "moco": lambda g: g / g.norm()}


def fairgrad_reference(gram, alpha=2.0):
    """w > 0 with G w = w^(-1/α), by scipy's Levenberg-Marquardt (not our solver) on the residual
    C e^x − c e^(−x/α), scaled by c, in x = log β, w = β/‖g_i‖ (C the cosine matrix, c_i = ‖g_i‖^(1/α − 1))."""
    from scipy.optimize import least_squares

    gram = np.asarray(gram, dtype=np.float64)
    norms = np.sqrt(np.diag(gram))
    cosine, c = gram / np.outer(norms, norms), norms ** (1 / alpha - 1)

    def residual(x):
        return (cosine @ np.exp(x) - c * np.exp(-x / alpha)) / c

    start = np.log(c) * alpha / (alpha + 1)
    return np.exp(least_squares(residual, start, xtol=1e-15, ftol=1e-15, gtol=1e-15, method="lm").x) / norms


EXACT["fairgrad"] = (torch.as_tensor(fairgrad_reference(np.array([[1.0, -1.0], [-1.0, 2.0]]))) @ torch.tensor(FIXED, dtype=torch.float64)).tolist()
EXACT["graddrop"] = [1.0 if GRADDROP_U0[0] < 0.5 else -1.0, 1.0]


@pytest.mark.parametrize("name", AGGREGATORS)
def test_exact_values_on_a_fixed_matrix(name):
    assert_close(aggregate(name, FIXED, [2.0, 0.5]), EXACT[name], 1e-6)
    g = random_matrix(1, seed=7).double()
    assert_close(aggregate(name, g, [2.0]), ONE_TASK.get(name, lambda x: x)(g[0]), 1e-6)


def test_every_registered_aggregator_has_pinned_values():
    assert set(EXACT) == set(AGGREGATORS)


def test_db_mtl_second_step_uses_the_moving_average():
    weighting = build("db_mtl", 2)
    for _ in range(2):
        update = weighting.aggregate(torch.tensor(FIXED), [2.0, 0.5])
    # m_1 = .9·(.05, 0) + (.05, 0) = (.095, 0), m_2 = (-.38, .38).
    assert_close(update, [0.38 * (R2 - 1), 0.38])
    assert weighting.state_dict()["steps"] == 2


def test_imtl_can_conflict_with_every_task():
    """IMTL-G gives equal projections on the unit gradients, but with Σα = 1 they can be negative:
    here the update increases every loss (torchjd's IMTLG gives the same). So it is not in NON_CONFLICTING."""
    grads = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, -1.0], [2.0, -1.0, 0.0]])
    update = aggregate("imtl", grads)
    projections = (grads.double() @ update) / grads.double().norm(dim=1)
    assert (projections < 0).all()
    assert_close(projections, projections.mean().expand(3))
    if torchjd_aggregation is not None:
        assert_close(update, torchjd_aggregation.IMTLG()(grads.double()))


# Cross-checks: torchjd and brute-force references ---------------------------------------------------

CASES = [(k, seed) for k in (2, 3, 5) for seed in (0, 1)]


def torchjd_reference(name, k):
    """torchjd's aggregator with our conventions, and the relative tolerance of the comparison."""
    from torchjd.linalg import QuadprogProjector

    a = torchjd_aggregation
    factories = {
        # torchjd regularises G + 1e-4·I before quadprog by default; without it the QPs are the same.
        "upgrad": lambda: (a.UPGrad(projector=QuadprogProjector(reg_eps=0.0)), 1e-5),
        "imtl": lambda: (a.IMTLG(), 1e-5),
        "aligned_mtl": lambda: (a.AlignedMTL(), 1e-5),  # mean preference, σ_min scale (both defaults)
        # Frank-Wolfe stalls near faces of the simplex (2e-3 seen at K = 5); ours is exact (see below).
        "mgda": lambda: (a.MGDA(epsilon=1e-12, max_iters=5000), 1e-2),
        # CLARABEL (through cvxpy) leaves a duality gap of ~1e-6 relative, ours ~1e-16 (test_cagrad_duality_gap).
        "cagrad": lambda: (a.CAGrad(c=0.4), 1e-3),
        # No clipping inside (max_norm = 0); its cvxpy iterations stop at a residual of 1e-3.
        "nash_mtl": lambda: (a.NashMTL(n_tasks=k, max_norm=0.0), 1e-4),
    }
    try:
        return factories[name]()
    except ImportError as err:  # torchjd installed without its solver extras (quadprog, cvxpy)
        pytest.skip(f"torchjd's counterpart of {name} needs an optional solver: {err}")


@needs_torchjd
@pytest.mark.parametrize("k, seed", CASES)
@pytest.mark.parametrize("name", ["upgrad", "imtl", "aligned_mtl", "mgda", "cagrad", "nash_mtl"])
def test_matches_torchjd(name, k, seed):
    grads = random_matrix(k, seed=seed)
    reference, rtol = torchjd_reference(name, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = reference(grads.double())
    actual = aggregate(name, grads)
    assert_close(actual, expected, rtol)
    if name == "mgda":  # the min-norm point: ours is never longer than Frank-Wolfe's
        assert actual.norm() <= expected.norm() * (1 + 1e-6)


@needs_torchjd
@pytest.mark.parametrize("k, seed", CASES)
def test_pcgrad_matches_torchjd_with_its_own_random_orders(k, seed, monkeypatch):
    """torchjd draws one torch.randperm per task; record them and replay them through our weights. Both sum."""
    grads = random_matrix(k, seed=seed).double()
    drawn, randperm = [], torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **kw: drawn.append(randperm(*a, **kw)) or drawn[-1])
    expected = torchjd_aggregation.PCGrad()(grads)
    monkeypatch.undo()
    weights = pcgrad_weights((grads @ grads.T).numpy(), [p.tolist() for p in drawn])
    assert_close(torch.as_tensor(weights) @ grads, expected, 1e-10)


def pcgrad_brute_force(grads, orders):
    """Algorithm 1 of the paper on the vectors themselves."""
    total = torch.zeros_like(grads[0])
    for i, order in enumerate(orders):
        g = grads[i].clone()
        for j in order:
            if j != i and g @ grads[j] < 0:
                g -= (g @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
        total += g
    return total


@pytest.mark.parametrize("k, seed", CASES)
def test_pcgrad_follows_the_papers_algorithm_with_seeded_orders(k, seed):
    grads = random_matrix(k, seed=seed)
    weighting = build("pcgrad", k, seed=seed)
    orders = weighting.task_orders(0, k)
    assert_close(weighting.aggregate(grads, [1.0] * k), pcgrad_brute_force(grads.double(), orders))
    assert weighting.state_dict()["steps"] == 1


def active_set_minimum(gram, solve):
    """Brute force over active sets: the feasible candidate `solve(free)` (None if infeasible) of least vᵀGv."""
    k = len(gram)
    best = None
    for size in range(1, k + 1):
        for free in itertools.combinations(range(k), size):
            v = solve(np.array(free))
            if v is not None and (best is None or v @ gram @ v < (best @ gram @ best) * (1 - 1e-12)):
                best = v
    return best


def mgda_brute_force(gram):
    """min αᵀGα on the simplex: KKT on every support S ([G_SS 1; 1ᵀ 0][α; μ] = [0; 1]), α_S >= 0."""
    def solve(free):
        n = len(free)
        system = np.block([[gram[np.ix_(free, free)], np.ones((n, 1))], [np.ones((1, n)), np.zeros((1, 1))]])
        alpha = np.zeros(len(gram))
        alpha[free] = np.linalg.lstsq(system, np.r_[np.zeros(n), 1.0], rcond=None)[0][:n]
        return alpha if (alpha >= -1e-12).all() else None

    return active_set_minimum(gram, solve)


def upgrad_brute_force(gram):
    """Σ_i argmin_{v >= e_i/K} vᵀGv: every active set A (v_A = u_A), free rows from G_FF v_F = -G_FA u_A."""
    k = len(gram)
    total = np.zeros(k)
    for i in range(k):
        u = np.eye(k)[i] / k

        def solve(free):
            fixed = np.setdiff1d(np.arange(k), free)
            v = u.copy()
            v[free] = np.linalg.solve(gram[np.ix_(free, free)], -gram[np.ix_(free, fixed)] @ u[fixed])
            return v if (v >= u - 1e-12).all() else None

        best = active_set_minimum(gram, solve)
        total += u if best is None or u @ gram @ u <= best @ gram @ best else best
    return total


@pytest.mark.parametrize("k, seed", CASES + [(4, 2), (5, 3)])
def test_mgda_and_upgrad_match_brute_force_active_sets(k, seed):
    grads = random_matrix(k, seed=seed).double()
    gram = (grads @ grads.T).numpy()
    assert_close(aggregate("mgda", grads), torch.as_tensor(mgda_brute_force(gram)) @ grads)
    assert_close(aggregate("upgrad", grads), torch.as_tensor(upgrad_brute_force(gram)) @ grads)


@pytest.mark.parametrize("k, seed", CASES)
def test_imtl_matches_the_papers_closed_form(k, seed):
    """α_{2:K} = g_1 Uᵀ(D Uᵀ)⁻¹, D = rows g_1 - g_i, U = rows u_1 - u_i, α_1 = 1 - Σ α_{2:K}."""
    grads = random_matrix(k, seed=seed).double()
    units = grads / grads.norm(dim=1, keepdim=True)
    d, u = grads[0] - grads[1:], units[0] - units[1:]
    rest = torch.linalg.solve((d @ u.T).T, grads[0] @ u.T)
    alpha = torch.cat([1 - rest.sum(0, keepdim=True), rest])
    assert_close(aggregate("imtl", grads), alpha @ grads)


@pytest.mark.parametrize("k, seed", CASES)
def test_aligned_mtl_matches_the_svd_of_the_gradient_matrix(k, seed):
    """J = U Σ Vᵀ, aligned J̃ = σ_min U Vᵀ, update J̃ᵀ·1/K, computed on J directly (no Gram matrix)."""
    grads = random_matrix(k, seed=seed).double()
    u, s, vh = torch.linalg.svd(grads, full_matrices=False)
    aligned = s.min() * u @ vh
    assert_close(aggregate("aligned_mtl", grads), aligned.T @ torch.full((k,), 1.0 / k, dtype=torch.float64))


@pytest.mark.parametrize("k, seed", CASES + [(5, 2)])
def test_nash_mtl_solves_the_bargaining_equation(k, seed):
    """G α = 1/α: g_iᵀd = 1/α_i for the least-squares α of the update, and ‖d‖² = K."""
    grads = random_matrix(k, seed=seed).double()
    update = aggregate("nash_mtl", grads)
    alpha = torch.linalg.lstsq(grads.T, update[:, None]).solution[:, 0]
    assert (alpha > 0).all()
    assert_close(grads @ update, 1 / alpha, 1e-5)
    assert float(update @ update) == pytest.approx(k, rel=1e-5)


@pytest.mark.parametrize("k, seed", CASES + [(9, 2)])
def test_cagrad_duality_gap(k, seed):
    """Weights 1/K + λw: d = g_0 + λ g_w lies on the ball ‖d - g_0‖ = c‖g_0‖, and its worst improvement
    min_i g_iᵀd equals the dual value g_wᵀg_0 + c‖g_0‖‖g_w‖ at the same w: strong duality certifies both optima."""
    from hf_mtl.weighting.cagrad import cagrad_weights

    grads = random_matrix(k, seed=seed).double().numpy()
    gram = grads @ grads.T
    weights = cagrad_weights(gram, 0.4)
    lam = weights.sum() - 1.0
    w = (weights - 1.0 / k) / lam
    assert lam > 0 and (w >= -1e-12).all()
    g0, g_w = grads.mean(0), w @ grads
    radius = 0.4 * np.linalg.norm(g0)
    assert np.linalg.norm(weights @ grads - g0) == pytest.approx(radius, rel=1e-12)
    dual, primal = g_w @ g0 + radius * np.linalg.norm(g_w), (gram @ weights).min()
    assert abs(dual - primal) <= 1e-12 * abs(dual)
    assert_close(aggregate("cagrad", grads), weights @ grads)


def test_db_mtl_matches_the_papers_recursion_over_steps():
    """Reference: autograd of log L_i for a toy model, m_i ← βm_i + (1-β)∇log L_i, d = max‖m‖ Σ m_i/‖m_i‖."""
    gen = torch.Generator().manual_seed(8)
    a, b = torch.randn(3, 5, 6, generator=gen, dtype=torch.float64), torch.randn(3, 5, generator=gen, dtype=torch.float64)
    theta = torch.randn(6, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 2, 3, 1, 1, 1], dtype=torch.float64)
    weighting, beta, ema = build("db_mtl", 3, db_beta=0.8), 0.8, torch.zeros(3, 6, dtype=torch.float64)
    for _ in range(4):
        theta = theta.detach().requires_grad_()
        losses = [((a[i] @ theta - b[i]) ** 2).mean() * (10.0 ** i) for i in range(3)]
        grads = torch.stack([torch.autograd.grad(loss, theta, retain_graph=True)[0] for loss in losses])
        log_grads = torch.stack([torch.autograd.grad(torch.log(loss), theta)[0] for loss in losses])
        ema = beta * ema + (1 - beta) * log_grads
        norms = ema.norm(dim=1)
        expected = norms.max() * (ema / norms[:, None]).sum(0)
        update = weighting.aggregate(grads.float(), [float(loss.detach()) for loss in losses])
        assert_close(update, expected, 1e-5)
        theta = theta.detach() - 0.05 * update.double()


# State -----------------------------------------------------------------------------------------------

def test_pcgrad_orders_are_seeded_by_step_and_resume_from_the_state():
    grads = random_matrix(5, seed=9)
    first, second = build("pcgrad", 5, seed=3), build("pcgrad", 5, seed=3)
    updates = [first.aggregate(grads, [1.0] * 5) for _ in range(4)]
    assert any(not torch.equal(updates[0], u) for u in updates[1:]), "the orders never changed"
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    assert first.state_dict()["steps"] == 4 and torch.equal(second.aggregate(grads, [1.0] * 5), first.aggregate(grads, [1.0] * 5))
    assert build("pcgrad", 5, seed=3).hparams() == {"seed": 3, "reduction": "sum"}


def test_db_mtl_state_round_trips_through_safetensors(tmp_path):
    from hf_mtl.checkpoint import load_weighting_state, save_weighting_state

    grads = random_matrix(3, seed=10)
    saved = build("db_mtl", 3)
    saved.aggregate(grads, [1.0, 2.0, 3.0])
    save_weighting_state(saved, str(tmp_path))
    assert (tmp_path / "weighting_state.safetensors").exists()
    restored = build("db_mtl", 3)
    assert load_weighting_state(restored, str(tmp_path))
    assert restored.steps == 1 and torch.equal(restored.ema, saved.ema)
    assert torch.equal(restored.aggregate(grads, [1.0, 2.0, 3.0]), saved.aggregate(grads, [1.0, 2.0, 3.0]))


@pytest.mark.parametrize(
    "name, flag, value, message",
    [("cagrad", "cagrad_c", -0.1, r"--cagrad_c must be .*got -0\.1"),
     ("db_mtl", "db_beta", 1.0, r"--db_beta must be .*got 1\.0"),
     ("pcgrad", "seed", -1, r"weighting 'pcgrad': --seed must be a whole number >= 0 .*got -1"),
     ("gradvac", "gradvac_beta", 1.5, r"--gradvac_beta must be in \[0, 1\] .*got 1\.5"),
     ("gradvac", "seed", -1, r"weighting 'gradvac': --seed must be a whole number >= 0 .*got -1"),
     ("graddrop", "graddrop_leak", -0.1, r"--graddrop_leak must be in \[0, 1\] .*got -0\.1"),
     ("fairgrad", "fairgrad_alpha", 0.0, r"--fairgrad_alpha must be a number in \[0\.1, 10\] .*got 0\.0"),
     ("sdmgrad", "sdmgrad_lambda", math.nan, r"--sdmgrad_lambda must be a finite number >= 0 .*got nan"),
     ("moco", "moco_beta", 1.5, r"--moco_beta must be in \(0, 1\] .*got 1\.5"),
     ("moco", "moco_gamma", 0.0, r"--moco_gamma must be a positive step size .*got 0\.0"),
     ("moco", "moco_rho", -1.0, r"--moco_rho must be a finite number >= 0 .*got -1\.0"),
     ("excess_mtl", "excess_step_size", 0.0, r"--excess_step_size must be a positive step size .*got 0\.0"),
     ("mgda", "mgda_normalization", "l1", r"--mgda_normalization 'l1' is not one of: none, l2, loss, loss\+l2, loss\+"),
     ("imtl_h", "weighting_lr", 0.0, r"--weighting_lr must be a positive learning rate")],
)
def test_bad_hparams_are_rejected_by_flag(name, flag, value, message):
    with pytest.raises(ValueError, match=message):
        build(name, 2, **{flag: value})


def test_hparams_name_the_options():
    assert build("cagrad", 2, cagrad_c=0.5).hparams() == {"c": 0.5}
    assert build("db_mtl", 2).hparams() == {"beta": 0.9}
    assert build("gradvac", 2, seed=1).hparams() == {"beta": 0.5, "seed": 1, "reduction": "sum"}
    assert build("graddrop", 2).hparams() == {"leak": 0.0, "seed": 0, "reduction": "sum"}
    assert build("fairgrad", 2).hparams() == {"alpha": 2.0}
    assert build("sdmgrad", 2).hparams() == {"lambda": 0.3}
    assert build("moco", 2).hparams() == {"beta": 0.5, "beta_sigma": 0.5, "gamma": 0.1, "gamma_sigma": 0.5, "rho": 0.0}
    assert build("excess_mtl", 2).hparams() == {"step_size": 0.01}
    assert build("mgda", 2).hparams() == {"normalization": "none"}
    assert build("imtl_h", 2).hparams() == {"lr": 0.025, "gradient": "imtl"}


# The methods of issue #14: Nash-MTL at any scale, FairGrad, GradVac, GradDrop, ConFIG, DualProj, SDMGrad,
# MoCo, ExcessMTL, IMTL-L's hybrid, MGDA's normalisations ------------------------------------------------

RATIOS = [1.0, 10.0, 1e2, 1e3, 1e4]


def spread_rows(k, ratio, seed, p=20):
    """k random rows whose norms are spread geometrically over `ratio` (float64)."""
    scales = torch.as_tensor(np.geomspace(1.0, ratio, k))[:, None]
    return random_matrix(k, p, seed=seed).double() * scales


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("k", [2, 3, 5])
def test_nash_mtl_is_exact_at_any_ratio_of_gradient_norms(k, ratio):
    """The Nash condition α_i (Gα)_i = 1 to rounding for task gradients up to 10⁴× apart (the fixed ridge of an
    earlier version left 2e-4 at 100× and 0.7 at 10⁴×), and the update equal to an independent solution."""
    from hf_mtl.weighting.nash_mtl import nash_weights

    for seed in range(3):
        grads = spread_rows(k, ratio, seed)
        gram = (grads @ grads.T).numpy()
        alpha = nash_weights(gram)
        assert np.abs(alpha * (gram @ alpha) - 1).max() < 1e-12, (seed, alpha)
        expected = torch.as_tensor(fairgrad_reference(gram, 1.0)) @ grads
        assert_close(aggregate("nash_mtl", grads, dtype=torch.float64), expected, 1e-12)  # exact to rounding
        assert_close(aggregate("nash_mtl", grads), expected, 1e-6)  # the engine's float32 rows


def test_nash_mtl_with_more_tasks_than_dimensions():
    """Five gradients in a 3-dimensional space (G singular) but in one orthant: a solution exists and is found
    exactly; five around the origin (0 in their hull, no solution): a ridge keeps the weights finite, ‖d‖² <= K."""
    from hf_mtl.weighting.nash_mtl import nash_weights

    grads = random_matrix(5, p=3, seed=11).abs().double() * torch.tensor([[1.0], [10.0], [100.0], [1.0], [3.0]])
    gram = (grads @ grads.T).numpy()
    alpha = nash_weights(gram)
    assert np.linalg.matrix_rank(gram) == 3 and np.abs(alpha * (gram @ alpha) - 1).max() < 1e-10
    around = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    update = aggregate("nash_mtl", around)
    assert torch.isfinite(update).all() and float(update @ update) <= 5 * (1 + 1e-6)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("ratio", [1.0, 1e2, 1e4])
def test_fairgrad_solves_its_equation_at_any_scale(alpha, ratio):
    """G w = w^(-1/α) to rounding (K = 2, 3, 5), the same w as an independent root finder, and α = 1 is Nash-MTL."""
    from hf_mtl.weighting.gram import alpha_fair_weights

    for k in (2, 3, 5):
        grads = spread_rows(k, ratio, seed=k)
        gram = (grads @ grads.T).numpy()
        w = alpha_fair_weights(gram, alpha)
        assert np.abs(w ** (1 / alpha) * (gram @ w) - 1).max() < 1e-12, (k, w)
        np.testing.assert_allclose(w, fairgrad_reference(gram, alpha), rtol=1e-7)  # weights up to 10¹² apart
        update = build("fairgrad", k, fairgrad_alpha=alpha).aggregate(grads, [1.0] * k)
        assert_close(update, torch.as_tensor(w) @ grads, 1e-12)
        if alpha == 1.0:
            assert_close(update, aggregate("nash_mtl", grads, dtype=torch.float64), 1e-12)


def test_graddrop_draws_are_pinned():
    assert tuple(build("graddrop", 2).uniform(0, 2).tolist()) == GRADDROP_U0


def graddrop_brute_force(grads, uniform, leak=0.0):
    """Lines 10-15 of the paper's Algorithm 1, coordinate by coordinate."""
    k, p = grads.shape
    update = torch.zeros(p, dtype=grads.dtype)
    for c in range(p):
        column = grads[:, c]
        purity = 0.5 * (1 + column.sum() / column.abs().sum()) if column.abs().sum() > 0 else 0.5
        for i in range(k):
            mask = float((purity > uniform[c] and column[i] > 0) or (purity < uniform[c] and column[i] < 0))
            update[c] += (leak + (1 - leak) * mask) * column[i]
    return update


@pytest.mark.parametrize("leak", [0.0, 0.3])
@pytest.mark.parametrize("k, seed", CASES)
def test_graddrop_follows_the_papers_masks_with_seeded_draws(k, seed, leak):
    grads = random_matrix(k, seed=seed).double()
    grads[:, :4] = grads[:, :4].abs()  # some coordinates where every task agrees: never dropped
    weighting = build("graddrop", k, seed=seed, graddrop_leak=leak)
    uniform = weighting.uniform(0, grads.shape[1], dtype=torch.float64)
    update = weighting.aggregate(grads, [1.0] * k)
    assert_close(update, graddrop_brute_force(grads, uniform, leak), 1e-12)
    assert_close(update[:4], grads[:, :4].sum(0), 1e-15)
    assert weighting.state_dict()["steps"] == 1 and 0 < float(uniform.min()) and float(uniform.max()) < 1


@needs_torchjd
@pytest.mark.parametrize("k, seed", CASES)
def test_graddrop_matches_torchjd_with_the_same_draws(k, seed, monkeypatch):
    """torchjd draws U with torch.rand; hand it ours. Same masks, both sum; leak as a per-row tensor there."""
    grads = random_matrix(k, seed=seed).double()
    weighting = build("graddrop", k, seed=seed, graddrop_leak=0.25)
    uniform = weighting.uniform(0, grads.shape[1], dtype=torch.float64)
    monkeypatch.setattr(torch, "rand", lambda *a, **kw: uniform.clone())
    expected = torchjd_aggregation.GradDrop(leak=torch.full((k,), 0.25, dtype=torch.float64))(grads)
    monkeypatch.undo()
    assert_close(weighting.aggregate(grads, [1.0] * k), expected, 1e-12)


def gradvac_brute_force(grads, targets, orders, beta):
    """The paper's update rule (Eq. 4) on the vectors themselves; returns the sum and the new targets."""
    targets = targets.copy()
    total = torch.zeros_like(grads[0])
    for i, order in enumerate(orders):
        g = grads[i].clone()
        for j in order:
            if j == i:
                continue
            phi = float(g @ grads[j] / (g.norm() * grads[j].norm()))
            target = targets[i, j]
            if phi < target:
                g = g + g.norm() * (target * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - target**2)) / (
                    grads[j].norm() * math.sqrt(1 - target**2)) * grads[j]
                assert float(g @ grads[j] / (g.norm() * grads[j].norm())) == pytest.approx(target, abs=1e-9)
            targets[i, j] = (1 - beta) * target + beta * phi
        total += g
    return total, targets


@pytest.mark.parametrize("k, seed", CASES)
def test_gradvac_follows_the_papers_rule_over_steps(k, seed):
    weighting, targets = build("gradvac", k, seed=seed, gradvac_beta=0.3), np.zeros((k, k))
    for step in range(4):
        grads = random_matrix(k, seed=10 * seed + step).double()
        expected, targets = gradvac_brute_force(grads, targets, weighting.task_orders(step, k), 0.3)
        assert_close(weighting.aggregate(grads, [1.0] * k), expected, 1e-10)
        np.testing.assert_allclose(weighting.targets, targets, rtol=1e-10, atol=1e-12)
    assert weighting.state_dict()["steps"] == 4 and np.abs(targets).max() > 0


def test_gradvac_with_beta_zero_is_pcgrad():
    grads = random_matrix(4, seed=12)
    for step in range(3):
        assert_close(build("gradvac", 4, seed=5, gradvac_beta=0.0).aggregate(grads, [1.0] * 4),
                     build("pcgrad", 4, seed=5).aggregate(grads, [1.0] * 4), 1e-6)


@needs_torchjd
@pytest.mark.parametrize("k, seed", CASES)
def test_gradvac_matches_torchjd_with_its_own_random_orders(k, seed, monkeypatch):
    """torchjd shuffles the other tasks with one torch.randperm per row; replay its draws through our weights
    over three steps (its targets carry over). eps = 0 there: neither adds anything to the denominators."""
    from hf_mtl.weighting.gradvac import gradvac_weights

    reference = torchjd_aggregation.GradVacWeighting(beta=0.5, eps=0.0)
    targets, drawn, randperm = np.zeros((k, k)), [], torch.randperm
    for step in range(3):
        grads = random_matrix(k, seed=seed + 20 * step).double()
        gram = grads @ grads.T
        monkeypatch.setattr(torch, "randperm", lambda *a, **kw: drawn.append(randperm(*a, **kw)) or drawn[-1])
        expected = reference(gram)
        monkeypatch.undo()
        orders = [[[j for j in range(k) if j != i][int(x)] for x in perm] for i, perm in enumerate(drawn[-k:])]
        weights, targets = gradvac_weights(gram.numpy(), targets, orders, 0.5)
        np.testing.assert_allclose(weights, expected.numpy(), rtol=1e-10, atol=1e-12)


def conflict_free_brute_force(grads):
    """Equation 2 of the paper on the vectors: g_u = U⁺1/‖U⁺1‖, d = (Σ g_iᵀg_u) g_u."""
    units = grads / grads.norm(dim=1, keepdim=True)
    direction = torch.linalg.pinv(units) @ torch.ones(len(grads), dtype=grads.dtype)
    direction = direction / direction.norm()
    return (grads @ direction).sum() * direction


@pytest.mark.parametrize("k, seed", CASES)
def test_conflict_free_matches_its_equation_and_improves_every_task_equally(k, seed):
    grads = spread_rows(k, 100.0, seed)
    update = aggregate("conflict_free", grads, dtype=torch.float64)
    assert_close(update, conflict_free_brute_force(grads), 1e-10)
    cosines = grads @ update / grads.norm(dim=1) / update.norm()
    assert (cosines > 0).all() and float(cosines.max() - cosines.min()) < 1e-10


def sdmgrad_brute_force(gram, lam):
    """min over the simplex of ½‖Jᵀ(w + λ/K)‖², brute force over supports (KKT of each face), then (w + λ/K)/(1+λ)."""
    k = len(gram)
    u = np.full(k, lam / k)

    def solve(free):
        n = len(free)
        system = np.block([[gram[np.ix_(free, free)], np.ones((n, 1))], [np.ones((1, n)), np.zeros((1, 1))]])
        w = np.zeros(k)
        w[free] = np.linalg.lstsq(system, np.r_[-(gram @ u)[free], 1.0], rcond=None)[0][:n]
        return w if (w >= -1e-12).all() else None

    best = None
    for size in range(1, k + 1):
        for free in itertools.combinations(range(k), size):
            w = solve(np.array(free))
            if w is not None and (best is None or (w + u) @ gram @ (w + u) < (best + u) @ gram @ (best + u) - 1e-15):
                best = w
    return (best + u) / (1 + lam)


@pytest.mark.parametrize("lam", [0.0, 0.3, 2.0])
@pytest.mark.parametrize("k, seed", CASES + [(4, 2)])
def test_sdmgrad_matches_brute_force_faces(k, seed, lam):
    grads = random_matrix(k, seed=seed).double()
    gram = (grads @ grads.T).numpy()
    assert_close(aggregate("sdmgrad", grads, dtype=torch.float64, sdmgrad_lambda=lam),
                 torch.as_tensor(sdmgrad_brute_force(gram, lam)) @ grads, 1e-10)


@needs_torchjd
@pytest.mark.parametrize("k, seed", CASES)
def test_sdmgrad_matches_torchjd_when_its_inner_sgd_converges(k, seed):
    """torchjd's inner projected SGD (warm-started, 20 iterations by default) run to convergence on the one-batch
    Gram matrix reaches our exact minimiser; the weights have the same form (w + λ/K)/(1 + λ)."""
    grads = random_matrix(k, seed=seed).double()
    reference = torchjd_aggregation.SDMGradWeighting(lr=1.0, momentum=0.0, n_iter=20000, lambda_=0.3)
    expected = reference(grads @ grads.T) @ grads
    assert_close(aggregate("sdmgrad", grads), expected, 1e-6)


@needs_torchjd
@pytest.mark.parametrize("k, seed", CASES)
def test_more_aggregators_match_torchjd(k, seed):
    """DualProj (its quadprog regularisation off), ConFIG and FairGrad (α = 2; scipy's least_squares, default
    tolerances) on the same matrix. Conventions are the same: DualProj projects the mean, ConFIG sums."""
    from torchjd.linalg import QuadprogProjector

    grads = random_matrix(k, seed=seed).double()
    a = torchjd_aggregation
    for name, reference, rtol in [("dualproj", a.DualProj(projector=QuadprogProjector(reg_eps=0.0)), 1e-6),
                                  ("conflict_free", a.ConFIG(), 1e-9),
                                  ("fairgrad", a.FairGrad(alpha=2.0), 1e-5)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = reference(grads)
        assert_close(aggregate(name, grads, dtype=torch.float64), expected, rtol)


def moco_brute_force(grad_steps, loss_steps, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0):
    """Algorithm 1 of the paper with h_i = L_i g_i/‖g_i‖, on the vectors; λ projected onto the simplex by
    bisection on the shift (not the sort-based projection of the module)."""
    from scipy.optimize import brentq

    k = grad_steps[0].shape[0]
    y, lam, updates = torch.zeros_like(grad_steps[0]), np.full(k, 1.0 / k), []
    for t, (grads, losses) in enumerate(zip(grad_steps, loss_steps), start=1):
        h = torch.stack([loss * g / g.norm() for g, loss in zip(grads, losses)])
        y = y - beta / t**beta_sigma * (y - h)
        v = lam - gamma / t**gamma_sigma * ((y @ y.T).numpy() + rho * np.eye(k)) @ lam
        shift = brentq(lambda s, v=v: np.maximum(v - s, 0).sum() - 1, v.min() - 1, v.max())
        lam = np.maximum(v - shift, 0)
        updates.append(torch.as_tensor(lam) @ y)
    return updates


def test_moco_matches_the_papers_recursion_over_steps():
    grad_steps = [random_matrix(3, seed=30 + t).double() * torch.tensor([[1.0], [30.0], [0.1]]) for t in range(6)]
    loss_steps = [[2.0 / (t + 1), 0.5, 1.5] for t in range(6)]
    weighting = build("moco", 3, moco_gamma=2.0, moco_rho=0.1)
    expected = moco_brute_force(grad_steps, loss_steps, gamma=2.0, rho=0.1)
    for grads, losses, want in zip(grad_steps, loss_steps, expected):
        assert_close(weighting.aggregate(grads, losses), want, 1e-10)
    assert weighting.state_dict()["steps"] == 6 and min(weighting.lam) >= 0 and abs(sum(weighting.lam) - 1) < 1e-12


def excess_mtl_reference(grad_steps, step_size):
    """The paper's Eqs. 6-9 with the authors' conventions: S accumulates g², E = Σ g²/√S, r = E/E⁽⁰⁾, w ← w e^(ηr)
    renormalised to sum K, no step at the first call; plain float64 arithmetic on the vectors."""
    k = grad_steps[0].shape[0]
    squares, weights, baseline, updates = torch.zeros_like(grad_steps[0]), np.ones(k), None, []
    for grads in grad_steps:
        squares = squares + grads**2
        risks = (grads**2 / squares.sqrt()).sum(1).numpy()
        if baseline is None:
            baseline = risks
        else:
            weights = weights * np.exp(step_size * risks / baseline)
            weights = k * weights / weights.sum()
        updates.append(torch.as_tensor(weights) @ grads)
    return updates


def test_excess_mtl_matches_the_papers_recursion_over_steps():
    grad_steps = [random_matrix(3, seed=40 + t).double() * torch.tensor([[1.0], [5.0], [0.2]]) for t in range(5)]
    weighting = build("excess_mtl", 3, excess_step_size=0.5)
    for grads, want in zip(grad_steps, excess_mtl_reference(grad_steps, 0.5)):
        assert_close(weighting.aggregate(grads, [1.0] * 3), want, 1e-10)
    np.testing.assert_allclose(np.exp(weighting.log_weights_).sum(), 3.0, rtol=1e-12)
    assert not np.allclose(np.exp(weighting.log_weights_), 1.0)


@needs_torchjd
def test_excess_mtl_matches_torchjd_up_to_its_conventions():
    """torchjd with one warm-up step (its default 0 moves the weights by the raw first estimate) gives weights
    summing to 1, ours sum K; its ε (1e-7 in the square root and the baseline) is negligible at these scales."""
    reference = torchjd_aggregation.ExcessMTLWeighting(robust_step_size=0.5, n_warmup_steps=1)
    weighting = build("excess_mtl", 3, excess_step_size=0.5)
    for t in range(5):
        grads = random_matrix(3, seed=50 + t).double() * 100
        update = weighting.aggregate(grads, [1.0] * 3)
        assert_close(update, 3 * reference(grads) @ grads, 1e-6)


MGDA_NORMALIZERS = {"none": lambda norms, losses: np.ones_like(norms), "l2": lambda norms, losses: norms,
                    "loss": lambda norms, losses: losses, "loss+l2": lambda norms, losses: losses * norms}


def mgda_brute_force_exact(rows, digits=50):
    """min αᵀĜα on the simplex for the rows (K × P, float64), brute force over supports as `mgda_brute_force`,
    in `digits`-digit arithmetic (mpmath): rows 10⁸ apart put weights of 1e-8 next to 1, beyond float64's KKT solves."""
    import mpmath

    with mpmath.workdps(digits):
        k = rows.shape[0]
        matrix = mpmath.matrix(rows.tolist())
        gram = matrix * matrix.T
        best, best_value = None, None
        for size in range(1, k + 1):
            for free in itertools.combinations(range(k), size):
                n = len(free)
                system, target = mpmath.zeros(n + 1, n + 1), mpmath.zeros(n + 1, 1)
                for a, i in enumerate(free):
                    for b, j in enumerate(free):
                        system[a, b] = gram[i, j]
                    system[a, n] = system[n, a] = 1
                target[n] = 1
                try:
                    solution = mpmath.lu_solve(system, target)
                except ZeroDivisionError:
                    continue
                alpha = [mpmath.mpf(0)] * k
                for a, i in enumerate(free):
                    alpha[i] = solution[a]
                if min(alpha) < 0:
                    continue
                value = sum(alpha[i] * alpha[j] * gram[i, j] for i in range(k) for j in range(k))
                if best_value is None or value < best_value:
                    best, best_value = alpha, value
        return np.array([float(a) for a in best])


@pytest.mark.parametrize("losses", [(1e-2, 1e2), (1e-8, 1e8)], ids=["losses-1e-2-to-1e2", "losses-1e-8-to-1e8"])
@pytest.mark.parametrize("normalization", list(MGDA_NORMALIZERS))
@pytest.mark.parametrize("k, seed", CASES)
def test_mgda_normalisations_weigh_the_raw_gradients(normalization, k, seed, losses):
    """α from the min-norm problem of the normalised rows (brute force over supports in 50-digit arithmetic),
    applied to the raw rows, as the MGDA-UB code does; gradient norms 10³ apart, losses up to 10¹⁶ apart."""
    grads = spread_rows(k, 1e3, seed)
    losses = np.geomspace(*losses, k)
    n = MGDA_NORMALIZERS[normalization](np.sqrt(np.diag((grads @ grads.T).numpy())), losses)
    alpha = mgda_brute_force_exact((grads / torch.as_tensor(n)[:, None]).numpy())
    update = aggregate("mgda", grads, list(losses), dtype=torch.float64, mgda_normalization=normalization)
    assert_close(update, torch.as_tensor(alpha) @ grads, 1e-12)


def test_mgda_accepts_the_mgda_ub_spelling_loss_plus():
    weighting = build("mgda", 3, mgda_normalization="loss+")
    assert weighting.normalization == "loss+l2" and weighting.hparams() == {"normalization": "loss+l2"}
    grads, losses = random_matrix(3, seed=13), [0.5, 2.0, 3.0]
    assert torch.equal(weighting.aggregate(grads, losses),
                       build("mgda", 3, mgda_normalization="loss+l2").aggregate(grads, losses))
    with pytest.raises(ValueError, match=r"task 'cola' has a negative loss .*--mgda_normalization loss\+l2"):
        build("mgda", 3, mgda_normalization="loss+").gram_weights(np.eye(3), [-1.0, 1.0, 1.0])
    assert build("mgda", 3, mgda_normalization="loss").log_based and not build("mgda", 3).log_based


def test_imtl_hybrid_is_imtl_g_on_the_scaled_rows_and_learns_the_scales():
    weighting = build("imtl_h", 3)
    with torch.no_grad():
        weighting.parameters()[0].copy_(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
    grads, losses = random_matrix(3, seed=14), [0.5, 2.0, 3.0]
    scaled = grads.double() * torch.exp(torch.tensor([[0.5], [-1.0], [2.0]], dtype=torch.float64))
    assert_close(weighting.aggregate(grads, losses), aggregate("imtl", scaled), 1e-6)
    weighting.observe(losses)
    np.testing.assert_allclose(weighting.parameters()[0].grad.numpy(), np.exp([0.5, -1.0, 2.0]) * losses - 1, rtol=1e-12)
    assert weighting.name == "imtl_h" and weighting.parameter_lr() == 0.025
    assert set(weighting.state_dict()) == {"loss", "gradient"}


@pytest.mark.parametrize("name", ["gradvac", "graddrop"])
def test_seeded_strategies_draw_by_step_and_resume_from_the_state(name):
    grads = random_matrix(4, seed=15)
    first, second = build(name, 4, seed=3), build(name, 4, seed=3)
    updates = [first.aggregate(grads, [1.0] * 4) for _ in range(4)]
    assert any(not torch.equal(updates[0], u) for u in updates[1:]), "the draws never changed"
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert torch.equal(second.aggregate(grads, [1.0] * 4), first.aggregate(grads, [1.0] * 4))
    assert not torch.equal(build(name, 4, seed=4).aggregate(grads, [1.0] * 4), updates[0])


def test_moco_and_excess_mtl_at_float32_extremes():
    """Rows 1e-23 (squares under float32's range) next to 1e15, losses 1e-30 to 1e30: MoCo's unit rows keep their
    direction (each h_i has length L_i), and the tracked Gram matrix (~1e60) is taken in float64; ExcessMTL's
    terms g²/√S (with S = g² underflowing to 0) are |g|, so E_i = ‖g_i‖₁ at the first step."""
    base = random_matrix(3, seed=21).double()
    grads = (base * torch.tensor([[1e-23], [1.0], [1e15]], dtype=torch.float64)).float()
    losses = [1e30, 1e-30, 2.0]
    moco = build("moco", 3)
    for _ in range(2):
        update = moco.aggregate(grads, losses)
        assert torch.isfinite(update).all()
    tracked = moco.tracked.double()
    # After two steps (β_1 = ½, β_2 = ½/√2) every y_i is h_i times the same factor 1 − (1 − ½)(1 − ½/√2).
    factor = 1 - 0.5 * (1 - 0.5 / math.sqrt(2))
    for i in range(3):
        expected = factor * max(losses[i], 1e-8) * base[i] / base[i].norm()
        assert_close(tracked[i], expected, 1e-6)
    excess = build("excess_mtl", 3)
    excess.aggregate(grads, [1.0] * 3)
    np.testing.assert_allclose(excess.baseline[0], float(grads[0].double().abs().sum()), rtol=1e-6)
    assert torch.isfinite(excess.aggregate(grads, [1.0] * 3)).all()


@pytest.mark.parametrize("name, tensor", [("moco", "tracked"), ("excess_mtl", "squares")])
def test_matrix_states_round_trip_through_safetensors(name, tensor, tmp_path):
    from hf_mtl.checkpoint import load_weighting_state, save_weighting_state

    saved = build(name, 3)
    for t in range(2):
        saved.aggregate(random_matrix(3, seed=16 + t), [1.0, 2.0, 3.0])
    save_weighting_state(saved, str(tmp_path))
    state = json.loads((tmp_path / "weighting_state.json").read_text())["state"]
    assert state[tensor] == {"__tensor__": f"state.{tensor}"}
    restored = build(name, 3)
    assert load_weighting_state(restored, str(tmp_path))
    assert torch.equal(getattr(restored, tensor), getattr(saved, tensor)) and restored.steps == 2
    grads = random_matrix(3, seed=18)
    assert torch.equal(restored.aggregate(grads, [1.0, 2.0, 3.0]), saved.aggregate(grads, [1.0, 2.0, 3.0]))


def test_gradvac_targets_are_saved_by_task_name():
    weighting = build("gradvac", 3)
    weighting.aggregate(random_matrix(3, seed=19), [1.0] * 3)
    state = json.loads(json.dumps(weighting.state_dict()))
    names = [t.name for t in ALL_TASKS[:3]]
    assert sorted(state["targets"]) == sorted(names) and all(sorted(row) == sorted(names) for row in state["targets"].values())
    reordered = build_weighting("gradvac", [ALL_TASKS[i] for i in (2, 0, 1)])
    reordered.load_state_dict(state)
    np.testing.assert_array_equal(reordered.targets, weighting.targets[np.ix_([2, 0, 1], [2, 0, 1])])
    with pytest.raises(ValueError, match="same --tasks"):
        build("gradvac", 2).load_state_dict(state)


# Engine and trainer ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pcgrad", "mgda"])
def test_engine_update_is_the_aggregate_of_brute_force_task_gradients(name, task_rows, tokenizer):  # noqa: F811
    """Accumulated micro-batches in the engine vs each task's full-batch gradient computed on its own:
    shared parameters get the aggregate of the K × P matrix, heads their own task's raw gradient."""
    model = tiny_model(TASKS).eval()
    grads = task_gradients(model, micro_batches(task_rows, tokenizer, 1)[0])
    shared = [(n, p) for n, p in model.named_parameters() if not n.startswith("heads.")]
    matrix = torch.stack([
        torch.cat([gi[n].flatten() if n in gi else torch.zeros(p.numel()) for n, p in shared]) for gi in grads
    ])
    weighting = build_weighting(name, TASKS)
    reference = copy.deepcopy(weighting)  # same seed and step count as the engine's
    _, actual = engine_gradient(model, weighting, micro_batches(task_rows, tokenizer, 2))
    update = reference.aggregate(matrix, [1.0] * len(TASKS))
    expected = {n: chunk.view_as(p) for (n, p), chunk in zip(shared, update.split([p.numel() for _, p in shared]))}
    for gi in grads:
        expected.update({n: g for n, g in gi.items() if n.startswith("heads.")})
    assert_same(actual, expected, rtol=5e-5)


@pytest.mark.parametrize("weighting", AGGREGATORS + ["geometric+pcgrad"])
def test_trainer_runs_every_aggregator_and_logs_cosines(weighting, tmp_path, datasets, tokenizer):  # noqa: F811
    trainer = make_trainer(tmp_path, datasets, tokenizer, weighting=weighting, max_steps=3, learning_rate=0.1)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    assert len(logs) == 3
    names = [t.name for t in TASKS]
    for a, b in itertools.combinations(names, 2):
        assert all(-1.0 - 1e-6 <= h[f"cos_{a}_{b}"] <= 1.0 + 1e-6 for h in logs), (a, b)
    assert all(math.isfinite(h[f"weight_{n}"]) for h in logs for n in names)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    assert trainer.model.config.weighting["name"] == weighting


@pytest.mark.parametrize(("name", "attribute"), [("db_mtl", "ema"), ("moco", "tracked"), ("excess_mtl", "squares")])
def test_a_saved_state_matrix_of_another_shape_is_refused_and_a_fitting_one_is_kept(name, attribute):
    weighting = build(name, 2)
    grads = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    saved = torch.full((2, 3), 0.5)  # float32, as a checkpoint may hold it
    setattr(weighting, attribute, saved)
    weighting.aggregate(grads, [1.0, 2.0])
    kept = getattr(weighting, attribute)
    assert kept.dtype == grads.dtype and kept.shape == grads.shape and not torch.equal(kept, torch.zeros_like(kept))
    setattr(weighting, attribute, torch.zeros(2, 5))
    with pytest.raises(ValueError, match=rf"^{name}: the saved .* has shape \(2, 5\) but the task gradients have "
                       r"\(2, 3\); resume with the same model and tasks\.$"):
        weighting.aggregate(grads, [1.0, 2.0])
