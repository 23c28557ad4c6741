"""ModelConfig: presets, parameter counts, validation."""
import pytest

from nano_runtime.config import ModelConfig
from nano_runtime.cards import list_cards


def test_nano_presets_have_their_target_sizes():
    n1 = ModelConfig.from_name("nano-1").num_params()
    n2 = ModelConfig.from_name("nano-2").num_params()
    assert abs(n1 / 1.80e9 - 1) <= 0.02, n1
    assert abs(n2 / 3.25e9 - 1) <= 0.02, n2


def test_param_count_matches_the_module(smollm2):
    cfg = smollm2.config
    counted = sum(p.numel() for p in smollm2.model.parameters())
    assert cfg.num_params() == counted == 134_515_008


def test_gemma_param_count_matches_the_module(gemma3):
    counted = sum(p.numel() for p in gemma3.model.parameters())
    assert gemma3.config.num_params() == counted
    assert 260e6 < counted < 275e6


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3", "nano-1", "nano-2"])
def test_card_configs_count_like_the_module(name):
    import torch
    from nano_runtime.model import Transformer
    cfg = ModelConfig.from_name(name)
    with torch.device("meta"):
        m = Transformer(cfg)
    assert cfg.num_params() == sum(p.numel() for p in m.parameters())


def test_cards_listed():
    assert {"smollm2-135m-instruct", "gemma3-270m", "tiny-llama", "tiny-gemma3", "nano-1",
            "nano-2"} <= set(list_cards())


@pytest.mark.parametrize("bad, field", [
    (dict(family="gpt"), "family"),
    (dict(n_heads=9, n_kv_heads=2), "n_kv_heads"),
    (dict(dim=0), "dim"),
    (dict(activation="relu"), "activation"),
    (dict(norm_eps=0.0), "norm_eps"),
])
def test_bad_configs_name_the_field(bad, field):
    with pytest.raises(ValueError, match=f"ModelConfig.{field}"):
        ModelConfig(**bad)


def test_gemma_layer_pattern(gemma3):
    cfg = gemma3.config
    glob = [i for i in range(cfg.n_layers) if cfg.is_global_layer(i)]
    assert glob == [5, 11, 17]
    assert cfg.layer_window(0) == 512 and cfg.layer_window(5) == 0
    assert cfg.layer_rope_theta(0) == 10000.0 and cfg.layer_rope_theta(5) == 1e6
