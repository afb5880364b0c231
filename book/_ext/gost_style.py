"""A pybtex formatting style close to ГОСТ Р 7.0.5–2008 (bibliographic references), numbered in order of
first citation.

One to three authors head the entry (``Фамилия И. О.``); four and more follow the title after a slash with
the first three and ``[и др.]`` / ``[et al.]`` (ГОСТ Р 7.0.5, 5.2.2). The dash separators of the standard
are replaced by full stops, which 7.0.5 allows (4.7), as in the author's plan::

    Dong X., Chen S., Pan S. J. Learning to Prune … // Advances in Neural Information Processing Systems 30.
    2017. arXiv: 1705.07565 [cs.NE].
    Integral Neural Networks / K. Solodskikh, A. Kurbanov, R. Aydarkhanov [et al.] // Proceedings of … CVPR.
    2023. P. 16113–16122.

An entry in Russian (Cyrillic title) gets the Russian abbreviations (``С.``, ``Т.``, ``№``, ``[и др.]``).
Labels are numbers and the order is the order in which sphinxcontrib-bibtex hands the cited entries over:
the order of first citation through the table of contents. Registered as the pybtex plugin ``gost``.
"""

from __future__ import annotations

import re

from pybtex.plugin import register_plugin
from pybtex.richtext import HRef, Text
from pybtex.style import FormattedEntry
from pybtex.style.formatting import BaseStyle

STYLE_NAME = "gost"
_MAX_LEADING_AUTHORS = 3  # ГОСТ Р 7.0.5, 5.2.2: up to three authors head the entry
_CYRILLIC = re.compile("[А-Яа-яЁё]")
_WORDS = {  # (English, Russian)
    "et_al": ("[et al.]", "[и др.]"),
    "pages": ("P.", "С."),
    "volume": ("Vol.", "Т."),
    "number": ("no.", "№"),
    "npages": ("p.", "с."),
}


def _plain(value: str) -> str:
    """A BibTeX field as plain text: braces and LaTeX dashes resolved (``{ImageNet}``, ``--``)."""
    return str(Text.from_latex(value)).strip()


def _initials(names: list[str]) -> str:
    """``["Sinno", "Jialin"]`` → ``S. J.``; hyphenated names keep the hyphen (``Jean-Paul`` → ``J.-P.``)."""
    parts = []
    for name in names:
        name = _plain(name)
        if not name:
            continue
        if name.endswith(".") and len(name) <= 3:  # already an initial
            parts.append(name)
            continue
        parts.append("-".join(piece[0] + "." for piece in name.split("-") if piece))
    return " ".join(parts)


def surname_first(person) -> str:
    """``Фамилия И. О.`` (the heading form of ГОСТ Р 7.0.5)."""
    last = " ".join(_plain(p) for p in person.prelast_names + person.last_names + person.lineage_names)
    initials = _initials(person.first_names + person.middle_names)
    return f"{last} {initials}".strip()


def initials_first(person) -> str:
    """``И. О. Фамилия`` (the form after the slash)."""
    last = " ".join(_plain(p) for p in person.prelast_names + person.last_names + person.lineage_names)
    initials = _initials(person.first_names + person.middle_names)
    return f"{initials} {last}".strip()


def _sentence(text: str) -> str:
    """Append a full stop unless the text already ends a sentence."""
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."


class GostStyle(BaseStyle):
    """Numbered references in the order of first citation, formatted after ГОСТ Р 7.0.5–2008."""

    default_name_style = "plain"
    default_label_style = "number"
    default_sorting_style = "none"

    def format_entry(self, label, entry, bib_data=None) -> FormattedEntry:
        return FormattedEntry(entry.key, self.format_text(entry), label)

    def format_text(self, entry) -> Text:
        """The reference as rich text (a URL becomes a link)."""
        fields = entry.fields
        title = _plain(fields.get("title", ""))
        if not title:
            raise ValueError(f"bibliography entry {entry.key!r} has no title: add `title = {{…}}` to references.bib")
        russian = bool(_CYRILLIC.search(title))
        word = {key: pair[1 if russian else 0] for key, pair in _WORDS.items()}
        people = list(entry.persons.get("author") or entry.persons.get("editor") or [])
        more = bool(people) and str(people[-1]).strip().lower() == "others"  # BibTeX `and others`
        if more:
            people = people[:-1]
        head, responsibility = "", ""
        if 0 < len(people) <= _MAX_LEADING_AUTHORS and not more:
            head = ", ".join(surname_first(p) for p in people) + " "
        elif people:
            shown = ", ".join(initials_first(p) for p in people[:_MAX_LEADING_AUTHORS])
            responsibility = f" / {shown} {word['et_al']}"
        pieces = [head + title + responsibility]
        venue = _plain(fields.get("journal", "") or fields.get("booktitle", ""))
        if venue:
            pieces[0] += f" // {venue}"
        elif entry.type == "techreport" and fields.get("institution"):
            pieces[0] += f" // {_plain(fields['institution'])}"
        elif entry.type in ("misc", "online") and fields.get("howpublished"):
            pieces[0] += f" // {_plain(fields['howpublished'])}"
        publisher = _plain(fields.get("publisher", ""))
        address = _plain(fields.get("address", ""))
        year = _plain(fields.get("year", ""))
        if publisher or address:  # «Город: Издательство, год»
            pieces.append(", ".join(part for part in (": ".join(p for p in (address, publisher) if p), year) if part))
        elif year:
            pieces.append(year)
        volume = ", ".join(part for part in (
            f"{word['volume']} {_plain(fields['volume'])}" if fields.get("volume") else "",
            f"{word['number']} {_plain(fields['number'])}" if fields.get("number") else "") if part)
        if volume:
            pieces.append(volume)
        if fields.get("pages"):
            pages = _plain(fields["pages"]).replace("-", "–").replace("––", "–")
            if "–" in pages or "," in pages:
                pieces.append(f"{word['pages']} {pages}")
            else:
                pieces.append(f"{pages} {word['npages']}" if entry.type == "book" else f"{word['pages']} {pages}")
        if fields.get("issn"):
            pieces.append(f"ISSN {_plain(fields['issn'])}")
        if fields.get("doi"):
            pieces.append(f"DOI: {_plain(fields['doi'])}")
        if fields.get("eprint"):
            prefix = _plain(fields.get("archiveprefix", "arXiv"))
            cls = _plain(fields.get("primaryclass", ""))
            pieces.append(f"{prefix}: {_plain(fields['eprint'])}" + (f" [{cls}]" if cls else ""))
        if fields.get("note"):
            pieces.append(_plain(fields["note"]))
        text = Text(" ".join(_sentence(piece) for piece in pieces if piece.strip()))
        url = fields.get("url", "")
        if url and not fields.get("doi"):
            text = Text(text, " URL: ", HRef(url, url), ".")
        return text


register_plugin("pybtex.style.formatting", STYLE_NAME, GostStyle)
