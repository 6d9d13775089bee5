"""The windows an evaluation scores a token stream in (no torch: the CLI's tests check them).

Window `w` of text tokens T after the model's prefix P feeds `P + T[w.context_start :
w.targets_end - 1]` and scores `T[w.targets_start : w.targets_end]`, the last of them from the
input's last position. compress/perplexity.py explains the layout and why.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    context_start: int  # the first text token of the input (after the prefix)
    targets_start: int  # text tokens [targets_start, targets_end) are scored in this window
    targets_end: int

    def input_ids(self, prefix: list[int], ids: list[int]) -> list[int]:
        return prefix + ids[self.context_start:self.targets_end - 1]

    def logits_rows(self, prefix_len: int) -> slice:
        """The input positions whose logits predict the targets (position t predicts t + 1)."""
        first = prefix_len + self.targets_start - 1 - self.context_start
        return slice(first, first + self.targets_end - self.targets_start)


def plan_windows(text_len: int, prefix_len: int, window: int, stride: int | None) -> list[Window]:
    """Windows that score every text token once (the first only after a prefix)."""
    room = window - prefix_len  # text tokens an input holds besides the prefix
    if room < 1:
        raise ValueError(f"a window of {window} tokens leaves no room after the prefix")
    first_target = 0 if prefix_len else 1
    if text_len <= first_target:
        raise ValueError("need at least two tokens")
    stride = min(stride or room, room)
    windows, start, end = [], first_target, min(text_len, room + 1)
    while start < text_len:
        windows.append(Window(max(0, end - 1 - room), start, end))
        start, end = end, min(text_len, end + stride)
    return windows
