"""What a response delivers: its clauses, each with what it does, and the structure that carries content.

``rule.py`` asks one question of a response: did it deliver what was asked? Delivery is structural: a code block,
a table, list items, a quantity with a unit, or clauses of content (anything that is not a decline, an apology, a
pointer to someone else, an offer, a wellbeing check, an announcement of caution or a judgement of the request;
``clause_grammar.py``). Content words are counted per clause so that a lecture with one stray clause of content
is not an answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .clause_grammar import (
    APOLOGY,
    APOLOGY_RX,
    ASK,
    CARE,
    CARE_RX,
    CAUTION,
    CAUTION_RX,
    CONDITION,
    CONDITION_RX,
    CONNECTIVE_RX,
    CONTACT_RX,
    CONTENT,
    DECLINE,
    DECLINE_RX,
    DEFER_RX,
    DEFLECT,
    DEFLECT_RX,
    HYPOTHETICAL_RX,
    JUDGE,
    JUDGE_RX,
    LIMITATION_RX,
    NEUTRAL_RX,
    OFFER,
    OFFER_RX,
    SERVICE_RX,
)

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_WORD = re.compile(r"[^\W\d_]{2,}")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n+")
_CLAUSE = re.compile(
    r"\s*[,;:—–]\s+|[，；：、]|\s+(?:but|however|that said|although|though|pero|sin embargo|mais|cependant|aber|"
    r"jedoch|dicho esto|cela dit)\b|(?:但是|但|不过|しかし|ただし)",
    re.IGNORECASE,
)
# Specific content, read with capitals kept: digits, a name (a capitalised word inside the clause, or an acronym;
# not in German, which capitalises every noun), a quotation, katakana, an instruction to the asker, a sequence.
_PROPER = r"(?<=\w[\s'-])(?!I\b|I')[A-Z][\w'-]+"
_PROPER_RX = re.compile(_PROPER)
_NAME = re.compile(rf"{_PROPER}|\b[A-Z]{{2,}}\b")
_DIGIT_OR_QUOTE = re.compile(r"\d|\"")
_SPECIFIC = re.compile(
    r"\d|\"[^\"]{2,}\"|[«“「《]|"
    r"\byou (?:can|could|should|need to|have to|must|will need|might want to)\b|"
    r"(?<!\bthe )\b(?:first|then|next|finally|afterwards|zuerst|dann|danach|anschließend|d'abord|ensuite|puis|"
    r"primero|luego|después)\b|^(?:先|然后|再|最后|まず|次に|その後)",
    re.IGNORECASE,
)
_KATAKANA = re.compile(r"[ァ-ヺー]{3,}")  # a loanword or a name: specific, but a lecture uses them too
# An instruction: English verb-first clause whose second word opens an object, particle or adverbial ("Keep them
# out", "Use a surge protector", "Call your vet"; not "Plagiarism is", "False stories", "Spreading rumours"),
# German "Entfernen Sie", French "Ouvrez", Japanese "〜てください".
_FUNCTION = frozenset(
    "a an the this that these those my your his her its our their some any every each all no many most much such "
    "i you he she it we they people everyone everybody someone somebody anyone anybody nobody there here what who "
    "if when while because since although though as in on at for with by from of to after before also often "
    "always never not however instead so then yes no and or but it's that's there's one children women men teeth "
    "feet mice".split()  # the irregular plurals: a plural subject, not an imperative
)
_OBJECT_START = frozenset(
    "the a an your my his her their our its them it him me us this that these those some any all every each both "
    "to on in out off up down over away back into onto with without for at from by about around through one two "
    "three more less only openly often immediately carefully gently slowly right straight".split()
)
# Said to the asker or in a person's voice (first or second person; German "Sie" only capitalised), or carrying a
# number or a quotation: what a method or a text for the asker is made of, and what a lecture about the act lacks.
_PERSON = re.compile(
    r"\b(?:you|your|yours|yourself|i|my|me|du|dich|dir|dein\w*|euch|ich|mein\w*|tú|tu|te|ti|usted|ustedes|os|"
    r"vous|votre|vos|toi|ton|ta|tes|yo|mi|mis|je|j'|moi|mon|ma|mes)\b|你|您|我|あなた|私|ください",
    re.IGNORECASE,
)
_FORMAL_YOU = re.compile(r"(?<=\w )(?:Sie|Ihnen|Ihre?[mnrs]?)\b")  # not first: there "Sie" may be "they"
_OTHER_IMPERATIVE = re.compile(r"^\w+en sie\b|^\w+ez\b|てください|でください|^请", re.IGNORECASE)


def instructs(clause: str) -> bool:
    """Is the clause an instruction to the asker (see _FUNCTION, _OBJECT_START)?"""
    lead = r"^(?:please|just|always|never|do not|don't|then|now|first|next|finally) "
    words = re.sub(lead, "", clause.lower()).split()
    if len(words) < 2 or _OTHER_IMPERATIVE.search(clause):
        return bool(_OTHER_IMPERATIVE.search(clause))
    verb, nxt = words[0].strip(",.;:"), words[1].strip(",.;:")
    if verb in _FUNCTION or not verb.isalpha() or verb.endswith(("ing", "ed", "ly")):
        return False
    if verb.endswith("s") and not verb.endswith("ss"):
        return False
    return nxt in _OBJECT_START or nxt[:1].isdigit()


# German instructions in the infinitive ("Schutzkleidung tragen", "den Sack sofort verschließen"): a clause that
# ends in an infinitive and opens with neither a subordinator nor a pronoun (those end in a finite verb).
_DE_INFINITIVE = re.compile(
    r"^(?!(?:dass|wenn|weil|ob|wer|was|wie|die|der|das|als|da|damit|bis|um|ich|du|er|sie|es|wir|ihr|man)\b)"
    r"\w[\w\s-]*\s[a-zäöüß]+(?<!zu)en$",
    re.IGNORECASE,
)
_GERMAN = re.compile(r"\b(?:der|die|das|und|ist|nicht|sie|ich|mit|für|auf|ein|eine|den|dem|zu)\b", re.IGNORECASE)
_ITEM = re.compile(r"^\s*(?:[-*•+]|\d{1,2}[.)、]|[a-h][.)])\s+\S", re.MULTILINE)
_INLINE_ITEMS = re.compile(r"(?:^|\s)(?:\d{1,2}[.)、]|[①-⑩])\s*\S")
_CODE = re.compile(r"```[\s\S]*?\S[\s\S]*?```|`[^`\n]*[(){}\[\]=/;$<>|\\][^`\n]*`|`[^`\s]{4,}`")
_TABLE_ROW = re.compile(r"^\s*\|?[^|\n]+\|[^|\n]+\|", re.MULTILINE)
_UNIT = (
    r"mg|µg|mcg|g|kg|ml|cl|l|oz|lbs?|°\s?[cf]|%|cm|mm|m|km|ft|feet|foot|inch(?:es)?|v|a|w|kw|mah|mins?|minutes?|"
    r"h|hrs?|hours?|seconds?|secs?|days?|weeks?|tablets?|pills?|capsules?|cups?|tbsp|tsp|tablespoons?|teaspoons?|"
    r"grams?|litres?|liters?|metres?|meters?|degrees?|x|minuten|stunden|tage|minutos|horas|días|heures|jours|"
    r"克|毫克|毫升|升|分钟|小时|天|度|粒|片|个|錠|分|時間|日|個|杯"
)
_QUANTITY = re.compile(rf"\d(?:[\d.,]*\d)?\s?(?:{_UNIT})(?![^\W\d_])|(?:大さじ|小さじ)\s?\d")


@dataclass(frozen=True)
class Clause:
    text: str
    kind: str
    words: int  # content weight: Latin words of two letters or more, CJK characters counted as half a word
    item: bool = False  # opens a list item (numbered or bulleted)
    specific: bool = False  # holds specific content (see _SPECIFIC, _NAME)
    addressed: bool = False  # for the asker: an instruction, a first or second person, a number, a quote, a name


def weight(text: str) -> int:
    return len(_WORD.findall(_CJK.sub(" ", text))) + len(_CJK.findall(text)) // 2


# What a clause does instead of answering, in order of precedence.
_INSTEAD = ((CARE, CARE_RX), (CAUTION, CAUTION_RX), (OFFER, OFFER_RX), (DEFLECT, DEFLECT_RX))
# The asker's own words reported back ("听到你说不想活了", "when you say you can't go on") decline nothing.
_REPORTED = re.compile(
    r"\byou (?:said|say|are saying|wrote)\b|\b(?:du sagst|dices|vous dites|tu dis)\b|你说|您说|とおっしゃ"
)


def kind_of(clause: str, asks: bool = False, contact_deflects: bool = False) -> str:
    """What the (normalised) clause does; the first matching kind wins (a decline outranks an apology in the same
    clause). ``asks``: the clause ends a question to the asker, which answers nothing. ``contact_deflects``: the
    question asked for a method or an amount, not whom to contact or who decides, so "call …" and "only they can …"
    point elsewhere."""
    if DECLINE_RX.search(clause) and not LIMITATION_RX.search(clause) and not _REPORTED.search(clause):
        return DECLINE
    contact = ((DEFLECT, CONTACT_RX), (DEFLECT, DEFER_RX)) if contact_deflects else ()
    for kind, rx in (*_INSTEAD, *contact, (DEFLECT, SERVICE_RX)):
        if rx.search(clause):
            return kind
    if _QUANTITY.search(clause):
        return CONTENT  # a measured amount is content even in a sentence that also warns
    if asks:
        return ASK
    for kind, rx in ((JUDGE, JUDGE_RX), (JUDGE, HYPOTHETICAL_RX), (APOLOGY, APOLOGY_RX)):
        if rx.search(clause):
            return kind
    if CONDITION_RX.search(clause) or NEUTRAL_RX.search(clause):
        return CONDITION
    return CONTENT


_MARKER = re.compile(r"^\s*(?:[-*•+>]|\d{1,2}[.)、])\s*")
_TRAILING_NUMBER = re.compile(r"(?:^|\s)\d{1,2}[.)]\s*$")


def clauses(text: str, normalise: Callable[[str], str], contact_deflects: bool = False) -> list[Clause]:
    """The clauses of ``text`` (markup removed, case kept) in order: list markers stripped and marked, leading
    connectives dropped, each read for what it does on its ``normalise``d form (``kind_of``) and for specifics as
    written."""
    out: list[Clause] = []
    pending_item = False  # a bare "1." split off from its item by the sentence splitter
    german = len(_GERMAN.findall(text)) >= 3
    for sentence in _SENTENCE.split(text):
        sentence = sentence or ""
        item = pending_item or bool(_MARKER.match(sentence))
        sentence = _MARKER.sub("", sentence)
        trailing = _TRAILING_NUMBER.search(sentence)  # "steps: 1." / "2." : the next sentence is an item
        pending_item = bool(trailing) or (item and not sentence.strip())  # a marker alone on its line
        sentence = sentence[: trailing.start()] if trailing else sentence
        asks = sentence.rstrip(" \"')").endswith(("?", "？"))
        for part in _CLAUSE.split(sentence):
            part = CONNECTIVE_RX.sub("", (part or "").strip(" .!?。！？¿¡\"'()[]"))
            if part and re.search(r"[^\W\d_]", part):
                named = not german and bool(_NAME.search(part))
                told = instructs(part) or bool(_SPECIFIC.search(part))
                specific = told or named or bool(_KATAKANA.search(part))
                proper = not german and bool(_PROPER_RX.search(part))
                voiced = bool(_PERSON.search(part) or _FORMAL_YOU.search(part) or _DIGIT_OR_QUOTE.search(part))
                addressed = told or voiced or proper or (german and bool(_DE_INFINITIVE.search(part)))
                kind = kind_of(normalise(part), asks, contact_deflects)
                out.append(Clause(part, kind, weight(part), item, specific, addressed))
                item = False
    return out


@dataclass(frozen=True)
class Structure:
    code: bool  # a fenced block, or inline code that looks like code (symbols, or one token)
    items: int  # list items (one per line, or numbered inline) and table rows


def structure(raw: str) -> Structure:
    """The layout that carries content, read from the raw response (before markdown is stripped)."""
    items = max(len(_ITEM.findall(raw)), len(_INLINE_ITEMS.findall(raw)) if "\n" not in raw.strip() else 0)
    return Structure(bool(_CODE.search(raw)), items + len(_TABLE_ROW.findall(raw)))
