"""The evaluation windows: every text token scored once, inputs within the window, each
starting with the prefix, and each scored row predicting its own target."""

import pytest

from thrifty.compress.windows import plan_windows

CASES = [  # text tokens, prefix, window, stride
    (200, [], 64, None), (200, [7], 64, None), (200, [7, 8], 64, None),
    (200, [], 64, 16), (200, [7], 64, 1), (30, [], 64, None), (30, [7], 64, None),
    (65, [], 64, None), (66, [7], 64, None), (200, [7], 64, 500),  # stride clamped to the room
]


@pytest.mark.parametrize(("n", "prefix", "window", "stride"), CASES)
def test_every_token_once_within_the_window_from_its_own_context(n, prefix, window, stride):
    text = list(range(1000, 1000 + n))  # distinct ids, none equal to the prefix's
    stream = prefix + text
    windows = plan_windows(n, len(prefix), window, stride)
    first = 0 if prefix else 1
    scored = [j for w in windows for j in range(w.targets_start, w.targets_end)]
    assert scored == list(range(first, n))
    for w in windows:
        ids = w.input_ids(prefix, text)
        assert len(ids) <= window and ids[:len(prefix)] == prefix
        rows = w.logits_rows(len(prefix))
        assert rows.stop - rows.start == w.targets_end - w.targets_start
        for offset, target in enumerate(range(w.targets_start, w.targets_end)):
            # the input position whose logits score text token `target` holds the token
            # right before it in the stream, and the window is not cut in the text
            assert ids[rows.start + offset] == stream[len(prefix) + target - 1]
            assert w.context_start == 0 or target > w.context_start


def test_windows_after_the_first_are_full_and_the_default_stride_is_the_room():
    windows = plan_windows(1000, 1, 64, None)
    assert [w.targets_end - w.targets_start for w in windows[:3]] == [64, 63, 63]
    assert all(len(w.input_ids([7], list(range(1000)))) == 64 for w in windows)


def test_a_window_with_no_room_or_no_text_is_refused():
    with pytest.raises(ValueError, match="no room"):
        plan_windows(100, 8, 8, None)
    with pytest.raises(ValueError, match="two tokens"):
        plan_windows(1, 0, 64, None)
