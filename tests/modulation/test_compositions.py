"""Compositions of methods (`modulation="aim+unimodal_losses"`): how they are named and configured,
what they refuse, and what each hook does (`aim_hf.modulation.composite`). The infrastructure tests
(distributed, accumulation, fp16 overflow, resume) run `dist_train.COMPOSITIONS` beside every method."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import TrainerCallback

from aim_hf import MODULATIONS, AIMConfig, Modulation
from aim_hf.cli import main
from aim_hf.scripts.train import parse_train_args
from aim_hf.modulation import AIM, MLA, OGMGE, Composition, HookContext, UnimodalLosses
from aim_hf.trainer import MODULATION_STATE_NAME
from dist_train import assert_close, make_trainer
from hooks import gradients_ready, train_forward


# ------------------------------------------------------------------ methods made for these tests
class Double(Modulation):
    """Doubles every gradient at its step."""

    name = "double"

    def on_gradients_ready(self, ctx):
        for p in ctx.model.parameters():
            if p.grad is not None:
                p.grad.mul_(2)
        ctx.log({"double/done": 1.0})


class Record(Modulation):
    """Records the norm of the fusion's gradient at its step."""

    name = "record"

    def __init__(self, model, *args) -> None:
        super().__init__(model, *args)
        self.norms: list[float] = []

    def on_gradients_ready(self, ctx):
        self.norms.append(torch.cat([p.grad.flatten() for p in ctx.model.fusion.parameters()]).norm().item())
        ctx.log({"record/norm": self.norms[-1]})


class SlowVision(Modulation):
    name = "slow_vision"

    def on_gradients_ready(self, ctx):
        ctx.scale_lr("vision", 0.5)


class SlowVisionFastAudio(Modulation):
    name = "slow_vision_fast_audio"

    def on_gradients_ready(self, ctx):
        ctx.scale_lr("vision", 0.4)
        ctx.scale_lr("audio", 2.0)


class Replacer(Modulation):
    """Evaluates with the vision share of the fused logits."""

    name = "replacer"

    def on_prediction_step(self, ctx):
        ctx.replace_logits(ctx.outputs.modality_logits["vision"])


@pytest.fixture
def registered(monkeypatch):
    """The test methods above, registered for the duration of a test."""
    for cls in (Double, Record, SlowVision, SlowVisionFastAudio, Replacer):
        monkeypatch.setitem(MODULATIONS, cls.name, cls)


def with_rng(seed, function, *args):
    """`function(*args)` from the global RNG state `seed` (a training forward draws dropout)."""
    torch.manual_seed(seed)
    return function(*args)


def first_batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def half_masks(model, modality: str) -> dict[str, dict[str, torch.Tensor]]:
    """Unit masks switching off the first half of the units of `modality`'s first depth group."""
    masks = {}
    for name, module in model.unit_modules(modality)[0].items():
        mask = torch.ones(module.weight.shape[0])
        mask[: mask.numel() // 2] = 0
        masks[name] = mask
    return {modality: masks}


# ------------------------------------------------------------------------- naming and options
def test_a_list_names_the_same_composition_as_the_plus_string(tmp_path):
    args = AIMConfig(output_dir=str(tmp_path), modulation=["aim", "unimodal_losses"], use_cpu=True, report_to="none")
    assert args.modulation == "aim+unimodal_losses"
    # A single method stays as it was.
    assert AIMConfig(output_dir=str(tmp_path), modulation="ogm_ge", use_cpu=True, report_to="none").modulation == "ogm_ge"


def test_command_line_and_yaml_parse_a_composition(tmp_path):
    _, _, args = parse_train_args(
        ["--modulation", "aim+unimodal_losses", "--modulation_kwargs", '{"unimodal_losses": {"weight": 0.5}}']
    )
    assert args.modulation == "aim+unimodal_losses" and args.modulation_kwargs == {"unimodal_losses": {"weight": 0.5}}

    (tmp_path / "run.yaml").write_text(
        "modulation: ogm_ge+unimodal_losses\nmodulation_kwargs:\n  ogm_ge:\n    alpha: 0.3\n"
    )
    _, _, args = parse_train_args([str(tmp_path / "run.yaml")])
    assert args.modulation == "ogm_ge+unimodal_losses" and args.modulation_kwargs == {"ogm_ge": {"alpha": 0.3}}

    (tmp_path / "list.yaml").write_text("modulation: [aim, unimodal_losses]\n")
    assert parse_train_args([str(tmp_path / "list.yaml")])[2].modulation == "aim+unimodal_losses"


def test_a_refused_composition_is_one_line_on_the_command_line(capsys, monkeypatch):
    monkeypatch.delenv("AIM_HF_DEBUG", raising=False)
    assert main(["train", "--modulation", "aim+none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aim-hf train: error: modulation 'aim+none' composes 'none'") and "Traceback" not in err
    assert len(err.splitlines()) == 2  # the message and the hint about --debug


@pytest.mark.parametrize(
    "modulation, message",
    [
        ("aim+aim", "names 'aim' twice"),
        ("aim+none", "composes 'none'"),
        ("aim+nope", "Unknown modulation 'nope' in 'aim+nope'"),
        ("aim+", "Unknown modulation '' in 'aim+'"),
        ("opm+mla", "opm and mla both pass the model's forward argument 'feature_keep'"),
        ("mmpareto+unimodal_losses", "mmpareto and unimodal_losses both add each modality's own cross-entropy"),
        ("unimodal_losses+inforeg", "unimodal_losses and inforeg both add"),
        ("aim+redreg+mmpareto", "redreg and mmpareto both add"),
        ("mla+replacer", "mla and replacer both replace the evaluation logits"),
        # Windows apply to every member, and unimodal_losses runs over the whole training.
        ("aim+unimodal_losses", "unimodal_losses is on for the whole training"),
    ],
)
def test_nonsensical_compositions_are_refused_in_one_line(modulation, message, registered, encoder_paths, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        # modulation_start reaches the members when they are built (the trainer), the rest AIMConfig refuses.
        make_trainer(modulation, encoder_paths, tmp_path, modulation_start=0.5)
    assert "\n" not in str(refused.value)


def test_kwargs_keyed_by_method_reach_each_member_and_others_are_refused(encoder_paths, tmp_path):
    kwargs = {"ogm_ge": {"alpha": 0.3}, "unimodal_losses": {"weight": 0.5}}
    trainer = make_trainer("ogm_ge+unimodal_losses", encoder_paths, tmp_path, modulation_kwargs=kwargs)
    assert isinstance(trainer.modulation, Composition)
    ogm, unimodal = trainer.modulation.members
    assert isinstance(ogm, OGMGE) and isinstance(unimodal, UnimodalLosses)
    assert (ogm.config.alpha, unimodal.config.weight) == (0.3, 0.5)
    # A member left out takes its defaults.
    trainer = make_trainer("ogm_ge+unimodal_losses", encoder_paths, tmp_path, modulation_kwargs={"ogm_ge": {}})
    assert trainer.modulation.members[1].config.weight == UnimodalLosses.Config().weight

    def refused(kwargs):
        with pytest.raises(ValueError) as error:
            AIMConfig(output_dir=str(tmp_path), modulation="ogm_ge+unimodal_losses", modulation_kwargs=kwargs)
        return str(error.value)

    assert "keys ['aim'] are not methods of 'ogm_ge+unimodal_losses'" in refused({"aim": {}})
    assert "keys ['alpha'] are not methods" in refused({"alpha": 0.3})  # the flat form of a single method
    assert "['wieght'] are not options of 'unimodal_losses'" in refused({"unimodal_losses": {"wieght": 1.0}})
    assert "'alpha' of 'ogm_ge' must be float" in refused({"ogm_ge": {"alpha": "big"}})
    assert "modulation_kwargs['ogm_ge'] must be a mapping" in refused({"ogm_ge": 0.3})


# ------------------------------------------------------------------------------- the hooks
def test_loss_of_a_composition_is_the_sum_of_its_members_terms(encoder_paths, tmp_path):
    composed = make_trainer(
        "aim+unimodal_losses", encoder_paths, tmp_path / "c", modulation_kwargs={"unimodal_losses": {"weight": 0.5}}
    )
    aim = make_trainer("aim", encoder_paths, tmp_path / "a").modulation
    unimodal = make_trainer(
        "unimodal_losses", encoder_paths, tmp_path / "u", modulation_kwargs={"weight": 0.5}
    ).modulation
    batch = first_batch(composed)
    model = composed.model
    for method in (composed.modulation.members[0], aim):  # an auxiliary pass: AIM has a term
        method.masks = half_masks(model, "vision")
    total = with_rng(0, train_forward, composed.modulation, model, batch).loss
    terms = [with_rng(0, train_forward, method, model, batch).loss for method in (aim, unimodal)]
    assert all(term is not None and term.item() > 0 for term in terms)
    torch.testing.assert_close(total, terms[0] + terms[1])


def test_lr_scales_multiply(registered, encoder_paths, tmp_path):
    trainer = make_trainer("slow_vision+slow_vision_fast_audio", encoder_paths, tmp_path, max_steps=2)
    assert gradients_ready(trainer.modulation, 0, 2).lr_scales == pytest.approx({"vision": 0.2, "audio": 2.0})

    class LearningRates(TrainerCallback):  # runs after the trainer's own callback has scaled them
        def __init__(self):
            self.ratios = []

        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            lrs = {g["modality"]: g["lr"] for g in trainer.optimizer.param_groups}
            self.ratios.append({m: lrs[m] / lrs[None] for m in ("vision", "audio", "text")})

    seen = LearningRates()
    trainer.add_callback(seen)
    trainer.train()
    assert seen.ratios == [pytest.approx({"vision": 0.2, "audio": 2.0, "text": 1.0})] * 2
    # Restored after each step.
    assert len({g["lr"] for g in trainer.optimizer.param_groups}) == 1


def test_gradient_changes_apply_in_the_order_given(registered, encoder_paths, tmp_path):
    norms = {}
    for modulation in ("double+record", "record+double"):
        trainer = make_trainer(modulation, encoder_paths, tmp_path / modulation, max_steps=1)
        trainer.train()
        record = next(m for m in trainer.modulation.members if isinstance(m, Record))
        norms[modulation] = record.norms[0]
        # Both members' metrics are logged.
        assert {"double/done", "record/norm"} <= set(trainer.state.log_history[0])
    assert norms["double+record"] == pytest.approx(2 * norms["record+double"], rel=1e-5)


def test_forward_arguments_merge(encoder_paths, tmp_path):
    trainer = make_trainer("aim+opm", encoder_paths, tmp_path)
    aim, opm = trainer.modulation.members
    model = trainer.model
    aim.masks = half_masks(model, "audio")
    opm.drop_prob = torch.tensor([1.0, 0.0, 0.0])  # drop every vision feature
    batch = first_batch(trainer)
    ctx = train_forward(trainer.modulation, model, batch)
    kwargs = ctx.forward_kwargs
    assert set(kwargs) == {"feature_keep"} and set(kwargs["feature_keep"]) == {"vision"}
    assert not kwargs["feature_keep"]["vision"].any()
    plain = model(**batch)
    assert ctx.loss is not None  # AIM's masked pass ran ...
    assert not torch.allclose(ctx.outputs.logits, plain.logits)  # ... and OPM's drop reached the fusion


PASS_FORWARD_ARGUMENTS = [name for name, cls in MODULATIONS.items() if cls.forward_arguments]


@pytest.mark.parametrize("method", PASS_FORWARD_ARGUMENTS)
def test_methods_declare_the_forward_arguments_they_pass(method, encoder_paths, tmp_path):
    """What a composition's start-time check relies on: every forward argument a method passes is
    in its `forward_arguments`."""
    trainer = make_trainer(method, encoder_paths, tmp_path, max_steps=3)
    passed: set[str] = set()
    begin = trainer.modulation.on_micro_batch_begin

    def recorded(ctx):
        begin(ctx)
        passed.update(ctx.forward_kwargs)

    trainer.modulation.on_micro_batch_begin = recorded
    trainer.train()
    assert passed and passed <= set(type(trainer.modulation).forward_arguments)


def test_evaluation_logits_warnings_and_windows(encoder_paths, tmp_path):
    trainer = make_trainer("unimodal_losses+mla", encoder_paths, tmp_path / "mla")
    mla = trainer.modulation.members[1]
    assert isinstance(mla, MLA)
    batch = first_batch(trainer)
    with torch.no_grad():
        outputs = trainer.model(**batch)
    # The one member that replaces the evaluation logits decides them.
    composed_ctx, mla_ctx = (HookContext(model=trainer.model, outputs=outputs) for _ in range(2))
    trainer.modulation.on_prediction_step(composed_ctx)
    mla.on_prediction_step(mla_ctx)
    torch.testing.assert_close(composed_ctx.logits, mla_ctx.logits)
    # The members' optimizer warnings are joined.
    kwargs = {"ogm_ge": {"mode": "gradient"}, "agm": {"mode": "gradient"}}
    composed = make_trainer("ogm_ge+agm", encoder_paths, tmp_path / "warn", modulation_kwargs=kwargs).modulation
    ctx = HookContext(model=composed.model, optimizer=torch.optim.AdamW(torch.nn.Linear(2, 2).parameters()))
    composed.on_train_begin(ctx)
    warning = " ".join(ctx.warnings)
    assert warning.startswith("ogm_ge with mode='gradient'") and "agm with mode='gradient'" in warning
    # Each member keeps its own window: AIM warms up for a tenth of the steps, OGM-GE starts at once.
    composed = make_trainer("aim+ogm_ge", encoder_paths, tmp_path / "window", modulation_start=None).modulation
    aim, ogm = composed.members
    assert not aim.is_active(5, 100) and ogm.is_active(5, 100) and composed.is_active(5, 100)
    assert aim.is_active(10, 100)
    # ... and its own end: OGM-GE stops at half of the steps, as alone, while AIM and the composition go on.
    assert not ogm.is_active(50, 100) and aim.is_active(99, 100) and composed.is_active(99, 100)
    # Two members that both end: the composition stops after the later one; the user's end applies to both.
    composed = make_trainer("ogm_ge+pmr", encoder_paths, tmp_path / "ends").modulation
    ogm, pmr = composed.members
    assert (ogm.end, pmr.end) == (0.5, 0.54) and composed.is_active(53, 100) and not composed.is_active(54, 100)
    composed = make_trainer("ogm_ge+pmr", encoder_paths, tmp_path / "end", modulation_end=0.8).modulation
    assert [m.end for m in composed.members] == [0.8, 0.8] and composed.is_active(79, 100)


def test_each_members_state_is_saved_under_its_name(encoder_paths, tmp_path):
    run = dict(max_steps=2, save_strategy="steps", save_steps=2)
    trainer = make_trainer("aim+unimodal_losses", encoder_paths, tmp_path, **run)
    trainer.train()
    saved = torch.load(tmp_path / "checkpoint-2" / MODULATION_STATE_NAME, weights_only=False)
    assert saved["modulation"] == "aim+unimodal_losses" and list(saved["state"]) == ["aim", "unimodal_losses"]
    aim = trainer.modulation.members[0]
    assert isinstance(aim, AIM) and saved["state"]["aim"]["scores"] is not None
    assert_close(saved["state"]["aim"], aim.state_dict(), "aim state")
    # Restored member by member ...
    fresh = make_trainer("aim+unimodal_losses", encoder_paths, tmp_path, **run)
    fresh._load_modulation_state(str(tmp_path / "checkpoint-2"))
    assert_close(fresh.modulation.members[0].state_dict(), aim.state_dict(), "restored aim state")
    # ... and the same members in another order are another run.
    reordered = make_trainer("unimodal_losses+aim", encoder_paths, tmp_path, **run)
    with pytest.raises(ValueError, match="trained with modulation='aim\\+unimodal_losses'"):
        reordered.train(resume_from_checkpoint=True)


def test_the_model_card_names_each_member(encoder_paths, tmp_path):
    trainer = make_trainer("aim+unimodal_losses", encoder_paths, tmp_path, max_steps=1)
    trainer.train()
    trainer.create_model_card(output_dir=str(tmp_path))
    card = (tmp_path / "README.md").read_text()
    title = f"{MODULATIONS['aim'].title} + {MODULATIONS['unimodal_losses'].title}"
    assert f'{title}** (`modulation="aim+unimodal_losses"`)' in card
    assert "| `aim.alpha` | 1.0 |" in card and "| `aim.dam_cap` | none |" in card  # AIM's options, by name
    assert "| `aim.prototypes` | learned |" in card  # the option, not AIM's state of the same name
    assert "| `unimodal_losses.weight` | 1.0 |" in card
    assert "| `aim.modulation_start` | 0 (step 0) |" in card and "| `unimodal_losses.modulation_start` | 0 (step 0) |" in card
    header = card.split("---")[1]  # the YAML metadata: each member is a tag
    assert "- aim\n" in header and "- unimodal_losses\n" in header
