"""Numbers and dates as people type them, for the intent parser: "two thousand", "1.5k", "$2 grand",
"since March 2011", "the last 6 months", "YTD". Pure text-to-value functions, no I/O, no clock."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# ---------------------------------------------------------------- numbers

_UNITS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_NUMBER_WORD = "|".join([*_UNITS, *_TENS, "hundred", "dozen", *_SCALES])
_NUMBER_RUN = re.compile(
    rf"\b(?:(?:a|an)\s+)?(?:{_NUMBER_WORD})(?:(?:\s+and\s+|[\s-]+)(?:{_NUMBER_WORD}))*\b"
)
# A lone "one" is a number only before a unit ("one share", "one Apple share"), not in "which one".
_UNIT_AFTER = re.compile(r"\s*(?:§[A-Z]\s*)?(?:shares?|stocks?|dollars?|bucks|hundred|thousand|million|grand)\b")
MULTIPLIER = {
    "k": 1_000,
    "grand": 1_000,
    "thousand": 1_000,
    "hundred": 100,
    "m": 1_000_000,
    "mm": 1_000_000,
    "mil": 1_000_000,
    "million": 1_000_000,
    "b": 1_000_000_000,
    "bn": 1_000_000_000,
    "billion": 1_000_000_000,
}


def _run_value(run: str) -> int:
    total = current = 0
    for word in re.split(r"[\s-]+", run):
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = (current or 1) * 100
        elif word == "dozen":
            current = (current or 1) * 12
        elif word in _SCALES:
            total += (current or 1) * _SCALES[word]
            current = 0
    return total + current


def words_to_digits(text: str) -> str:
    """"twenty-five hundred dollars" -> "2500 dollars", "a dozen shares" -> "12 shares"."""
    text = re.sub(r"\bhalf (?:a|of a|an) share\b", "0.5 share", text)
    text = re.sub(r"\b(?:a couple(?: of)?|a pair of)\b", "2", text)
    text = re.sub(r"\b(?:a single|a|an|single)\s+(?=(?:§[A-Z]\s+)?shares?\b)", "1 ", text)

    def replace(m: re.Match[str]) -> str:
        run = m.group()
        if run == "one" and not _UNIT_AFTER.match(text, m.end()):
            return run
        if run.split()[0] in ("hundred", "thousand", "million", "billion") and re.search(r"\d\s*$", text[: m.start()]):
            return run  # "$2 thousand": the amount pattern scales the digits
        return str(_run_value(run))

    return _NUMBER_RUN.sub(replace, text)


def decimal_text(digits: str, multiplier: int = 1) -> str | None:
    """A positive amount as a plain decimal string, written as the person wrote it when unscaled."""
    digits = digits.replace(",", "")
    try:
        value = Decimal(digits) * multiplier
    except InvalidOperation:
        return None
    if value <= 0:
        return None
    if multiplier == 1:
        whole, dot, fraction = digits.partition(".")
        return (whole.lstrip("0") or "0") + dot + fraction
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


# ---------------------------------------------------------------- dates and periods

_MONTHS = {
    m: i
    for i, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for m in names
}
_MONTH = r"(?P<mon>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_DATE_FORMS = [
    r"(?P<iy>(?:19|20)\d\d)-(?P<im>[01]?\d)-(?P<id>[0-3]?\d)",
    r"(?P<um>[01]?\d)/(?P<ud>[0-3]?\d)/(?P<uy>(?:19|20)\d\d)",
    rf"{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}",
    rf"{_MONTH}\s+{_DAY},?\s+{_YEAR}".replace("?P<mon>", "?P<mon2>")
    .replace("?P<day>", "?P<day2>")
    .replace("?P<year>", "?P<year2>"),
    rf"{_MONTH},?\s+{_YEAR}".replace("?P<mon>", "?P<mon3>").replace("?P<year>", "?P<year3>"),
    r"(?P<y>(?:19|20)\d\d)(?![\d,.])",
]
_LEAD = (
    r"(?:(?P<lead>since|from|after|starting(?: in| on| from)?|beginning(?: of)?|start of|between|in|during|for|"
    r"until|till|through|thru|to|before|and|end of|-)\s+)?"
)
_DATE = re.compile(r"\b" + _LEAD + "(?:" + "|".join(_DATE_FORMS) + r")\b")
_RANGE_END = {"to", "until", "till", "through", "thru", "and", "-", "before", "end of"}
_WHOLE_PERIOD = {"in", "during", "for"}

_UNIT_LETTER = {"d": "d", "day": "d", "w": "w", "wk": "w", "week": "w", "m": "m", "mo": "m", "month": "m",
                "y": "y", "yr": "y", "year": "y", "quarter": "q", "decade": "x"}
_PERIOD_N = re.compile(
    r"\b(?:(?:over|in|during|for)\s+)?(?:the\s+)?(?:last|past|previous|prior|trailing|recent)\s+"
    r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>days?|d|weeks?|wks?|w|months?|mos?|m|years?|yrs?|y|quarters?|decades?)\b"
    r"|(?<![\d.$])\b(?P<n2>\d+(?:\.\d+)?)[\s-]?(?P<unit2>days?|d|weeks?|wk|w|months?|mo|m|years?|yrs?|yr|y|quarters?)\b"
    r"(?!\s*(?:shares?|dollars?|bucks|of\b))"
)
_PERIOD_ONE = re.compile(
    r"\b(?:(?:over|in|during|for)\s+)?(?:the\s+|this\s+)?(?:last|past|previous|prior|trailing)\s+"
    r"(?P<unit>day|week|month|quarter|year|decade|half[- ]year|half a year|12 months|twelve months)\b"
)
_YTD = re.compile(
    r"\b(?:ytd|year[- ]to[- ]date|(?:so far )?this year(?: so far)?|since (?:the )?(?:start|beginning) of "
    r"(?:the |this )?year|since january(?: 1(?:st)?)?)\b"
)


def _month_end(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


@dataclass(slots=True)
class Dates:
    start: str = ""
    end: str = ""
    period: str = ""

    def perf_args(self) -> dict[str, str]:
        return {k: v for k, v in (("start_date", self.start), ("end_date", self.end), ("period", self.period)) if v}

    def __bool__(self) -> bool:
        return bool(self.start or self.end or self.period)


def _date_bounds(m: re.Match[str]) -> tuple[str, str] | None:
    """(first day, last day) of what a date expression names: a day, a month or a year."""
    g = m.groupdict()
    try:
        if g["iy"]:
            y, mo, d = int(g["iy"]), int(g["im"]), int(g["id"])
        elif g["uy"]:
            y, mo, d = int(g["uy"]), int(g["um"]), int(g["ud"])
        elif g["year"]:
            y, mo, d = int(g["year"]), _MONTHS[g["mon"]], int(g["day"])
        elif g["year2"]:
            y, mo, d = int(g["year2"]), _MONTHS[g["mon2"]], int(g["day2"])
        elif g["year3"]:
            y, mo = int(g["year3"]), _MONTHS[g["mon3"]]
            return f"{y:04d}-{mo:02d}-01", f"{y:04d}-{mo:02d}-{_month_end(y, mo):02d}"
        else:
            y = int(g["y"])
            return f"{y:04d}-01-01", f"{y:04d}-12-31"
        if not 1 <= mo <= 12 or not 1 <= d <= _month_end(y, mo):
            return None
    except (KeyError, ValueError):
        return None
    day = f"{y:04d}-{mo:02d}-{d:02d}"
    return day, day


def _period(n: str, unit: str) -> str:
    letter = _UNIT_LETTER[unit.rstrip("s")]
    count = Decimal(n)
    if letter == "q":
        letter, count = "m", count * 3
    elif letter == "x":
        letter, count = "y", count * 10
    if letter == "y" and count != count.to_integral_value():
        letter, count = "m", count * 12
    if letter == "m" and count % 12 == 0:
        letter, count = "y", count / 12
    return f"{int(count)}{letter}" if count == count.to_integral_value() and count > 0 else ""


def extract_dates(text: str) -> tuple[str, Dates]:
    """Lifts dates and periods out of the text (masked as "§t") so their digits are never amounts."""
    dates = Dates()
    found: list[tuple[str, tuple[str, str], int, tuple[int, int]]] = []  # (lead, bounds, end, span)
    for hit in _DATE.finditer(text):
        lead = hit.group("lead") or ""
        if hit.group("y") and not lead and not (found and found[-1][2] == hit.start() - 1):
            continue  # a bare year may be an amount: "buy 2000 shares"
        bounds = _date_bounds(hit)
        if bounds is not None:
            found.append((lead, bounds, hit.end(), hit.span()))
    if found:
        (lead, (first, last), _, _) = found[0]
        if len(found) >= 2 and found[1][0] in _RANGE_END:
            dates.start, dates.end = first, found[1][1][1]
        elif lead in _WHOLE_PERIOD:
            dates.start, dates.end = first, last
        elif lead in _RANGE_END - {"and", "-"}:
            dates.end = last
        else:
            dates.start = first
        for *_, (a, b) in reversed(found):
            text = text[:a] + " §t " + text[b:]
    m = _YTD.search(text)
    if m:
        dates.period = "ytd"
        text = text[: m.start()] + " §t " + text[m.end() :]
    else:
        m = _PERIOD_ONE.search(text)
        if m:
            unit = m.group("unit")
            dates.period = {"half year": "6m", "half-year": "6m", "half a year": "6m", "12 months": "1y",
                            "twelve months": "1y"}.get(unit) or _period("1", unit)
        else:
            m = _PERIOD_N.search(text)
            if m:
                dates.period = _period(m.group("n") or m.group("n2"), m.group("unit") or m.group("unit2"))
        if m and dates.period:
            text = text[: m.start()] + " §t " + text[m.end() :]
    return text, dates
