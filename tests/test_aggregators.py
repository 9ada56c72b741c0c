"""The gradient aggregators (all K task gradients at once): declared properties for every registered
one, exact values on one fixed matrix, cross-checks against torchjd and against brute-force references
written from the papers' equations, then the engine and the trainer end to end."""

from __future__ import annotations

import copy
import itertools
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
UPDATE_DEGREE = {"nash_mtl": 0}
#: Methods that promise g_iᵀd >= 0 for every task. Not imtl (see test_imtl_can_conflict_with_every_task),
#: cagrad, aligned_mtl, pcgrad (K > 2), db_mtl.
NON_CONFLICTING = {"mgda", "upgrad", "nash_mtl"}


def build(name, k, seed=0, **hparams):
    """`name` for the first k GLUE tasks with these flags (cagrad_c, db_beta, ...) and `seed` (pcgrad)."""
    return build_weighting(name, ALL_TASKS[:k], hparams=hparams, seed=seed)


def aggregate(name, grads, losses=None, **hparams):
    grads = torch.as_tensor(grads, dtype=torch.float32)
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


@pytest.mark.parametrize("name", [n for n in AGGREGATORS if n != "pcgrad"])
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
}
ONE_TASK = {"nash_mtl": lambda g: g / g.norm(), "cagrad": lambda g: 1.4 * g, "db_mtl": lambda g: 0.1 * g / 2.0}


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
            if v is not None and (best is None or v @ gram @ v < best @ gram @ best - 1e-15):
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
     ("pcgrad", "seed", -1, r"weighting 'pcgrad': --seed must be a whole number >= 0 .*got -1")],
)
def test_bad_hparams_are_rejected_by_flag(name, flag, value, message):
    with pytest.raises(ValueError, match=message):
        build(name, 2, **{flag: value})


def test_hparams_name_the_options():
    assert build("cagrad", 2, cagrad_c=0.5).hparams() == {"c": 0.5}
    assert build("db_mtl", 2).hparams() == {"beta": 0.9}


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
