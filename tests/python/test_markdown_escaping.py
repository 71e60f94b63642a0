"""Hostile keys in `--format markdown` stay text when a real CommonMark
renderer (markdown-it-py, raw HTML allowed: the unsafe setting some viewers
use) turns the report into HTML: no tag, link or broken code span comes out
of a tensor's name, and the name is shown exactly as it is in the JSON."""
import html as html_lib
import re

import numpy as np
from markdown_it import MarkdownIt

import layouts
from conftest import run_reprodctl

HOSTILE_KEYS = [
    "<script>alert(1)</script>",
    "a``b<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "pipe|and&amp;",
]


def test_hostile_keys_render_as_text(tmp_path):
    rng = np.random.default_rng(5)
    ref = {k: rng.standard_normal(4) for k in HOSTILE_KEYS}
    cand = {k: v + 1e-2 for k, v in ref.items()}  # every pair fails
    rp, cp = tmp_path / "forward_torch.npy", tmp_path / "forward_paddle.npy"
    layouts.save_reprod_log(rp, ref)
    layouts.save_reprod_log(cp, cand)

    md = run_reprodctl("compare", rp, cp, "--format", "markdown")
    js = run_reprodctl("compare", rp, cp, "--format", "json")
    assert md.code == 1 and js.code == 1, (md, js)
    assert {t["key"] for t in js.json()["tensors"]} == set(HOSTILE_KEYS)

    page = MarkdownIt("commonmark", {"html": True}).enable("table").render(md.stdout)
    assert "<script" not in page and "<img" not in page, page
    assert 'href="' not in page, page
    # Every key appears verbatim as the text of a code element.
    codes = {html_lib.unescape(c) for c in re.findall(r"<code>(.*?)</code>", page)}
    for key in HOSTILE_KEYS:
        assert key in codes, (key, sorted(codes))
