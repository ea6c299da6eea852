"""Every registered backbone method trains a step through `pretrain` and exports a usable backbone
(timm's test_models pattern: parametrized over the registry, so a new method is tested by adding it).

The last test is the recipe of docs/design.md ("Adding a backbone method"): a method defined outside
the package -- one class, registered -- runs through the same `pretrain` with nothing else changed."""

import pytest
import torch
import torch.nn.functional as F
from ssl_testutil import tiny_overrides

from moviessl.checkpoint import build_from_checkpoint, load_checkpoint
from moviessl.config import load_config
from moviessl.models.heads import CVRLProjectionHead
from moviessl.ssl import get_method, list_methods, register_method
from moviessl.ssl.augment import augment_views, view_augmenters
from moviessl.ssl.base import BackboneModule
from moviessl.ssl.pretrain import pretrain


def _pretrain(method, clip_list, out, steps=1):
    cfg = load_config("backbone", "cpu", tiny_overrides([f"trainer.max_steps={steps}"]), variant=method)
    return pretrain(method, clip_list, out, cfg, run_probe=False, progress=False)


@pytest.mark.parametrize("method", list_methods())
def test_method_trains_a_step_and_exports(method, clip_list, tmp_path):
    cls = get_method(method)
    assert issubclass(cls, BackboneModule) and cls.name == method
    assert cls.views in ("pair", "single", None) and cls.pair_sampler in ("cvrl", "shift")
    cfg = load_config("backbone", "cpu")
    assert all(hasattr(cfg, s) for s in cls.config_sections)
    s = _pretrain(method, clip_list, tmp_path)
    assert s["method"] == method
    obj = load_checkpoint(tmp_path / "model.pt", stage="backbone")
    assert obj["meta"]["method"] == method and obj["meta"]["global_step"] == (0 if cls.views is None else 1)
    y = build_from_checkpoint(obj)(torch.randn(2, 3, 8, 32, 32))
    assert y.shape == (2, obj["meta"]["out_dim"]) and torch.isfinite(y).all()


@register_method("test_simsiam")
class SimSiamLike(BackboneModule):
    """SimSiam's symmetric negative cosine with a stop-gradient (Chen & He, CVPR 2021), no predictor."""

    views = "pair"
    pair_sampler = "cvrl"

    def __init__(self, cfg, num_classes=None):
        super().__init__(cfg)
        h = cfg.cvrl.head
        self.head = CVRLProjectionHead(self.backbone.out_dim, h.hidden_dim, h.out_dim, h.num_hidden)
        self.aug1, self.aug2 = view_augmenters(cfg)

    def on_after_batch_transfer(self, batch, dataloader_idx=0):
        if self._trainer is not None and self._trainer.training:
            v = self.to_float(batch["video"])
            batch["views"] = augment_views((self.aug1, self.aug2), (v[:, 0], v[:, 1]))
        return batch

    def training_step(self, batch, batch_idx):
        z1, z2 = (self.head(self.backbone(x)) for x in batch["views"])
        loss = -0.5 * (F.cosine_similarity(z1, z2.detach()).mean() + F.cosine_similarity(z2, z1.detach()).mean())
        self.log_step(loss, z1.shape[0])
        return loss


def test_a_method_added_outside_the_package_runs(clip_list, tmp_path):
    assert "test_simsiam" in list_methods() and get_method("test_simsiam") is SimSiamLike
    s = _pretrain("test_simsiam", clip_list, tmp_path, steps=2)
    assert s["method"] == "test_simsiam"
    assert load_checkpoint(tmp_path / "model.pt")["meta"]["global_step"] == 2


@pytest.mark.parametrize("method", ["cvrl", "modist"])
def test_channels_last_trains_and_exports_a_plain_checkpoint(method, clip_list, tmp_path):
    # MoDist: the flow net and both momentum key encoders are converted too
    cfg = load_config(
        "backbone", "cpu", tiny_overrides(["trainer.max_steps=1", "model.channels_last=true"]), variant=method
    )
    pretrain(method, clip_list, tmp_path, cfg, run_probe=False, progress=False)
    obj = load_checkpoint(tmp_path / "model.pt", stage="backbone")
    assert obj["config"]["model"]["channels_last"] is True and obj["meta"]["global_step"] == 1
    model = build_from_checkpoint(obj)
    y = model(torch.randn(2, 3, 8, 32, 32))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    "method,extra", [("cvrl", []), ("modist", []), ("modist", ["modist.align_crops=false"]), ("supervised", [])]
)
def test_full_frame_crops_train(method, extra, clip_list, tmp_path):
    """``data.frame_crop: full`` (the paper preset): the dataset draws the random resized crop on the
    whole frame, the batched augmenters keep the whole clip (flip, colour, blur only)."""
    from moviessl.errors import BadInputError
    from moviessl.ssl.augment import crop_flip_augmenter, dataset_crop_boxes

    over = tiny_overrides(["trainer.max_steps=1", "data.frame_crop=full", *extra])
    cfg = load_config("backbone", "cpu", over, variant=method)
    for aug in (*view_augmenters(cfg), crop_flip_augmenter(cfg)):
        assert torch.equal(aug.sample_params(3, 20, 20)["box"], torch.tensor([[0.0, 0.0, 20.0, 20.0]] * 3))
    assert dataset_crop_boxes(cfg)["area"] == tuple(cfg.augment.area)
    pretrain(method, clip_list, tmp_path, cfg, run_probe=False, progress=False)
    obj = load_checkpoint(tmp_path / "model.pt", stage="backbone")
    assert obj["config"]["data"]["frame_crop"] == "full" and obj["meta"]["global_step"] == 1
    bad_values = [("data.frame_crop", "wide"), ("augment.crop_sampler", "keras"), ("augment.op_style", "pil")]
    if method == "modist":
        bad_values.append(("modist.flow_input", "raw"))
    for key, value in bad_values:
        bad = load_config("backbone", "cpu", tiny_overrides([f"{key}={value}"]), variant=method)
        with pytest.raises(BadInputError, match=key):
            pretrain(method, clip_list, tmp_path / "bad", bad, run_probe=False, progress=False)


def test_paper_preset_crops_whole_frames_for_ssl_and_squares_for_sup_k400():
    from moviessl.ssl.augment import dataset_crop_boxes

    assert load_config("backbone", "paper", variant="cvrl").data.frame_crop == "full"
    assert load_config("backbone", "paper", variant="modist").data.frame_crop == "full"
    assert load_config("backbone", "paper", variant="supervised").data.frame_crop == "square"
    assert load_config("backbone", "cpu", variant="cvrl").data.frame_crop == "square"
    # CVRL's code draws its boxes with TF's sample_distorted_bounding_box; PySlowFast's Sup-K400 recipe not
    paper = load_config("backbone", "paper", variant="cvrl")
    assert paper.augment.crop_sampler == "tf" and view_augmenters(paper)[0].crop_sampler == "tf"
    assert dataset_crop_boxes(paper)["sampler"] == "tf"
    assert load_config("backbone", "paper", variant="supervised").augment.crop_sampler == "torchvision"
    assert load_config("backbone", "cpu", variant="cvrl").augment.crop_sampler == "torchvision"
    # ... and its TensorFlow contrast / saturation / blur
    assert paper.augment.op_style == "tf" and view_augmenters(paper)[1].op_style == "tf"
    assert load_config("backbone", "cpu", variant="cvrl").augment.op_style == "torchvision"
    # MaCLR feeds its flow images at mean 0 / std 1
    assert load_config("backbone", "paper", variant="modist").modist.flow_input == "maclr"
    assert load_config("backbone", "cpu", variant="modist").modist.flow_input == "centred"


def _modist_in_training(overrides: list[str], n: int):
    """A tiny MoDist module as in training, and a batch of ``n`` random two-view uint8 clips with flow."""
    from types import SimpleNamespace

    m = get_method("modist")(load_config("backbone", "cpu", tiny_overrides(overrides), variant="modist"))
    m._trainer = SimpleNamespace(training=True)
    g = torch.Generator().manual_seed(0)
    clips = [torch.randint(0, 256, (n, 2, 3, 8, 32, 32), dtype=torch.uint8, generator=g) for _ in range(2)]
    return m, {"video": clips[0], "flow": clips[1]}


def test_modist_flow_crops_of_their_own_follow_the_augment_block():
    """modist.align_crops=false: each flow clip gets its own crop and flip, drawn from the augment block
    as the RGB views' are; they came from flow_augment's defaults (area 0.3-1, aspect 0.5-2, flip 0.5)
    whatever augment.area / aspect / flip_p said."""

    from moviessl.ssl.flow import normalize_flow

    over = ["modist.align_crops=false", "augment.area=[1.0,1.0]", "augment.aspect=[1.0,1.0]", "augment.flip_p=0.0"]
    m, batch = _modist_in_training(over, 8)
    torch.manual_seed(0)
    out = m.on_after_batch_transfer(batch)
    for i in range(2):  # the whole frame, never flipped: the flow clip as it is
        assert torch.allclose(out["flows"][i], normalize_flow(batch["flow"][:, i].float(), "centred"), atol=1e-4)


def test_modist_moves_its_key_encoders_once_per_optimizer_step(monkeypatch):
    """Under gradient accumulation a step's micro-batches all see the same query nets; the momentum
    update ran on each of them, so the keys followed the queries at m ** accumulate_grad_batches."""
    from types import SimpleNamespace

    m, batch = _modist_in_training(["modist.momentum=0.5"], 4)
    batch["index"] = torch.arange(4)
    batch = m.on_after_batch_transfer(batch)
    monkeypatch.setattr(m, "log_step", lambda *a, **k: None)
    with torch.no_grad():
        for p in m.v_head.parameters():
            p.add_(1.0)  # queries apart from their keys, so a momentum step shows
    key0 = [p.clone() for p in m.v_key["head"].parameters()]
    query = [p.clone() for p in m.v_head.parameters()]

    def moved_once(key, start):
        return all(torch.allclose(k, 0.5 * k0 + 0.5 * q) for k, k0, q in zip(key, start, query))

    m._trainer = SimpleNamespace(global_step=0, training=True)
    for _ in range(2):  # two micro-batches of optimizer step 0
        m.training_step(batch, 0)
    key1 = [p.clone() for p in m.v_key["head"].parameters()]
    assert moved_once(key1, key0)
    m._trainer.global_step = 1  # the next optimizer step moves them again
    m.training_step(batch, 2)
    assert moved_once(list(m.v_key["head"].parameters()), key1)


def test_modist_scores_each_query_against_the_keys_and_queue_of_its_term(monkeypatch):
    """L = w_visual L_vv + w_cross (L_vf + L_fv) / 2 + w_flow L_ff: q_v of clip A against the visual
    key of clip B (the visual queue), q_v against the flow key of its own clip (the flow queue), q_f
    against the visual key of its own clip (the visual queue), q_f against the flow key of clip B.
    Only the momentum update was checked: a term given the wrong key or queue, or weighted wrongly,
    still trained a step and exported."""
    from types import SimpleNamespace

    import moviessl.ssl.methods.modist as modist

    over = ["modist.w_visual=0.3", "modist.w_cross=2.0", "modist.w_flow=5.0"]
    m, batch = _modist_in_training(over, 4)
    batch["index"] = torch.arange(4)
    batch = m.on_after_batch_transfer(batch)
    m._trainer = SimpleNamespace(global_step=0, training=True)
    logged = {}
    monkeypatch.setattr(m, "log_step", lambda loss, b, **extra: logged.update(loss=loss, **extra))
    seen = {}
    m.v_head.register_forward_hook(lambda mod, i, out: seen.__setitem__("q_v", out))
    m.f_head.register_forward_hook(lambda mod, i, out: seen.__setitem__("q_f", out))
    keys = m._keys
    monkeypatch.setattr(m, "_keys", lambda enc, x: seen.setdefault("k_v" if enc is m.v_key else "k_f", keys(enc, x)))
    calls = []

    def recorder(q, k, queue, tau, q_ids, queue_ids):
        calls.append((q, k, queue, queue_ids))
        return torch.tensor(float(10 ** len(calls)))  # 10, 100, 1000, 10000: which term is which

    neg_v, neg_f = m.v_queue.get(), m.f_queue.get()
    monkeypatch.setattr(modist, "info_nce_queue", recorder)
    loss = m.training_step(batch, 0)
    assert loss.item() == pytest.approx(0.3 * 10 + 2.0 * 0.5 * (100 + 1000) + 5.0 * 10000)
    assert [logged[k].item() for k in ("l_vv", "l_vf", "l_fv", "l_ff")] == [10, 100, 1000, 10000]
    q_v, q_f, k_v, k_f = seen["q_v"], seen["q_f"], seen["k_v"], seen["k_f"]
    b = 4
    other = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])  # row i's clip of the other view
    want = [(q_v, k_v[other], neg_v), (q_v, k_f, neg_f), (q_f, k_v, neg_v), (q_f, k_f[other], neg_f)]
    for (q, k, queue, queue_ids), (wq, wk, wqueue) in zip(calls, want):
        assert q is wq and torch.equal(k, wk) and torch.equal(queue, wqueue)
    assert not torch.equal(neg_v, neg_f) and not torch.equal(k_v, k_v[other])  # the checks can tell them apart


@pytest.mark.parametrize("method", ["cvrl", "modist", "supervised"])
def test_module_apply_reaches_every_submodule_of_a_method_with_augmenters(method):
    """``nn.Module.apply(fn)`` (a user's weight init) walks every child; the augmenters' own
    ``apply(x, p)`` (now ``apply_params``) took the call, and it failed with a TypeError on any module holding them."""
    cls = get_method(method)
    cfg = load_config("backbone", "cpu", tiny_overrides([]), variant=method)
    m = cls(cfg, num_classes=3) if cls.needs_labels else cls(cfg)
    seen = []

    def init(mod):
        seen.append(mod)
        if isinstance(mod, torch.nn.Linear):
            torch.nn.init.zeros_(mod.weight)

    assert m.apply(init) is m
    assert len(seen) == len(list(m.modules()))
    augs = [a for a in seen if type(a).__name__ == "ConsistentAugment"]
    assert augs
    linears = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    assert linears and all(not mod.weight.any() for mod in linears)


def test_augment_views_gives_each_view_its_own_augmenters_draw():
    """CVRL augments a pair's two clips independently, each by its own augmenter (Qian et al. 2021,
    §3.2): here one that never flips and one that always does, on the same clip. Were the first
    view's draw applied to both, the pair would be two identical copies."""
    from moviessl.video import ConsistentAugment

    kw = dict(area=(1, 1), aspect=(1, 1), jitter_p=0.0, gray_p=0.0, blur_p=0.0, normalize=False)
    keep, flip = ConsistentAugment(16, flip_p=0.0, **kw), ConsistentAugment(16, flip_p=1.0, **kw)
    x = torch.rand(2, 3, 2, 16, 16)
    (a, b), p = augment_views((keep, flip), (x, x), return_params=True)
    torch.testing.assert_close(a, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(b, x.flip(-1), atol=1e-5, rtol=0)
    assert p["flip"].tolist() == [False, False, True, True]


@pytest.mark.parametrize("method", list_methods())
def test_a_method_stepped_by_hand_without_a_trainer(method):
    """The hooks asked ``self.trainer is not None``, but Lightning's ``trainer`` property raises where
    none is attached: ``setup``, ``on_after_batch_transfer`` and ``log_step`` of a module stepped by
    hand (a notebook, a user's own loop) met RuntimeError. Without a trainer the batch goes through
    as it is and nothing is logged (the context modules' rule)."""
    import warnings

    cls = get_method(method)
    cfg = load_config("backbone", "cpu", tiny_overrides([]), variant=method)
    m = cls(cfg, num_classes=3) if getattr(cls, "needs_labels", False) else cls(cfg)
    m.setup("fit")
    batch = {"video": torch.zeros(2, 2, 3, 4, 8, 8, dtype=torch.uint8)}
    assert m.on_after_batch_transfer(batch, 0) is batch and set(batch) == {"video"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's "self.log() without a trainer" warning
        m.log_step(torch.tensor(1.0), 2)
