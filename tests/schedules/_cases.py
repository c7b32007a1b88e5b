"""One registry of hypothesis strategies, one per registered schedule, for shared tests.

Each strategy draws a :class:`Case`: the schedule, the range its values must stay in,
the warmup span (values must not decrease there) and the joins where it must be
continuous. A new schedule in ``SCHEDULES`` without a case here fails ``test_coverage``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from optiscope.schedules import (
    Constant,
    CosineAnnealingScheduler,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    Decay,
    ExponentialDecay,
    InverseSqrt,
    InverseSqrtDecay,
    LinearWarmup,
    MultiStepDecay,
    OneCycle,
    PolynomialDecay,
    Schedule,
    StepDecay,
    WarmupCosineSchedule,
    WarmupStableDecay,
    join,
)


@dataclass
class Case:
    schedule: Schedule
    lo: float
    hi: float
    horizon: float  # a step by which the interesting part is over
    warmup: float = 0.0  # values are non-decreasing on [0, warmup]
    joins: list[float] = field(default_factory=list)  # continuous there


lr = st.floats(1e-6, 1.0)
frac = st.floats(0.0, 1.0)
length = st.integers(1, 500) | st.floats(0.5, 500.0)


@st.composite
def constant(draw):
    v = draw(st.floats(0.0, 1.0))
    return Case(Constant(v), v, v, 10)


@st.composite
def step_decay(draw):
    a, d, e = draw(lr), draw(st.floats(0.01, 1.0)), draw(length)
    return Case(StepDecay(a, d, e), 0.0, a, 10 * e)


@st.composite
def exponential(draw):
    a, r = draw(lr), draw(st.floats(0.0, 2.0))
    return Case(ExponentialDecay(a, r), 0.0, a, 100)


@st.composite
def cosine(draw):
    a, f, T = draw(lr), draw(frac), draw(length)
    return Case(CosineAnnealingScheduler(a, a * f, T), a * f, a, 2 * T)


@st.composite
def cosine_warm_restarts(draw):
    a, f, T0 = draw(lr), draw(frac), draw(length)
    m = draw(st.integers(1, 5) | st.floats(1.0, 4.0))
    decay = draw(st.floats(0.05, 1.0))
    limit = draw(st.none() | st.integers(1, 6))
    s = CosineAnnealingWarmRestarts(a, a * f, T0, m, cycle_decay=decay, cycle_limit=limit)
    return Case(s, a * f, a, 20 * T0)


@st.composite
def multistep(draw):
    a, g = draw(lr), draw(st.floats(0.01, 1.0))
    ms = sorted(draw(st.lists(st.integers(1, 1000), min_size=1, max_size=6)))
    return Case(MultiStepDecay(a, ms, g), 0.0, a, 1200)


@st.composite
def polynomial(draw):
    a, f, T, p = draw(lr), draw(frac), draw(length), draw(st.floats(0.1, 5.0))
    return Case(PolynomialDecay(a, T, p, a * f), a * f, a, 2 * T)


@st.composite
def linear_warmup(draw):
    a, w, sf = draw(lr), draw(length), draw(frac)
    if draw(st.booleans()):
        return Case(LinearWarmup(a, w, a * sf), a * sf, a, 2 * w, warmup=w, joins=[w])
    f, T = draw(frac), draw(length)
    after = CosineAnnealingScheduler(a, a * f, T)
    start = after(0) * sf  # after(0) may round a hair below a
    s = LinearWarmup(None, w, start, after=after)
    return Case(s, min(start, a * f), a, w + 2 * T, warmup=w, joins=[w])


@st.composite
def warmup_cosine(draw):
    w, extra, a, f = draw(st.integers(0, 500)), draw(length), draw(lr), draw(frac)
    s = WarmupCosineSchedule(w, w + extra, a, a * f)
    return Case(s, 0.0 if w else a * f, a, 2 * (w + extra), warmup=w, joins=[w] if w else [])


@st.composite
def one_cycle(draw):
    a, T = draw(lr), draw(st.integers(20, 2000))
    three = draw(st.booleans())
    pct = draw(st.floats(0.1, 0.45 if three else 0.9))
    kw = dict(
        pct_start=pct,
        anneal_strategy=draw(st.sampled_from(["cosine", "cos", "linear"])),
        div_factor=draw(st.floats(1.0, 100.0)),
        final_div_factor=draw(st.floats(1.0, 1e5)),
        three_phase=three,
    )
    s = OneCycle(a, T, **kw)
    final = a / kw["div_factor"] / kw["final_div_factor"]
    return Case(s, final, a, 2 * T, warmup=pct * T - 1)


@st.composite
def cyclic(draw):
    b, f = draw(lr), draw(st.floats(1.0, 10.0))
    s = CyclicLR(
        b,
        b * f,
        draw(length),
        draw(st.none() | length),
        draw(st.sampled_from(["triangular", "triangular2", "exp_range"])),
        draw(st.floats(0.9, 1.0)),
    )
    return Case(s, b, b * f, 20 * s.step_size_up)


@st.composite
def inverse_sqrt(draw):
    a, w, sf = draw(lr), draw(length), draw(frac)
    s = InverseSqrt(a, w, a * sf)
    return Case(s, 0.0, a, 100 * w, warmup=w, joins=[w])


@st.composite
def inverse_sqrt_decay(draw):
    a, T = draw(lr), draw(length)
    return Case(InverseSqrtDecay(a, T), 0.0, a, 100 * T)


@st.composite
def wsd(draw):
    a, T = draw(lr), draw(st.integers(10, 5000))
    w = draw(st.floats(0.0, 0.3)) * T
    d = draw(st.floats(0.05, 0.5)) * T
    ef, sf = draw(frac), draw(frac)
    shape = draw(st.sampled_from(["linear", "cosine", "1-sqrt"]))
    s = WarmupStableDecay(a, T, w, d, a * ef, a * sf, shape)
    joins = [x for x in (w, T - d) if x > 0]
    return Case(s, min(a * ef, a * sf), a, 2 * T, warmup=w, joins=joins)


@st.composite
def decay(draw):
    a, T, f = draw(lr), draw(length), draw(frac)
    shape = draw(st.sampled_from(["linear", "cosine", "1-sqrt"]))
    return Case(Decay(a, T, a * f, shape), a * f, a, 2 * T)


@st.composite
def join_(draw):
    a, w, sf, f, T = draw(lr), draw(length), draw(frac), draw(frac), draw(length)
    s = join([LinearWarmup(a, w, a * sf), CosineAnnealingScheduler(a, a * f, T)], [w])
    return Case(s, min(a * sf, a * f), a, 2 * (w + T), warmup=w, joins=[w])


CASES = {
    "constant": constant(),
    "step_decay": step_decay(),
    "exponential": exponential(),
    "cosine": cosine(),
    "cosine_warm_restarts": cosine_warm_restarts(),
    "multistep": multistep(),
    "polynomial": polynomial(),
    "linear_warmup": linear_warmup(),
    "warmup_cosine": warmup_cosine(),
    "one_cycle": one_cycle(),
    "cyclic": cyclic(),
    "inverse_sqrt": inverse_sqrt(),
    "inverse_sqrt_decay": inverse_sqrt_decay(),
    "wsd": wsd(),
    "decay": decay(),
    "join": join_(),
}
