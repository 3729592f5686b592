"""HTML to something a model reads well: Markdown, or plain text.

markdownify (over BeautifulSoup with the stdlib parser) rather than trafilatura: it is pure
Python with two small dependencies, which matters for a scale-to-zero function's cold
start, and it converts faithfully instead of guessing which part of the page is the
article. We do the little boilerplate removal that pays off (scripts, styles, navigation,
forms) and prefer the page's ``<main>`` or ``<article>`` when it has one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urljoin

from bs4 import BeautifulSoup, Tag
from markdownify import MarkdownConverter

_NOISE = ("script", "style", "noscript", "template", "svg", "canvas", "iframe", "form")
_CHROME = ("nav", "header", "footer", "aside")
_BLANK_RUNS = re.compile(r"\n{3,}")
_SPACE_RUNS = re.compile(r"[ \t]+\n")


@dataclass(frozen=True, slots=True)
class Readable:
    title: str | None
    content: str


def html_to_readable(html: str | bytes, *, markdown: bool, base_url: str = "") -> Readable:
    """The page's title and its main content as Markdown (``markdown=True``) or text.

    Links are made absolute against ``base_url`` so the model can follow them.
    """
    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup.find_all(_NOISE):
        tag.decompose()
    if base_url:
        _absolute_links(soup, base_url)
    root = _main_part(soup)
    for tag in root.find_all(_CHROME):
        tag.decompose()
    if markdown:
        # No backslash escapes: a model reads "google_search" better than "google\\_search".
        text = MarkdownConverter(
            heading_style="ATX", bullets="-", escape_underscores=False, escape_asterisks=False
        ).convert_soup(root)
    else:
        text = root.get_text("\n", strip=True)
    return Readable(title=title or None, content=_tidy(text))


def _absolute_links(soup: BeautifulSoup, base_url: str) -> None:
    for tag, attribute in (("a", "href"), ("img", "src")):
        for element in soup.find_all(tag):
            value = element.get(attribute)
            if isinstance(value, str) and value:
                element[attribute] = urljoin(base_url, value)


def _main_part(soup: BeautifulSoup) -> BeautifulSoup | Tag:
    for name in ("main", "article"):
        found = soup.find(name)
        if isinstance(found, Tag) and found.get_text(strip=True):
            return found
    body = soup.body
    return body if isinstance(body, Tag) else soup


def _tidy(text: str) -> str:
    return _BLANK_RUNS.sub("\n\n", _SPACE_RUNS.sub("\n", text)).strip()
