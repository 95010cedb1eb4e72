"""The distillation case of ``crossent bench``: every provider passes the correctness gate against the
float64 textbook reference, a wrong one is refused, and the case is listed and registered."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from crossent.bench import distill_cases, harness  # noqa: E402
from crossent.bench import providers as bench_providers  # noqa: E402
from crossent.bench.provider import Runner  # noqa: E402
from crossent.cli import main  # noqa: E402


class _WrongGrad(distill_cases.DistillProvider):
    """Right loss, the student's gradients 10% too large: must be refused."""

    def prepare(self, case, inputs):
        inner = super().prepare(case, inputs).call

        def call():
            loss, grads = inner()
            return loss, tuple(g * 1.1 for g in grads)

        return Runner(call)


def test_tiny_distillation_case_gates_on_the_reference():
    case = distill_cases.DistillCase("distill", "cpu", "fp32", (64, 8, 16, 300))
    provs = distill_cases.providers() + [
        _WrongGrad("wrong-grad", "test: gradient off by 10%", kinds=("distill",))
    ]
    result = harness.RunResult({})
    harness.run_case(case, provs, harness.Settings(repeats=1, quick=True), result)
    timed = {m.provider: m for m in result.measurements}
    assert set(timed) == {"floor", "crossent-distill", "crossent-distill-unfused", "torch-distill"}
    for name, m in timed.items():
        if name != "floor":
            assert m.loss_err < 1e-5 and m.grad_err < 1e-4, (name, m.loss_err, m.grad_err)
            assert m.ratio is not None and m.ratio > 0
    (skip,) = result.skipped
    assert skip.provider == "wrong-grad" and skip.status == "wrong" and "gradient" in skip.reason


def test_reference_is_the_unfused_crossent_loss():
    # independent of the providers: the textbook float64 reference equals crossent.distillation_loss
    import crossent

    case = distill_cases.DistillCase("distill", "cpu", "fp64", (40, 6, 10, 50))
    inputs = case.make_inputs()
    ref = case.reference(inputs)
    x, w = inputs.x.detach().clone().requires_grad_(), inputs.w.detach().clone().requires_grad_()
    loss = crossent.distillation_loss(
        x @ w.T, inputs.xt @ inputs.wt.T, inputs.target, **case.loss_kwargs
    )
    gx, gw = torch.autograd.grad(loss, (x, w))
    assert abs(float(loss) - ref.loss) <= 1e-12 * abs(ref.loss)
    torch.testing.assert_close(gx.float(), ref.grads[0])
    torch.testing.assert_close(gw.float(), ref.grads[1])


def test_distillation_case_and_providers_are_registered(capsys):
    assert [c.kind for c in distill_cases.distill_cases("cpu")] == ["distill"]
    assert not distill_cases.distill_cases("cpu", quick=True)
    assert not distill_cases.distill_cases("cuda")
    names = {p.name for p in bench_providers.all_providers()}
    assert {"crossent-distill", "crossent-distill-unfused", "torch-distill"} <= names
    assert main(["bench", "--list", "--device", "cpu"]) == 0
    assert "distill-1024x256x512x32000-fp32" in capsys.readouterr().out
    assert main(["bench", "--list", "--quick", "--device", "cpu"]) == 0
    assert "case      distill-" not in capsys.readouterr().out
