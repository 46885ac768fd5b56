import pytest
import torch

from vitsearch.evaluators.models import ModelSpec, create_vitsearch_tiny, load_base_model
from vitsearch.spaces.errors import ModelError


def test_builtin_architecture(builtin_model):
    from timm.models.vision_transformer import VisionTransformer

    assert isinstance(builtin_model, VisionTransformer)
    assert builtin_model.patch_embed.num_patches == 49 and builtin_model.num_prefix_tokens == 1
    assert builtin_model.blocks[0].attn.num_heads == 6 and len(builtin_model.blocks) == 8
    assert not builtin_model.training


def test_builtin_weights_are_trained(builtin_model, mnist):
    from vitsearch.evaluators.accuracy import evaluate_accuracy

    assert evaluate_accuracy(builtin_model, mnist.val).top1 >= 0.97


def test_timm_unpretrained_and_checkpoint_roundtrip(tmp_path):
    model = load_base_model(ModelSpec("timm:deit_tiny_patch16_224", pretrained=False))
    path = tmp_path / "deit.pt"
    torch.save(model.state_dict(), path)
    again = load_base_model(ModelSpec("timm:deit_tiny_patch16_224", pretrained=False, checkpoint=str(path)))
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(model(x), again(x))


def test_builtin_checkpoint(tmp_path):
    model = create_vitsearch_tiny()
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": model.state_dict()}, path)  # a wrapped state dict is accepted too
    loaded = load_base_model(ModelSpec(checkpoint=str(path)))
    assert torch.equal(loaded.head.weight, model.head.weight)


@pytest.mark.parametrize("spec, match", [
    (ModelSpec("timm:not_a_model_at_all"), "unknown timm model"),
    (ModelSpec("timm:resnet18", pretrained=False), "not a supported ViT"),
    (ModelSpec("builtin:nope"), "unknown built-in model"),
    (ModelSpec("vit_small"), "not a model name"),
])
def test_bad_model_names(spec, match):
    with pytest.raises(ModelError, match=match):
        load_base_model(spec)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_base_model(ModelSpec(checkpoint=str(tmp_path / "missing.pt")))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="could not be loaded"):
        load_base_model(ModelSpec(checkpoint=str(tmp_path / "junk.pt")))
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ModelError, match="not a state dict"):
        load_base_model(ModelSpec(checkpoint=str(tmp_path / "list.pt")))
    other = load_base_model(ModelSpec("timm:deit_tiny_patch16_224", pretrained=False))
    torch.save(other.state_dict(), tmp_path / "deit.pt")
    with pytest.raises(ModelError, match="does not match the architecture"):
        load_base_model(ModelSpec(checkpoint=str(tmp_path / "deit.pt")))


def test_pretrained_offline_fails_with_one_clear_line(tmp_path):
    # The real timm/Hugging Face loading path, forced offline (huggingface_hub reads the
    # flag at import, hence a fresh process) so the test does not wait on retries.
    import os
    import subprocess
    import sys

    code = ("from vitsearch.evaluators.models import ModelSpec, load_base_model\n"
            "try:\n"
            "    load_base_model(ModelSpec('timm:deit_tiny_patch16_224', pretrained=True))\n"
            "except Exception as e:\n"
            "    print(type(e).__name__ + '|' + str(e))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path)
    kind, _, msg = out.stdout.strip().partition("|")
    assert kind == "ModelError"
    assert "checkpoint:" in msg and "\n" not in msg
