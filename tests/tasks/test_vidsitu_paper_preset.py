"""The paper preset of ``finetune vidsitu`` against what it says it follows: the paper (Xiao et al.,
§3.1) where it speaks, VidSitu's reference training (``TheShadow29/VidSitu``: ``configs/vsitu_cfg.yml``,
``configs/vsitu_tx_cfgs/transformer.yaml``, ``vidsitu_code/mdl_sf_base.py``, ``mdl_evrel.py``) where it
is silent."""

from torch import nn

from moviessl.config import load_config
from moviessl.models.txd import TXD_PRESETS
from moviessl.models.txe import TXE_PRESETS
from moviessl.tasks.vidsitu.relation import build_relation_model
from moviessl.tasks.vidsitu.verb import build_verb_model


def test_the_paper_presets_task_heads_train_as_vidsitus_code():
    cfg = load_config("vidsitu", "paper")
    # VidSitu's training: Adam, lr 1e-4 constant, 10 epochs, batch 16 (its verb command: 8), no decay
    for task, batch in (("verb", 8), ("srl", 16), ("relation", 16)):
        t = getattr(cfg, task)
        assert (t.lr, t.epochs, t.batch_size, t.weight_decay, t.warmup_steps) == (1e-4, 10, batch, 0.0, 0), task
    assert cfg.trainer.gradient_clip_val is None
    # the paper's TxE (3 layers, 16 heads, hidden 1024); VidSitu's TxD (3 layers, 8 heads, 1024, FFN 2048)
    txe = TXE_PRESETS[cfg.txe.preset]
    assert (txe["depth"], txe["heads"], txe["dim"]) == (3, 16, 1024)
    txd = TXD_PRESETS[cfg.srl.txd]
    assert (txd["depth"], txd["heads"], txd["dim"], txd["ffn"]) == (3, 8, 1024, 2048)
    assert cfg.srl.max_len == 60 and cfg.srl.memory == "self"
    # the heads: VidSitu's verb head (d -> d/2 -> verbs) and evrel classifier (2d -> d -> classes)
    # have no dropout, and the evrel classifier sees only the two events (paper §4.2)
    assert cfg.verb.dropout == 0.0 and cfg.verb.hidden is None
    assert cfg.relation.dropout == 0.0 and cfg.relation.hidden is None and not cfg.relation.pair_identity
    verb = build_verb_model(1024, 7, cfg.verb.hidden, cfg.verb.dropout)
    rel = build_relation_model(1024, 4, cfg.relation.hidden, cfg.relation.dropout, pair_identity=False)
    for head, dims in ((verb.head, [(1024, 512), (512, 7)]), (rel.head, [(2048, 1024), (1024, 4)])):
        assert [(m.in_features, m.out_features) for m in head if isinstance(m, nn.Linear)] == dims
        assert all(m.p == 0.0 for m in head if isinstance(m, nn.Dropout))
    # the cpu preset keeps the head the demo's recorded relation runs were trained with
    assert load_config("vidsitu", "cpu").relation.dropout == 0.1
