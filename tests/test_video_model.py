"""The video CCNet (ccnet3d_* presets): a clip of one frame is the 2-D model, 2-D weights load unchanged,
outputs are the labelled frame's, the labelled frame alone does not decide them, attention maps."""
import numpy as np
import pytest

import jittor as jt

from models import MODEL_PRESETS, build_model
from utils.clips import clip_offsets, labelled_frame


def _models(seed=0):
    jt.set_global_seed(seed)
    two = build_model("ccnet_demo", 5)
    three = build_model("ccnet3d_demo", 5)
    three.load_state_dict(two.state_dict())
    # gamma from 0 makes every attention the identity: give it a value so that the attention matters
    for m in (two, three):
        m.head.cca.gamma.assign(jt.array([0.5], dtype="float32"))
    two.eval(), three.eval()
    return two, three


def test_presets_are_the_2d_networks_with_three_passes():
    for name in ("resnet50", "resnet101", "van_b2", "demo"):
        video, image = MODEL_PRESETS[f"ccnet3d_{name}"], MODEL_PRESETS[f"ccnet_{name}"]
        assert video["video"] and video["recurrence"] == 3
        assert {k: v for k, v in video.items() if k not in ("video", "recurrence")} == \
               {k: v for k, v in image.items() if k != "recurrence"}
    two, three = _models()
    assert list(two.state_dict()) == list(three.state_dict())


def test_one_frame_reproduces_the_2d_model():
    two, three = _models()
    three.recurrence = two.recurrence = 3
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 80)).astype(np.float32)
    want = two(jt.array(x)).numpy()
    np.testing.assert_allclose(three(jt.array(x[:, None])).numpy(), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(three(jt.array(x)).numpy(), want, rtol=1e-4, atol=1e-4)  # an image: one frame


def test_outputs_are_the_labelled_frames_and_use_the_others():
    _, three = _models()
    rng = np.random.default_rng(1)
    clip = rng.standard_normal((2, 5, 3, 64, 64)).astype(np.float32)
    out = three(jt.array(clip)).numpy()
    assert out.shape == (2, 5, 8, 8)
    assert three.predict(jt.array(clip)).shape == [2, 5, 64, 64]
    # the labelled frame is index 2 of 5; changing another frame changes its prediction (temporal lines)
    assert labelled_frame(5) == 2 and clip_offsets(5, 3) == [-6, -3, 0, 3, 6]
    other = clip.copy()
    other[:, 0] = rng.standard_normal(other[:, 0].shape)
    assert np.abs(three(jt.array(other)).numpy() - out).max() > 1e-4
    # ... with the 2-D attention in the head it would not (R passes inside the frame only)
    three.head.cca.gamma.assign(jt.zeros((1,)))
    np.testing.assert_allclose(three(jt.array(other)).numpy(), three(jt.array(clip)).numpy(), atol=1e-5)
    # each clip is predicted from its own frames only
    single = three(jt.array(clip[1:])).numpy()
    np.testing.assert_allclose(single, three(jt.array(clip)).numpy()[1:], rtol=1e-4, atol=1e-5)


def test_training_outputs_and_attention_maps():
    _, three = _models()
    three.train()
    clip = jt.array(np.random.default_rng(2).standard_normal((1, 3, 3, 64, 48)).astype(np.float32))
    main, aux = three(clip)
    assert main.shape == [1, 5, 8, 6] and aux.shape == [1, 5, 8, 6]
    three.eval()
    maps = three.attention_maps(clip)
    assert len(maps) == 3 and all(m.shape == [1, 3 + 8 + 6 - 2, 3, 8, 6] for m in maps)
    np.testing.assert_allclose(maps[0].numpy().sum(1), 1.0, rtol=1e-5)


def test_wrong_inputs_are_refused():
    two, three = _models()
    with pytest.raises(ValueError, match=r"need a video preset \(ccnet3d_\*\)"):
        two(jt.zeros((1, 3, 3, 32, 32)))
    with pytest.raises(ValueError, match=r"clips \[B, T, 3, H, W\]"):
        three(jt.zeros((1, 1, 3, 3, 32, 32)))
    with pytest.raises(ValueError, match="clip_length must be at least 1"):
        labelled_frame(0)
    with pytest.raises(ValueError, match="clip_stride must be at least 1"):
        clip_offsets(3, 0)


def test_flop_count_of_a_one_frame_clip_is_the_2d_models():
    """models.complexity counts the 3-D attention (T + H + W - 2 positions): at T = 1 the 2-D count."""
    from models.complexity import count_flops
    two, three = _models()
    two.recurrence = 3
    a, b = count_flops(two, (64, 80)), count_flops(three, (64, 80))
    assert a["by_kind"] == b["by_kind"] and a["by_kind"]["cca_map"] > 0
