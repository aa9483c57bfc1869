"""Fine-tuning the Item LLM's last layers jointly with the Recommendation LLM."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from lite_rec.config import ItemLLMConfig
from lite_rec.evaluate import evaluate
from lite_rec.item_embeddings import ItemEncoder, item_embeddings
from lite_rec.item_tower import ItemTower
from lite_rec.model import ItemRepresentation
from lite_rec.model_io import load_model
from lite_rec.nn.whitening import whitening
from lite_rec.train import train
from tests.conftest import cyclic_data
from tests.test_train import assert_resume_after_crash_is_identical, small_configs

WORDS = "toy story jumanji heat sabrina casino comedy drama adventure".split()
N_ITEMS = 12


def titled_data():
    """Cyclic sequences over items whose titles are 1-4 words, so token lengths differ."""
    data = cyclic_data(n_items=N_ITEMS, n_users=40, min_length=5, spread=4)
    titles = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 4)) for i in range(12)]
    items = pd.DataFrame({"item_id": data.item_ids, "title": titles})
    return dataclasses.replace(data, items=items)


def texts(data) -> list[str]:
    return [f"title: {title}" for title in data.items["title"]]


def configs(tiny_model: str, **model_changes):
    """test_train's small setting with the Item LLM (the tiny BERT) fine-tuned."""
    item_llm = ItemLLMConfig(model=tiny_model, max_length=16, batch_size=5)
    model, train_config = small_configs(item_llm_lr=1e-2)
    model = dataclasses.replace(model, finetune_item_llm=True, **model_changes)
    return item_llm, model, train_config


def test_tower_reproduces_the_frozen_encoder_and_trains_only_its_last_layers(tiny_model):
    data = titled_data()
    encoder = ItemEncoder(tiny_model, max_length=16)
    frozen = encoder.encode(texts(data), progress=False)
    tower = ItemTower(encoder, texts(data), layers=1, batch_size=5)

    assert tower.top is not None  # BERT splits: the lower layer ran once, into `prefix`
    assert torch.allclose(tower.embed_all(), frozen, atol=1e-5)
    assert torch.allclose(tower.eval()(torch.tensor([7, 2, 11])), frozen[[7, 2, 11]], atol=1e-5)
    trainable = [name for name, p in tower.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("top.encoder.layer.0.") for name in trainable)
    assert len(tower.top.encoder.layer) == 1
    tower(torch.tensor([0, 3])).sum().backward()
    assert all(p.grad is not None for p in tower.parameters() if p.requires_grad)


def test_a_model_that_does_not_split_runs_the_whole_encoder(tiny_t5):
    """T5's encoder has no `embeddings` module to bypass (its relative positions live in its
    first layer): the tower fine-tunes it whole, on the batch's items."""
    data = titled_data()
    encoder = ItemEncoder(tiny_t5, max_length=16)
    frozen = encoder.encode(texts(data), progress=False)
    tower = ItemTower(encoder, texts(data), layers=1, batch_size=5)

    assert tower.top is None and tower.encoder is encoder
    assert torch.allclose(tower.embed_all(), frozen, atol=1e-5)
    trainable = {name for name, p in tower.named_parameters() if p.requires_grad}
    assert trainable and all(".block.1." in name for name in trainable), trainable
    tower(torch.tensor([0, 3])).sum().backward()
    assert all(p.grad is not None for p in tower.parameters() if p.requires_grad)


def test_step_items_are_the_batch_items_capped_at_random():
    tower = ItemTower.__new__(ItemTower)
    torch.nn.Module.__init__(tower)
    tower.items_per_step = 0
    batch = torch.tensor([[3, 5, 0], [5, 9, 0]])  # internal indices, 0 = padding
    assert tower.step_items(batch).tolist() == [2, 4, 8]
    tower.items_per_step = 2
    capped = tower.step_items(batch)
    assert len(capped) == 2 and set(capped.tolist()) <= {2, 4, 8}


def test_finetuning_changes_the_item_table_and_the_saved_model_reloads(tmp_path, tiny_model):
    data = titled_data()
    item_llm, model_config, train_config = configs(tiny_model)
    frozen, _ = item_embeddings(data.items, item_llm, tmp_path / "cache")
    result = train(
        data, frozen, model_config, train_config, tmp_path / "m", progress=False, item_llm=item_llm
    )

    table = result.model.items.text[1:]
    assert not torch.allclose(table, torch.as_tensor(frozen), atol=1e-3)  # the Item LLM moved
    assert result.model.items.tower is None
    reloaded = load_model(tmp_path / "m")
    assert not any(key.startswith("items.tower") for key in reloaded.state_dict())
    assert torch.equal(reloaded.items.text, result.model.items.text)
    assert evaluate(reloaded, data, "test") == evaluate(result.model, data, "test")
    # The frozen model with the same seed ends elsewhere: fine-tuning took part in training.
    frozen_config = dataclasses.replace(model_config, finetune_item_llm=False)
    baseline = train(data, frozen, frozen_config, train_config, tmp_path / "f", progress=False)
    assert torch.equal(baseline.model.items.text[1:], torch.as_tensor(frozen))


@pytest.mark.parametrize("text_dim", [0, 5])
def test_a_whitened_table_stays_whitened_by_the_frozen_transform_while_fine_tuning(
    tiny_model, text_dim
):
    """The fine-tuned vectors go through the transform computed once from the frozen ones, also
    when it reduces them to `text_dim` principal directions."""
    data = titled_data()
    item_llm, model_config, _ = configs(
        tiny_model, whiten_text=True, text_dim=text_dim, finetune_items_per_step=0
    )
    encoder = ItemEncoder(tiny_model, max_length=16)
    frozen = encoder.encode(texts(data), progress=False)
    items = ItemRepresentation(model_config, N_ITEMS, frozen.numpy())
    items.attach_tower(ItemTower(encoder, texts(data), layers=1, batch_size=5))
    with torch.no_grad():
        items.tower.top.encoder.layer[0].output.dense.bias.add_(0.5)  # as if fine-tuned
    moved = items.tower.embed_all()
    mean, transform = whitening(frozen, dim=text_dim or None)
    assert items.text.shape[1] == (text_dim or frozen.shape[1])
    items.refresh()
    torch.testing.assert_close(items.text[1:], (moved - mean) @ transform)
    batch = {"input_ids": torch.tensor([[3, 5]]), "target_ids": torch.tensor([[5, 1]])}
    items.train().tower.eval()  # no dropout: the re-encoded rows must equal `moved`
    table = items(batch)  # the batch's items re-encoded through the tower
    expected = items.text_projection((moved - mean) @ transform) + items.id_embedding.weight[1:]
    torch.testing.assert_close(table[1:], expected, atol=1e-5, rtol=1e-5)


def test_finetuned_training_resumes_to_identical_weights(tmp_path, tiny_model):
    data = titled_data()
    item_llm, model_config, train_config = configs(tiny_model, finetune_items_per_step=4)
    frozen, _ = item_embeddings(data.items, item_llm, tmp_path / "cache")
    assert_resume_after_crash_is_identical(
        lambda out, **kwargs: train(
            data,
            frozen,
            model_config,
            train_config,
            out,
            progress=False,
            item_llm=item_llm,
            **kwargs,
        ),
        tmp_path,
    )
    last = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    assert any(k.startswith("items.tower.top.") for k in last)  # checkpoints keep the layers


def test_finetuning_needs_text_and_the_item_llm_config(tmp_path, tiny_model):
    data = titled_data()
    item_llm, model_config, train_config = configs(tiny_model)
    frozen = np.zeros((N_ITEMS, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="needs the item_llm config"):
        train(data, frozen, model_config, train_config, tmp_path / "a", progress=False)
    id_only = dataclasses.replace(model_config, item_repr="id")
    with pytest.raises(ValueError, match="item_repr text or text\\+id"):
        train(data, None, id_only, train_config, tmp_path / "b", item_llm=item_llm)
    too_deep = dataclasses.replace(model_config, finetune_layers=3)
    with pytest.raises(ValueError, match="finetune_layers=3, but .* has 2 layers"):
        train(data, frozen, too_deep, train_config, tmp_path / "c", item_llm=item_llm)
