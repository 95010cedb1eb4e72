"""crossent.integrations.transformers: the patched model's loss and gradients are the stock model's.

The oracle is the unpatched model itself (transformers' own logits and ``ForCausalLMLoss``), run on a copy
with the same weights and inputs.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

import transformers  # noqa: E402

from crossent.integrations.transformers import (  # noqa: E402
    UnsupportedModelError,
    is_patched,
    patch,
    unpatch,
)
from hf_models import FAMILIES, VOCAB, batch, make_model  # noqa: E402


def _run(model: torch.nn.Module, inputs: dict, **kwargs) -> tuple:
    model.zero_grad(set_to_none=True)
    out = model(**inputs, **kwargs)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return out, grads


def _assert_same(stock: torch.nn.Module, patched: torch.nn.Module, inputs: dict, **kwargs) -> None:
    want, want_grads = _run(stock, inputs, **kwargs)
    got, got_grads = _run(patched, inputs, **kwargs)
    torch.testing.assert_close(got.loss, want.loss)
    assert got.logits is None and want.logits is not None
    for name, g in want_grads.items():
        if g is None:
            assert got_grads[name] is None, name
        else:
            torch.testing.assert_close(got_grads[name], g, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("num_items", [None, "tensor", "int"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_loss_and_every_gradient_match_the_stock_model(family, num_items):
    stock = make_model(family)
    patched = patch(copy.deepcopy(stock))
    inputs = batch()
    kwargs = {}
    if num_items is not None:  # as Trainer passes it: the whole accumulated batch's count, here + 3
        count = int((inputs["labels"][:, 1:] != -100).sum()) + 3
        kwargs["num_items_in_batch"] = torch.tensor(count) if num_items == "tensor" else count
    _assert_same(stock, patched, inputs, **kwargs)


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_moe_router_loss_is_still_added(family):
    stock = make_model(family)
    patched = patch(copy.deepcopy(stock))
    want = stock(**batch())
    got = patched(**batch())
    assert want.aux_loss is not None and want.aux_loss > 0.1  # coef 0.5: the sum depends on it
    torch.testing.assert_close(got.aux_loss, want.aux_loss)
    torch.testing.assert_close(got.loss, want.loss)
    no_aux = make_model(family, output_router_logits=False)
    assert (no_aux(**batch()).loss - want.loss).abs() > 1e-3


def test_softcap_and_scales_are_read_from_what_the_model_does():
    # the equality tests above could not fail if the post-processing did not move the loss
    for family, field, neutral in [
        ("gemma2", "final_logit_softcapping", None),
        ("cohere", "logit_scale", 1.0),
        ("granite", "logits_scaling", 1.0),
    ]:
        with_it = make_model(family)(**batch()).loss
        without = make_model(family, **{field: neutral})(**batch()).loss
        assert (with_it - without).abs() > 1e-3, family


def test_shift_labels_and_ignore_index_kwargs():
    stock = make_model("llama")
    patched = patch(copy.deepcopy(stock))
    inputs = batch()
    shift = torch.roll(inputs["labels"], -2, dims=1)  # any alignment the caller chose, taken as is
    shift[shift == -100] = 7
    shift[:, -2:] = 7
    _assert_same(stock, patched, inputs, shift_labels=shift, ignore_index=7)


def test_label_smoothing_and_z_loss_options_against_torch():
    stock = make_model("llama")
    patched = patch(copy.deepcopy(stock), label_smoothing=0.1, z_loss=1e-2)
    inputs = batch()
    logits = stock(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    target = F.pad(inputs["labels"], (0, 1), value=-100)[:, 1:].reshape(-1)
    flat = logits.reshape(-1, VOCAB)
    keep = target != -100
    want = F.cross_entropy(flat, target, label_smoothing=0.1)
    want = want + 1e-2 * (torch.logsumexp(flat[keep], dim=-1) ** 2).mean()
    torch.testing.assert_close(patched(**inputs).loss, want)


def test_without_labels_the_model_is_unchanged():
    stock = make_model("gemma2")
    patched = patch(copy.deepcopy(stock))
    inputs = {k: v for k, v in batch().items() if k != "labels"}
    assert torch.equal(patched(**inputs).logits, stock(**inputs).logits)
    with torch.no_grad():
        want = stock.generate(inputs["input_ids"][1:], max_new_tokens=3, do_sample=False)
        got = patched.generate(inputs["input_ids"][1:], max_new_tokens=3, do_sample=False)
    assert torch.equal(got, want)


def test_train_only_keeps_the_stock_path_in_eval_mode():
    stock = make_model("llama")
    patched = patch(copy.deepcopy(stock), train_only=True)
    assert patched(**batch()).logits is None  # training mode: fused
    stock.eval()
    patched.eval()
    want, got = stock(**batch()), patched(**batch())
    assert torch.equal(got.logits, want.logits)
    assert torch.equal(got.loss, want.loss)


def test_tuple_output_leaves_the_logits_out():
    stock = make_model("llama")
    patched = patch(copy.deepcopy(stock))
    want = stock(**batch(), return_dict=False)
    got = patched(**batch(), return_dict=False)
    assert len(got) == len(want) - 1
    torch.testing.assert_close(got[0], want[0])


def test_patch_is_per_instance_idempotent_and_undone_by_unpatch():
    stock = make_model("llama")
    other = copy.deepcopy(stock)
    model = copy.deepcopy(stock)
    patch(model, label_smoothing=0.2)
    assert patch(model) is model and is_patched(model)  # the second call replaces the options
    assert len(model._forward_pre_hooks) == 1 and len(model._forward_hooks) == 1
    torch.testing.assert_close(model(**batch()).loss, stock(**batch()).loss)
    assert not is_patched(other) and other(**batch()).logits is not None
    assert "forward" not in vars(other.lm_head) and "_loss_function" not in vars(other)
    assert unpatch(model) is model and not is_patched(model)
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert "forward" not in vars(model.lm_head) and "_loss_function" not in vars(model)
    out = model(**batch())
    assert out.logits is not None
    torch.testing.assert_close(out.loss, stock(**batch()).loss)
    assert unpatch(model) is model  # unpatching an unpatched model does nothing


def test_survives_to_resize_and_gradient_checkpointing():
    stock = make_model("llama")
    patched = patch(copy.deepcopy(stock)).to(torch.float64).to(torch.float32)
    inputs = batch()
    _assert_same(stock, patched, inputs)
    for m in (stock, patched):  # renamed activation_checkpointing_enable in transformers 5.x
        getattr(m, "activation_checkpointing_enable", m.gradient_checkpointing_enable)()
    _assert_same(stock, patched, inputs)
    for m in (stock, patched):  # a new, larger output embedding: the patch follows it
        torch.manual_seed(3)
        m.resize_token_embeddings(VOCAB + 5)
    _assert_same(stock, patched, inputs)


def test_unsupported_models_get_a_clear_error():
    bert = transformers.BertForMaskedLM(
        transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    )
    with pytest.raises(UnsupportedModelError, match="BertForMaskedLM.*ForMaskedLMLoss"):
        patch(bert)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=32
    )
    double = patch(
        transformers.GPT2DoubleHeadsModel(config)
    )  # computes its own loss from the logits
    ids = batch()["input_ids"]
    with pytest.raises(UnsupportedModelError, match="GPT2DoubleHeadsModel applies __getitem__"):
        double(input_ids=ids, labels=ids)
    custom = make_model("llama")
    custom.loss_function = lambda logits, labels, vocab_size, **kw: logits.sum()
    with pytest.raises(
        UnsupportedModelError, match="LlamaForCausalLM: its loss_function is <lambda>"
    ):
        patch(custom)
    odd_head = make_model("llama")
    odd_head.set_output_embeddings(torch.nn.Sequential(torch.nn.Linear(32, VOCAB)))
    with pytest.raises(
        UnsupportedModelError, match="LlamaForCausalLM: its output embedding .*Sequential"
    ):
        patch(odd_head)
    log_softmaxed = patch(make_model("llama"))  # a post-processing the fused loss cannot reproduce
    log_softmaxed.lm_head.register_forward_hook(lambda module, args, out: out.log_softmax(-1))
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM applies log_softmax"):
        log_softmaxed(**batch())


def test_importing_the_integration_does_not_import_transformers():
    code = "import sys, crossent.integrations.transformers; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_torch_compile_of_the_patched_model():
    # aot_eager traces forward and backward as inductor does, without compiling C++ (inductor was also
    # checked by hand); crossent's own graph breaks are allowed
    stock = make_model("gemma2")
    patched = patch(copy.deepcopy(stock))
    compiled = torch.compile(patched, backend="aot_eager")
    want, want_grads = _run(stock, batch())
    got = compiled(**batch())
    got.loss.backward()
    torch.testing.assert_close(got.loss, want.loss)
    assert got.logits is None
    for name, p in patched.named_parameters():
        torch.testing.assert_close(p.grad, want_grads[name], msg=lambda m, n=name: f"{n}: {m}")
    ids = batch()["input_ids"]
    torch.testing.assert_close(compiled(input_ids=ids).logits, stock(input_ids=ids).logits)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_bfloat16_weights_and_autocast(family):
    # both round the head's inputs to bfloat16; crossent then computes in float32, the stock loss from
    # bfloat16 logits: equal within bfloat16 tolerance
    tol = {"atol": 1e-2, "rtol": 2e-2}
    stock = make_model(family).to(torch.bfloat16)
    patched = patch(copy.deepcopy(stock))
    want, got = stock(**batch()).loss, patched(**batch()).loss
    assert got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want, **tol)
    stock, patched = make_model(family), patch(make_model(family))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, want_grads = _run(stock, batch())
        got, got_grads = _run(patched, batch())
    torch.testing.assert_close(got.loss, want.loss, **tol)
    for name, g in want_grads.items():
        torch.testing.assert_close(got_grads[name], g, **tol, msg=lambda m, n=name: f"{n}: {m}")


def test_the_integration_uses_only_the_public_api():
    import ast
    import pathlib

    import crossent.integrations as pkg

    for path in pathlib.Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, f"{path.name} reaches above crossent.integrations"
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                for name in names:
                    assert name == "crossent" or not name.startswith("crossent."), (
                        f"{path.name}: {name}"
                    )
