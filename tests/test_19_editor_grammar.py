"""The TextMate grammar (editors/vscode/syntaxes/nnspec.tmLanguage.json) against the Lark grammar:
every keyword of the language is highlighted as one, and every example spec tokenises with no
character left unclaimed. The tokeniser below follows TextMate's rule for a single-line grammar:
at each position the pattern whose match starts earliest wins, ties going to the pattern listed
first."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GRAMMAR = ROOT / "editors" / "vscode" / "syntaxes" / "nnspec.tmLanguage.json"


def _patterns(grammar: dict) -> list[tuple[re.Pattern, str | None, dict]]:
    repo = grammar["repository"]

    def flat(items):
        out = []
        for p in items:
            if "include" in p:
                out += flat([repo[p["include"].lstrip("#")]])
            elif "patterns" in p:
                out += flat(p["patterns"])
            else:
                assert "begin" not in p, "the test tokeniser handles single-line rules only"
                out.append((re.compile(p["match"]), p.get("name"), p.get("captures", {})))
        return out
    return flat(grammar["patterns"])


PATTERNS = _patterns(json.loads(GRAMMAR.read_text()))


def tokenise(line: str) -> list[tuple[str, str]]:
    """(text, scope) for every token; raises on a character that no rule claims."""
    tokens, pos = [], 0
    while pos < len(line):
        best = None
        for k, (rx, name, captures) in enumerate(PATTERNS):
            m = rx.search(line, pos)
            if m and m.end() > m.start() and (best is None or m.start() < best[0].start()):
                best = (m, name, captures)
        gap = line[pos: best[0].start()] if best else line[pos:]
        if gap.strip():
            raise AssertionError(f"unknown token {gap.strip()!r} in: {line}")
        if best is None:
            break
        m, name, captures = best
        if captures:
            for group, cap in sorted(captures.items(), key=lambda kv: int(kv[0])):
                if m.group(int(group)):
                    tokens.append((m.group(int(group)), cap["name"]))
        else:
            tokens.append((m.group(0), name))
        pos = m.end()
    return tokens


def lark_keywords() -> set[str]:
    text = (ROOT / "grammar" / "nnspec.lark").read_text()
    text = re.sub(r"//[^\n]*", "", text)
    words = set(re.findall(r'"([a-z][a-z-]*)"', text))
    assert {"model", "robustness", "within", "always", "least-likely", "label"} <= words
    return words


@pytest.mark.parametrize("word", sorted(lark_keywords()))
def test_every_lark_keyword_is_highlighted_as_a_keyword(word):
    tokens = dict((t, s) for t, s in tokenise(f"x {word} (1)"))
    scope = tokens.get(word)
    assert scope is not None and scope.split(".")[0] in ("keyword", "constant"), (word, scope)


def test_names_strings_numbers_and_comments_get_their_scopes():
    toks = tokenise('property robust: robustness within linf(eps) using mads(budget=2e3)  # note "x"')
    assert toks[:3] == [("property", "keyword.declaration.property.nnspec"),
                        ("robust", "entity.name.function.property.nnspec"), (":", "punctuation.separator.colon.nnspec")]
    scopes = dict(toks)
    assert scopes["linf"] == "support.function.region.nnspec" and scopes["eps"] == "variable.other.nnspec"
    assert scopes["2e3"] == "constant.numeric.nnspec" and scopes["mads"] == "entity.name.function.call.nnspec"
    assert toks[-1] == ('# note "x"', "comment.line.number-sign.nnspec")
    assert dict(tokenise('model "a#b.onnx"'))['"a#b.onnx"'] == "string.quoted.double.nnspec"
    assert dict(tokenise("robustness against least-likely"))["least-likely"].startswith("constant.language")
    assert dict(tokenise("y[3] - least_likely"))["least_likely"] == "variable.other.nnspec"


def _examples() -> list[tuple[str, str]]:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", (ROOT / "docs" / "language.md").read_text(), flags=re.S)
    out = [(f"docs/language.md block {k}", b) for k, b in enumerate(blocks)]
    for folder in ("specs", "tests/golden"):
        out += [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / folder).glob("*.nnspec"))]
    assert len(out) > 10
    return out


@pytest.mark.parametrize("where,text", _examples(), ids=lambda v: v if "/" in str(v) else None)
def test_every_example_tokenises_without_an_unknown_token(where, text):
    for line in text.splitlines():
        tokenise(line)


def test_an_unknown_character_is_caught():
    with pytest.raises(AssertionError, match="unknown token"):
        tokenise("property p: robustness within linf(0.1) $")


def test_the_vscode_extension_points_at_the_grammar():
    manifest = json.loads((ROOT / "editors" / "vscode" / "package.json").read_text())
    grammar = manifest["contributes"]["grammars"][0]
    assert (ROOT / "editors" / "vscode" / grammar["path"]).resolve() == GRAMMAR.resolve()
    assert grammar["scopeName"] == json.loads(GRAMMAR.read_text())["scopeName"] == "source.nnspec"
    assert manifest["contributes"]["languages"][0]["extensions"] == [".nnspec"]
