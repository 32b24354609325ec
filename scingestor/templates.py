"""The ``{keyword}`` template language of configuration values and generator commands.

Configuration values (``ingestor_var_dir: "{homepath}/var/{beamtimeid}"``)
and generator commands (``nxsfileinfo metadata -o {metapath}/{scanname}…``)
name values to fill in braces, as ``str.format`` does.  The original filled
them with ``str.format`` itself, so a typo (``{scnname}``) crashed the
whole scan; here an unknown keyword is left as written (or named in a
:class:`~scingestor.errors.ConfigError`), ``{{``/``}}`` are literal braces
and documented aliases (``{doiprefix}``) are served by their target.

Some keywords are filled when the configuration is loaded (``{homepath}``,
``{hostname}``), the others later, per beamtime or scan.  This module is
the language alone: which variable allows which keywords is declared with
the variable in :mod:`scingestor.config`, and the values of the per-scan
keywords come from :mod:`scingestor.metadata.keywords`.
"""

from __future__ import annotations

import os
import re
import socket
import string
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

from .errors import ConfigError

__all__ = [
    "KEYWORD_ALIASES",
    "LOAD_KEYWORDS",
    "TEMPLATE_KEYWORDS",
    "Keywords",
    "escape_braces",
    "expand",
    "fill_at_load",
    "homepath",
    "hostname",
    "load_values",
    "template_keywords",
    "unknown_keywords",
]


def homepath() -> str:
    """The user's home directory: the value of ``{homepath}``."""
    return os.path.expanduser("~")


def hostname() -> str:
    """This host's name: the value of ``{hostname}`` (as the original, gethostname)."""
    return socket.gethostname()


#: Names the documentation uses for keywords that the code calls otherwise.
#: ``{doiprefix}`` crashed the original (KeyError); we accept it as ``{pidprefix}``.
KEYWORD_ALIASES: Dict[str, str] = {"doiprefix": "pidprefix"}

#: Keywords of generator commands and switches (behaviour.md §1.2, plus aliases).
TEMPLATE_KEYWORDS: FrozenSet[str] = frozenset(
    """
    scanname masterscanname entryname scanpath metapath relpath dbrelpath beamtimeid
    beamline pidprefix beamtimefile scanpostfix datablockpostfix attachmentpostfix
    ownergroup accessgroups hostname homepath ext plotext masterfile plotfile chmod
    hiddenattributes copymapfile groupmapfile signals axes frame maxonedsize measurement
    lastmeasurement idpattern
""".split()
) | frozenset(KEYWORD_ALIASES)

#: Keywords filled when the configuration is loaded (the others later, per beamtime/scan).
LOAD_KEYWORDS: FrozenSet[str] = frozenset({"homepath", "hostname"})


@dataclass(frozen=True)
class Keywords:
    """Which ``{keywords}`` a value may contain, and which of them are filled at load.

    Keywords not in ``at_load`` stay in the value (e.g. ``{beamtimeid}``) and
    are filled later by whoever uses the value.
    """

    allowed: FrozenSet[str]
    at_load: FrozenSet[str] = frozenset()

    @property
    def expanded_later(self) -> bool:
        """True when the value is expanded again after loading (so keep ``{{``)."""
        return bool(self.allowed - self.at_load)


_FORMATTER = string.Formatter()
_BASE_NAME = re.compile(r"[^.\[]*")


def escape_braces(text: str) -> str:
    """Double the braces of ``text`` so that :func:`expand` gives it back literally."""
    return text.replace("{", "{{").replace("}", "}}")


def _field_text(field: str, spec: Optional[str], conversion: Optional[str]) -> str:
    """The ``{...}`` text of a replacement field, as written."""
    text = "{" + field
    if conversion:
        text += "!" + conversion
    if spec:
        text += ":" + spec
    return text + "}"


def _parse(template: str) -> List[Tuple[str, Optional[str], Optional[str], Optional[str]]]:
    try:
        return list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ConfigError(
            f"malformed template {template!r}: {exc} (write '{{{{' and '}}}}' for literal braces)"
        ) from None


def _expand(
    template: str, values: Mapping[str, object], keep_unknown: bool, keep_escapes: bool
) -> str:
    out: List[str] = []
    for literal, field, spec, conversion in _parse(template):
        out.append(escape_braces(literal) if keep_escapes else literal)
        if field is None:
            continue
        match = _BASE_NAME.match(field)
        base = match.group(0) if match else field
        name = base if base in values else KEYWORD_ALIASES.get(base, base)
        if name not in values:
            if keep_unknown:
                out.append(_field_text(field, spec, conversion))
                continue
            raise ConfigError(
                f"unknown keyword {{{base}}} in {template!r}; known: " + ", ".join(sorted(values))
            )
        try:
            value: Any = values[name]
            if field != base:
                value = _FORMATTER.get_field(name + field[len(base) :], (), values)[0]
            if conversion:
                value = _FORMATTER.convert_field(value, conversion)
            if spec:
                spec = _expand(spec, values, keep_unknown=False, keep_escapes=False)
            text = format(value, spec or "")
        except ConfigError:
            raise
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"cannot fill {_field_text(field, spec, conversion)} in {template!r}: {exc}"
            ) from None
        out.append(escape_braces(text) if keep_escapes else text)
    return "".join(out)


def expand(template: str, values: Mapping[str, object], *, keep_unknown: bool = True) -> str:
    """Fill ``{keyword}`` fields of ``template`` like ``str.format(**values)``.

    Unlike ``str.format`` (which the original used, crashing a whole scan on
    a typo) an unknown ``{key}`` is left as written when ``keep_unknown``;
    otherwise :class:`ConfigError` names it.  ``{{``/``}}`` are literal braces.
    Names of :data:`KEYWORD_ALIASES` (``{doiprefix}``) are served by their target.
    """
    return _expand(template, values, keep_unknown, keep_escapes=False)


def template_keywords(template: str) -> List[str]:
    """The keyword names used in ``template`` (in order, without duplicates)."""
    names: List[str] = []
    for _literal, field, spec, _conversion in _parse(template):
        if field is None:
            continue
        match = _BASE_NAME.match(field)
        base = match.group(0) if match else field
        if base not in names:
            names.append(base)
        if spec and "{" in spec:
            names.extend(name for name in template_keywords(spec) if name not in names)
    return names


def unknown_keywords(text: str, keywords: Keywords) -> List[str]:
    """The keywords of template *text* that *keywords* does not allow (aliases count).

    :class:`ConfigError` (without file or key: the caller knows them) when
    *text* is not a well-formed template.
    """
    return [
        name
        for name in template_keywords(text)
        if name not in keywords.allowed and KEYWORD_ALIASES.get(name) not in keywords.allowed
    ]


def load_values(keywords: Keywords) -> Dict[str, str]:
    """The values of the keywords *keywords* fills at load (``{homepath}``, ``{hostname}``)."""
    known = {"homepath": homepath, "hostname": hostname}
    return {name: known[name]() for name in keywords.at_load}


def fill_at_load(value: Any, keywords: Keywords) -> Any:
    """*value* (a template or a list of them) with the keywords known at load filled.

    The others are left as written.  When the value is expanded again later
    (it allows keywords not filled at load), literal braces stay doubled so
    that the second expansion gives them back.
    """
    if not keywords.at_load:
        return value
    values = load_values(keywords)
    later = keywords.expanded_later

    def fill(text: str) -> str:
        return _expand(text, values, keep_unknown=True, keep_escapes=later)

    return [fill(text) for text in value] if isinstance(value, list) else fill(value)
