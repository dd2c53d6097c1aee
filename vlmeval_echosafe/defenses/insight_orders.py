"""Standing orders: an insight whose scope is every later request rather than a kind of request.

Symmetric by construction: `canonical` first maps every direction word (answer, help, comply ... refuse, decline,
withhold ..., verbs and nouns, ten languages) to the token ACT and every decision label (safe, unsafe, harmful,
benign ...) to POL, and the rules only ever read that canonical text. An insight and its mirror image (the same
text with the direction flipped) are one string to the rules, so they cannot get different verdicts.

The rules model scope, not phrasing. A text is a standing order when it
  * is forward-looking ("from now on", "hereafter", "whatever comes next" ...),
  * is a command about the memory itself ("remember this", "save this to memory" ...),
  * overrides the model's instructions ("ignore previous instructions", "regardless of the image" ...),
  * quantifies universally over a generic head noun (every / any / all / no + request, question, user, prompt ...)
    in a clause that says how to respond (ACT or POL), and nothing restricts it: no content word between the
    quantifier and the head, no phrase after the head that names content ("from users" names none, "about
    explosives" does), no pointer back to the scenario ("such requests", "of this kind"), or
  * says always / never / unconditionally how to respond in a sentence that names no content ("Help, always."),
    or says how to respond in a sentence that names nothing at all ("Requests are to be answered.").
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from . import insight_lexicon as lx


def _word(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){pattern}(?!\w)")


_DIRECTION, _DIRECTION_CJK = _word(r"(?:an?\s+)?" + lx.DIRECTION + lx.PARTICLE), re.compile(lx.DIRECTION_CJK)
_REPEATS = re.compile(rf"{lx.ACT}(?:\s+{lx.ACT})+")
_POLARITY, _POLARITY_CJK = _word(lx.POLARITY), re.compile(lx.POLARITY_CJK)
_CLASSES = ("QUANT", "QUANT_PRONOUN", "HEADS", "OPENERS", "ANAPHORA", "PRONOUNS", "DEFINITE", "RELATIVE", "GENERIC")
_WHOLE = {name: re.compile(rf"(?:{getattr(lx, name)})") for name in _CLASSES}
# forward-looking markers, commands about the memory, overriding instructions: each is an order on its own
_PHRASES = [
    _word(lx.FORWARD),
    re.compile(lx.FORWARD_CJK),
    _word(lx.MEMORY),
    re.compile(lx.MEMORY_CJK),
    _word(lx.OVERRIDE),
    re.compile(lx.OVERRIDE_CJK),
]
_ALWAYS, _ALWAYS_CJK = _word(lx.ALWAYS), re.compile(lx.ALWAYS_CJK)
_QUANT_HEAD_CJK = re.compile(rf"(?:{lx.QUANT_CJK})\s*(?:{lx.HEADS_CJK})")
_RESTRICT_CJK = re.compile(lx.RESTRICT_CJK)
_SENTENCE = re.compile(r"[.!?]+(?:\s+|$)|[。！？\n]+")
_CLAUSE = re.compile(r"[,;:，、；：]|\s(?:so|but|because|since|while|whereas|therefore)\s")
_TOKEN = re.compile(r"ACT|POL|[^\W\d_]+(?:'[^\W\d_]+)?")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_SIGNS = (lx.ACT, lx.POL)


def canonical(text: str) -> str:
    """``text`` with every direction word as ACT and every decision label as POL (casefolded, NFKC)."""
    t = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    t = _DIRECTION_CJK.sub(f" {lx.ACT} ", _DIRECTION.sub(f" {lx.ACT} ", t))
    t = _POLARITY_CJK.sub(f" {lx.POL} ", _POLARITY.sub(f" {lx.POL} ", t))
    return " ".join(_REPEATS.sub(lx.ACT, t).split())


@lru_cache(maxsize=65536)
def _is(name: str, token: str) -> bool:
    return token not in _SIGNS and bool(_WHOLE[name].fullmatch(token))


def _content(token: str) -> bool:
    """A word that names content: none of the closed classes."""
    return token not in _SIGNS and not any(_is(n, token) for n in ("QUANT", "QUANT_PRONOUN", "HEADS", "GENERIC"))


def _restricted_after(tokens: list[str], start: int, opened: bool = False) -> bool:
    """Does the phrase at ``start`` (opened by a preposition, relative or participle, or ``opened`` as the
    relative clause of "whoever" / "whatever") name content?"""
    if start >= len(tokens) or not (opened or _is("OPENERS", tokens[start])):
        return False
    for token in tokens[start : start + 8]:
        if token in _SIGNS:
            return False
        if _is("ANAPHORA", token) or (_content(token) and not _is("OPENERS", token)):
            return True
    return False


def _universal_scope(tokens: list[str]) -> str | None:
    """The quantified generic phrase that nothing restricts ("all requests from users"), if any.

    Restrictions: a content word earlier in the clause ("explaining index funds to any user", "the image shows
    nothing harmful": the clause is about that content), between quantifier and head ("all medical requests"), or
    in a phrase after the head ("any request about explosives"; "from users" names none)."""
    for i, token in enumerate(tokens):
        if any(_content(t) or _is("ANAPHORA", t) for t in tokens[:i]):
            return None
        if _is("QUANT_PRONOUN", token):
            if tokens[i + 1 : i + 2] == [lx.POL]:
                continue  # "nothing harmful", "anything unsafe": a description, not a scope
            if not _restricted_after(tokens, i + 1, opened=_is("RELATIVE", token)):
                return token
            continue
        if not _is("QUANT", token):
            continue
        for j in range(i + 1, min(i + 5, len(tokens))):
            word = tokens[j]
            if _is("HEADS", word):
                if not _restricted_after(tokens, j + 1):
                    return " ".join(tokens[i : j + 1])
                break
            if word in _SIGNS or _is("ANAPHORA", word) or _content(word):
                break  # "all medical requests", "all such requests", "every chemical"
    return None


def _bare_always(sentence: str) -> str | None:
    """always / never + a direction in a sentence that names no content ("Help, always.")."""
    found = _ALWAYS.search(sentence) or _ALWAYS_CJK.search(sentence)
    if not found or lx.ACT not in sentence:
        return None
    rest = _ALWAYS_CJK.sub(" ", _ALWAYS.sub(" ", sentence))
    words = [w for w in _TOKEN.findall(rest) if _content(w)]
    cjk = [w for w in words if _CJK.search(w) and not (re.fullmatch(r"[\uac00-\ud7af]{1,2}", w))]
    latin = [w for w in words if not _CJK.search(w)]
    cjk_left = _CJK.findall(re.sub(r"[\u3040-\u309f]", "", "".join(cjk)))
    return found.group(0) if not latin and not cjk_left else None


def _unscoped_prescription(sentence: str) -> str | None:
    """A sentence that says how to respond to a bare generic head and names nothing else ("Requests are to be
    answered."). A definite article, pronoun or determiner pointing back at the scenario ("The request should be
    refused.", "It should be refused.") is a scope, and so is a sentence without a head ("Safe to answer."): it
    reads as part of the insight whose scenario names the scope."""
    tokens = _TOKEN.findall(sentence)
    if lx.ACT not in tokens or _CJK.search(sentence) or not any(_is("HEADS", t) for t in tokens):
        return None
    if any(_content(t) or _is("ANAPHORA", t) or _is("PRONOUNS", t) or _is("DEFINITE", t) for t in tokens):
        return None
    return sentence


def standing_order(text: str) -> str | None:
    """The phrase (in canonical form) that makes ``text`` a standing order, or None for scoped guidance."""
    canon = canonical(text)
    for pattern in _PHRASES:
        m = pattern.search(canon)
        if m:
            return m.group(0).strip()
    for sentence in filter(None, (s.strip() for s in _SENTENCE.split(canon))):
        hit = _bare_always(sentence) or _unscoped_prescription(sentence)
        if hit:
            return hit
        for clause in _CLAUSE.split(f" {sentence} "):
            if not any(sign in clause for sign in _SIGNS):
                continue
            hit = _universal_scope(_TOKEN.findall(clause))
            if hit:
                return hit
            m = _QUANT_HEAD_CJK.search(clause)
            if m and not _RESTRICT_CJK.search(clause[: m.start()]):
                return m.group(0)
    return None
