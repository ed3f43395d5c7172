"""Branch and bound's subdomains and results: a subdomain (``_Domain``), its children (neuron
splits and input cuts), the row that decides its value, and the open subdomains of a search
dealt into parts, or packed into a few tensors for another process and back."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nnspec.bounds.engine import BoundEngine
from nnspec.bounds.radius import group_max


@dataclass(frozen=True)
class BabResult:
    proven: bool
    lower: float  # a proved lower bound of min over rows of C @ y - threshold on the box
    domains: int  # subdomains bounded
    seconds: float
    stop: str  # proven | time | domains | counterexample | split (a search of ``verify``: see ``_search``)
    # ReLU splitting stopped by its time: the open subdomains (its heap), for a later search to resume
    open: list | None = field(default=None, repr=False, compare=False)


@dataclass
class _Domain:
    lo: torch.Tensor  # (*input_shape)
    hi: torch.Tensor
    # nonlinearity input -> (*shape): int8 signs at a ReLU's (+1: >= 0, -1: <= 0, 0: free), int32
    # ``relax.halved`` codes at a smooth nonlinearity's
    splits: dict[str, torch.Tensor]
    bound: float
    prior: dict | None = None  # input splitting: the parent's bounds of the nonlinearity inputs (valid here)
    depth: int = 0
    alphas: dict | None = None  # input splitting: the parent's final slopes (S, *shape) each, a warm start
    warm: torch.Tensor | None = None  # ReLU splitting: the parent's slopes and split multipliers (``_Fixed.pack``)
    branch: tuple[str, int] | None = None  # neuron splitting: the neuron to split (input name, flat index)


def _deciding_row(low: torch.Tensor, offsets, groups) -> torch.Tensor:
    """(B,) the row whose bound decides each subdomain's value: the worst row, or with groups the
    best row of the worst group."""
    if groups is None:
        return (low if offsets is None else low + offsets).argmin(1)
    v = low + (0 if offsets is None else offsets.to(low))
    per_group = group_max(v, groups)
    worst_group = per_group.argmin(1)
    in_group = groups.view(1, -1) == worst_group.view(-1, 1)
    return torch.where(in_group, v, torch.full_like(v, -torch.inf)).argmax(1)


def _split_neuron(engine: BoundEngine, dom: _Domain) -> list[_Domain] | None:
    """The subdomain's two children for the neuron ``_branching`` chose when it was bounded
    (a ReLU's input at 0, +1 and -1; a smooth nonlinearity's input interval halved,
    ``relax.halved``'s codes 2c and 2c + 1), or None when none is left to split."""
    if dom.branch is None:
        return None
    pre, k = dom.branch
    halving = pre in engine.halvable
    current = dom.splits.get(pre)
    if current is None:
        current = torch.zeros(engine.by_name[pre].shape, dtype=torch.int32 if halving else torch.int8)
    if halving:
        code = max(int(current.view(-1)[k]), 1)
        sides = (2 * code, 2 * code + 1)
    else:
        sides = (1, -1)
    kids = []
    for side in sides:
        splits = dict(dom.splits)
        splits[pre] = current.clone()
        splits[pre].view(-1)[k] = side
        kids.append(_Domain(dom.lo, dom.hi, splits, dom.bound, warm=dom.warm))
    return kids


def _halves(dom: _Domain, k: int) -> list[_Domain]:
    """The two halves of the box along flat dimension k."""
    mid = (dom.lo.flatten()[k] + dom.hi.flatten()[k]) / 2
    left_hi, right_lo = dom.hi.clone(), dom.lo.clone()
    left_hi.view(-1)[k] = mid
    right_lo.view(-1)[k] = mid
    # the parent's slopes and split multipliers go with both halves (warm starts)
    return [_Domain(dom.lo, left_hi, dom.splits, dom.bound, alphas=dom.alphas, warm=dom.warm),
            _Domain(right_lo, dom.hi, dom.splits, dom.bound, alphas=dom.alphas, warm=dom.warm)]


def _split_input_all(dom: _Domain, root_width: torch.Tensor) -> tuple[list[_Domain], list[float]]:
    """The halves of the box along every dimension of nonzero width, (left, right) per dimension
    in order, and per child the cut dimension's width relative to the root box's. A box of zero
    width (a point) is cut in place (two copies of itself), so it stays open, never dropped."""
    width = (dom.hi - dom.lo).flatten()
    kids, rel = [], []
    for k in (width > 0).nonzero().flatten().tolist():
        kids += _halves(dom, k)
        rel += [float(width[k] / root_width[k])] * 2
    return (kids, rel) if kids else (_halves(dom, 0), [0.0, 0.0])



def _split_input(dom: _Domain, rec: dict) -> list[_Domain]:
    width = dom.hi - dom.lo
    coeff = rec.get("input")
    score = width * (coeff.abs() if coeff is not None else 1.0) + 1e-12 * width
    k = int(score.flatten().argmax())
    return _halves(dom, k)


def _dealt(heap: list, k: int) -> list[list]:
    """A search's open subdomains dealt into ``k`` heaps in the order of their bounds (each part
    gets as many of the lowest ones as the others), for ``k`` searches to go on with."""
    entries = sorted(heap, key=lambda e: (e[0], e[1]))
    return [entries[i::k] for i in range(k)]  # (a sorted list is a heap)


def _merged_open(resumes: list, lo: torch.Tensor, hi: torch.Tensor) -> list:
    """One heap of the open subdomains of several searches of a group (heaps, or
    ``_pack_open``'s tensors), renumbered: counters of separate searches may repeat."""
    heaps = [r if isinstance(r, list) else _unpack_open(r, lo, hi) for r in resumes]
    if len(heaps) == 1:
        return heaps[0]
    entries = sorted((e for h in heaps for e in h), key=lambda e: (e[0], e[1]))
    return [(b, i, dom, rec) for i, (b, _, dom, rec) in enumerate(entries)]


def _pack_open(heap: list | None, lo: torch.Tensor, hi: torch.Tensor) -> dict | None:
    """A ReLU-splitting search's open subdomains (its heap: (bound, counter, domain, {})
    entries on the box [lo, hi]) as a few tensors, for another process: a search there stopped
    by its time hands them back, and the next search resumes them (``_unpack_open``). A
    hundred thousand subdomains pickle as seven tensors instead of half a million small ones.
    Subdomains on boxes of their own (cut once no neuron was left to split) keep them. None for
    no heap."""
    if not heap:
        return None
    doms = [e[2] for e in heap]
    own = [i for i, d in enumerate(doms) if d.lo is not lo or d.hi is not hi]
    names = sorted({n for d in doms for n in d.splits})
    packed: dict = {"own": torch.tensor(own, dtype=torch.long),
                    "own_lo": torch.stack([doms[i].lo for i in own]) if own else None,
                    "own_hi": torch.stack([doms[i].hi for i in own]) if own else None,
                    "bound": torch.tensor([e[0] for e in heap], dtype=torch.float64),
                    "counter": torch.tensor([e[1] for e in heap], dtype=torch.long),
                    "dom_bound": torch.tensor([d.bound for d in doms], dtype=torch.float64),
                    "names": names, "splits": {}, "has": {}}
    for n in names:
        shape = next(d.splits[n].shape for d in doms if n in d.splits)
        zero = torch.zeros(shape, dtype=next(d.splits[n].dtype for d in doms if n in d.splits))
        packed["splits"][n] = torch.stack([d.splits.get(n, zero) for d in doms])
        packed["has"][n] = torch.tensor([n in d.splits for d in doms])
    warm = [d.warm is not None for d in doms]
    packed["has_warm"] = torch.tensor(warm)
    packed["warm"] = torch.stack([d.warm for d in doms if d.warm is not None]) if any(warm) else None
    branch_names = sorted({d.branch[0] for d in doms if d.branch is not None})
    packed["branch_names"] = branch_names
    packed["branch"] = torch.tensor([(-1, 0) if d.branch is None else (branch_names.index(d.branch[0]), d.branch[1])
                                     for d in doms], dtype=torch.long).reshape(-1, 2)
    return packed


def _unpack_open(packed: dict, lo: torch.Tensor, hi: torch.Tensor) -> list:
    """``_pack_open``'s heap back, on the box [lo, hi] (the same order: still a heap)."""
    heap, warm_at = [], 0
    has = {n: packed["has"][n].tolist() for n in packed["names"]}
    branch = packed["branch"].tolist()
    own = {i: k for k, i in enumerate(packed["own"].tolist())}
    for i, (b, c, dom_bound, warm) in enumerate(zip(packed["bound"].tolist(), packed["counter"].tolist(),
                                                    packed["dom_bound"].tolist(), packed["has_warm"].tolist())):
        splits = {n: packed["splits"][n][i] for n in packed["names"] if has[n][i]}
        box = (lo, hi) if i not in own else (packed["own_lo"][own[i]], packed["own_hi"][own[i]])
        dom = _Domain(*box, splits, dom_bound)
        if warm:
            dom.warm, warm_at = packed["warm"][warm_at], warm_at + 1
        k, idx = branch[i]
        dom.branch = None if k < 0 else (packed["branch_names"][k], idx)
        heap.append((b, c, dom, {}))
    return heap
