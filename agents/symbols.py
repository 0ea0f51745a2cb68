"""Which companies a person's message names: tickers, company names, common and former names.

The offline intent model and the agents both need "Apple", "$AAPL", "Big Blue" and "Facebook's"
to land on one tradable symbol, and need "it", "all", "cash" or "now" never to. Names come from a
curated alias table (common and former names the index data lacks) plus the store's or the
offline index's company names with legal suffixes stripped. Generic English words are kept out:
a word-like ticker counts only in upper case or after "$", a one-word company name that is an
English word is left to the curated table, and a name made only of English words ("Best Buy")
counts only when capitalised.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Curated aliases, one company a line: tickers (primary first) then its names. The primary is the
# pick when none of the tickers is in the resolver's `preferred` set.
_CURATED = """
AAPL: apple, apple computer
MSFT: microsoft
IBM: ibm, international business machines, big blue
GOOG GOOGL: google, alphabet
META FB: meta, meta platforms, facebook
AMZN: amazon, amazon.com
TSLA: tesla, tesla motors
NFLX: netflix
NVDA: nvidia
KO: coca-cola, coca cola, coke
BRK.B: berkshire, berkshire hathaway
JPM: jpmorgan, jp morgan, j.p. morgan, jpmorgan chase, jp morgan chase, Chase
WMT: walmart, wal-mart
DIS: disney, walt disney
INTC: intel
AMD: amd, advanced micro devices
XOM: exxon, exxonmobil, exxon mobil
JNJ: johnson & johnson, johnson and johnson, j&j
PG: procter & gamble, procter and gamble, proctor & gamble, proctor and gamble, p&g
V: visa
MA: mastercard
PEP: pepsi, pepsico
MCD: mcdonald's, mcdonalds, mcdonald
NKE: nike
BA: boeing
SBUX: starbucks
CRM: salesforce
ORCL: oracle
CSCO: cisco
ADBE: adobe
PYPL: paypal
VZ: verizon
T: at&t, at & t, at and t
PFE: pfizer
CVX: chevron
HD: home depot
COST: costco
GS: goldman sachs, goldman
BAC: bank of america, bofa
WFC: wells fargo
C: citigroup, citi, citibank
MS: morgan stanley
UNH: unitedhealth, united health, unitedhealth group
LLY: eli lilly, Lilly
MRK: merck
ABBV: abbvie
ABT: abbott, abbott labs
TMO: thermo fisher
QCOM: qualcomm
TXN: texas instruments
AVGO: broadcom
UBER: uber
ABNB: airbnb
PLTR: palantir
SHOP: shopify
CMCSA: comcast
TMUS: t-mobile, tmobile
F: ford, ford motor
GM: general motors, gm
GE: general electric, ge
CAT: caterpillar
MMM: 3M
HON: honeywell
UPS: united parcel service, UPS
FDX: fedex
LMT: lockheed martin, lockheed
RTX: raytheon
AXP: american express, amex
SCHW: schwab, charles schwab
BLK: blackrock
TGT: Target
LOW: lowe's, lowes
CVS: cvs
MDLZ: mondelez
PM: philip morris
MO: altria
NOW: servicenow
INTU: intuit
AMAT: applied materials
MU: micron
DELL: dell
HPQ: hp, hewlett-packard, hewlett packard
EBAY: ebay
BKNG: booking holdings, booking.com
MAR: marriott
DAL: delta air lines, delta airlines, Delta
UAL: united airlines
LUV: southwest airlines
SHEL: Shell, royal dutch shell
BP: bp
"""

# Names written with a capital in the table above are also English words ("Chase", "Target"):
# they count only when the person capitalised them too.

# English words (and chat abbreviations) that are also tickers or company-name words. Built from a
# dictionary against the offline index's tickers and names, plus the vocabulary of this product's
# requests; kept here because the machines that run the engine carry no dictionary.
_ENGLISH = frozenset(
    """
a able about above academy acceptance account act activity actually ad admiral adobe advance
advanced aeon aerospace after again against aggressive ago ai air airlines airways alarm alb align
all alliance alpha alphabet alpine also alto aluminum am amazon american amp amt an analog and ani
animal any anything apartment apogee app apparel apple applied arbor arch archer are ares arm armada
artisan arts as asap asset assets associated associates assured at atlas auto automation automotive
aviation ax axle axon b bad badger baker bakeries balance balanced ball bank banking banks banner
barn barrel be beacon beauty because been before being below benchmark best better between beverage
big biomedical biotechnology bit black block bond bonds booking boot boss both box boy brake brands
bread breweries brick brokers brown btw buckle bucks bud builders building bureau buster but buy by
c cable cactus cadence cake cal calm can cannot canon capital capitol car carbon cardinal care
career carnival carrier cars cascade cash casino castle cat catalyst caterpillar cc cement cent
centers central century ceo cf cfo champion charter chartered chase cheesecake chef chefs chemical
chemicals chevron church citizens city clean clear coal cogent cognizant coin cola colonial comfort
commerce commercial commonwealth communications communities community compass con connection
connectivity conservative consolidated constellation construction consumer continental controls coo
cooper cop core corners corning corporation corsair cost costar could country cpi cracker credit
crescent crown cruise crypto curb customers d dash data day days dca dd deck delivery dell delta
deluxe deposit deposits depot design desk development devices diabetes diagnostics did digital dime
diodes diploma dis disco discovery do doc does doing dollar dollars dominion domino done dorm down
dream due duke during dynamics e ea each eagle east easterly eat ed edge education educators eight
electric electron electronic electronics element employers enact encore energies energizer energy
engines enterprise enterprises entertainment eps equal equities equity es essential est estate etf
etfs even every everything evolution exchange expand expeditors express extra extreme eye f factory
fang farms fast fed federal feel ferry few fifth finance financial finders fine fire first fisher
five fix fizz flags flavors foods for ford form forward four fox fragrances freight fresh from front
full fuller fun fund funds further fyi g gamble games gaming gap garden gas gates gdp ge gen general
genetics genuine get gild give glass global globe gm go going gold golden golf good government grand
granite great green grid grill grocery group gs guaranty h had half ham harbors harmonic harmony has
have having he health healthcare heartland heavy helix hello help her here heritage hero hers
herself hertz hexagon hey hi high hilltop him himself his history holding holdings home homes hood
hope hospitality host hotel hotels house how hp hrs hub hum hundred hunt i ice if iii imo imperial
in income independent index industrial industries industry information infrastructure initial inn
innovative insight inspire installed institute instruments insulators insurance integer intel inter
interactive intercontinental interface international internet interstate into intuit intuitive
investment investments investor investors invitation ipo ira iridium iron irs is it its itself j
jack japan jersey jewelers john just k key keys kinder kingfisher know ko l la laboratories lam lamb
land last lease left leg legal less let liberty life light lii like line lines liquidity live lol
long look lot lotus low m ma machinery madden magnolia make man management manufacturing many mar
marathon marine market markets marks marsh marten martin mas match materials may maybe me media
medical merchants mercury merit mes met meta metal metallurgical metals meter microchip micron mid
midland might million mills mine minerals mining mister mo mobile mobility monarch money monolithic
monster month moody more mortgage mos mosaic most motor motors mountain ms mu much muffler music
must my myriad myself n nasdaq nation national natl natural need nephew net networks new news next
nine no noble nope nor northern northwest not now nyse o occidental of off oil ok okay old omega on
once one only operator or oracle orange order oriental other otter our ours ourselves out outdoors
outfitters outlet over own oxford p pacific packaging papa paper par paramount parcel parent park
parks partners parts pat payments pe peak peg penguin pep pepper performance persimmon personal pet
petroleum pg pharmaceutical pharmaceuticals phoenix physical pi pinnacle piper pizza pkg place plan
platforms play please plexus pls plus plz pm polar pool portfolio position positions post power
preferred prestige presto price prim principal printing produce products progress progressive
properties property protagonist provident prudential public puma purchase q qt quanta quest quote r
railway ramp rational re real really realty rebalance recruit red redwood regency regions rentals
republic research residential resort resorts resources restaurants retailing right risk river rock
rogers roi roll rolls royal rubber run rush s sabre safe safety sage saint sally same sands sap
savings scholastic sciences scientific scout screen seacoast sealed seaways sec secret secure
securities security see select sell semiconductor semiconductors service services seven shack shake
shall share shares sharp she shell shift shin shoo shop short should show signal signet simply since
six sky small smelting smith snack snap so software solar solaria sols solstice solutions some
something son sonic southern southwest space sports square stake standard star state states steel
steers stellar step still stock stocks storage stores strategic street stride stuff such summit sun
supply sure surgical sustainable system systems t tag tail take tandem tap tapestry target tbh team
tech technologies technology tel telegraph telephone tell ten than thank thanks that the theatres
their theirs them themselves then therapeutics therapy there these they thing things think third
this those thousand three through thx tidewater tile time tire titan to tobacco today too tool tot
total tower towers tractor trade transfer transfers transport travel travelers tree trend trinity
trip triumph truck trust two u ultra under union unit united universal until up ups urban us usa usd
utilities v vacations van vascular vertex very victory visa vision vital w wacker walker want
warehouse warrior was wash waste water waters way we week weight weir well wells wen were west
western what whatever when where which while who whole whom why wide will with withdrawal wolverine
workday works workshop world worldwide would wt x xylem yeah year years yelp yep yes you your yours
yourself yourselves ytd yum z zebra
""".split()
)

_TOKEN = re.compile(r"\$?[A-Za-z0-9]+(?:[&.'’][A-Za-z0-9]+)*(?:['’]s?)?|&")
_TICKER_SHAPE = re.compile(r"[A-Z]{1,5}(?:\.[A-Z])?")
_SUFFIX = re.compile(
    r"(?:[\s,]+(?:inc|incorporated|corp|corporation|co|company|companies|plc|ltd|limited|llc|lp|l\.p|"
    r"n\.v|nv|s\.a|sa|se|ag|ab|asa|oyj|spa|s\.p\.a|holdings?|group|class [a-c]|& co|and co)\.?)+$",
    re.IGNORECASE,
)
_MAX_NAME_TOKENS = 6


@dataclass(frozen=True, slots=True)
class Mention:
    """One company named in a message: where (character offsets) and which symbol."""

    start: int
    end: int
    symbol: str


@dataclass(frozen=True, slots=True)
class _Token:
    start: int
    end: int
    raw: str  # without a leading "$"
    dollar: bool

    @property
    def key(self) -> str:
        return self.raw.lower().replace("’", "'")


@dataclass(frozen=True, slots=True)
class _Alias:
    tickers: tuple[str, ...]  # primary first
    capitalised: bool  # the person must capitalise every word ("Best Buy", "Target")
    upper: bool  # the person must write it in capitals (short names like "ABB")


def _tokens(text: str) -> list[_Token]:
    out = []
    for m in _TOKEN.finditer(text):
        raw = m.group()
        dollar = raw.startswith("$")
        out.append(_Token(m.start(), m.end(), raw[1:] if dollar else raw, dollar))
    return out


def _key(name: str) -> str:
    return " ".join(t.key for t in _tokens(name))


def _strip_possessive(key: str) -> str:
    for tail in ("'s", "'"):
        if key.endswith(tail):
            return key[: -len(tail)]
    return key


def usable_name(name: str) -> str:
    """A listed company name as people say it: "The Walt Disney Company" -> "Walt Disney"."""
    name = re.sub(r"\s*\([^)]*\)", "", name)
    name = re.sub(r"^the\s+", "", name, flags=re.IGNORECASE)
    previous = None
    while previous != name:
        previous = name
        name = _SUFFIX.sub("", name).strip(" ,.")
    return name


class SymbolResolver:
    """Finds the symbols a message names, in order of appearance."""

    def __init__(
        self,
        tickers: Iterable[str],
        names: Mapping[str, Iterable[str]],
        preferred: Iterable[str] = (),
        capitalised: Iterable[str] = (),
        upper: Iterable[str] = (),
        casual: Iterable[str] = (),
    ) -> None:
        """`names` maps a name to its tickers, primary first; `capitalised`/`upper` list names the
        person must capitalise / write in capitals for them to count; `casual` lists well-known
        tickers that also count in lower case ("aapl") when they are not English words."""
        self.preferred = frozenset(s.upper() for s in preferred)
        self.tickers = frozenset(t.upper() for t in tickers) | self.preferred
        cap = {_key(n) for n in capitalised}
        up = {_key(n) for n in upper}
        self._names: dict[str, _Alias] = {}
        for name, symbols in names.items():
            key = _key(name)
            if key and key not in self._names:
                self._names[key] = _Alias(tuple(s.upper() for s in symbols), key in cap, key in up)
        self.tickers |= {t for alias in self._names.values() for t in alias.tickers}
        self._first_words = frozenset(key.split()[0] for key in self._names)
        known = self.preferred | {t.upper() for t in casual}
        self._lower_ok = frozenset(
            t for t in known if len(t) >= 3 and t.lower() not in _ENGLISH and _TICKER_SHAPE.fullmatch(t)
        )

    def _pick(self, tickers: tuple[str, ...]) -> str:
        return next((t for t in tickers if t in self.preferred), tickers[0])

    def _name_at(self, tokens: list[_Token], i: int) -> tuple[int, str] | None:
        """The longest name starting at token i: (tokens used, symbol)."""
        first = tokens[i].key
        if first not in self._first_words and _strip_possessive(first) not in self._first_words:
            return None
        for n in range(min(_MAX_NAME_TOKENS, len(tokens) - i), 0, -1):
            span = tokens[i : i + n]
            if any(t.dollar for t in span[1:]):
                continue
            keys = [t.key for t in span]
            for last in dict.fromkeys((keys[-1], _strip_possessive(keys[-1]))):
                alias = self._names.get(" ".join([*keys[:-1], last]))
                if alias is None:
                    continue
                if alias.upper and not all(t.raw.isupper() for t in span):
                    continue
                if alias.capitalised and not all(t.raw[0].isupper() or not t.raw[0].isalpha() for t in span):
                    continue
                return n, self._pick(alias.tickers)
        return None

    def _ticker(self, token: _Token) -> str | None:
        raw = _strip_possessive(token.raw.replace("’", "'"))
        symbol = raw.upper()
        if symbol not in self.tickers:
            return None
        if token.dollar:
            return symbol
        if raw.isupper():
            return symbol if raw.lower() not in _ENGLISH else None
        return symbol if raw.islower() and symbol in self._lower_ok else None

    def find(self, text: str) -> list[Mention]:
        """Every company mention with its character span, in order (a name repeated is listed again)."""
        tokens = _tokens(text)
        found: list[Mention] = []
        i = 0
        while i < len(tokens):
            named = self._name_at(tokens, i)
            if named is not None:
                n, symbol = named
                found.append(Mention(tokens[i].start, tokens[i + n - 1].end, symbol))
                i += n
                continue
            ticker = self._ticker(tokens[i])
            if ticker is not None:
                found.append(Mention(tokens[i].start, tokens[i].end, ticker))
            i += 1
        return found

    def resolve(self, text: str) -> list[str]:
        """The distinct symbols a message names, in order of first appearance."""
        return list(dict.fromkeys(m.symbol for m in self.find(text)))


def _curated() -> tuple[dict[str, tuple[str, ...]], set[str], set[str]]:
    names: dict[str, tuple[str, ...]] = {}
    capitalised: set[str] = set()
    upper: set[str] = set()
    for line in _CURATED.strip().splitlines():
        tickers, aliases = line.split(":", 1)
        for alias in (a.strip() for a in aliases.split(",")):
            names[alias] = tuple(tickers.split())
            if alias.isupper():
                upper.add(alias)
            elif alias[0].isupper():
                capitalised.add(alias)
    return names, capitalised, upper


def from_names(names: Mapping[str, str], tickers: Iterable[str], preferred: Iterable[str] = ()) -> SymbolResolver:
    """A resolver from listed company names (ticker -> name, e.g. the store's profiles) plus the
    curated aliases, which always take precedence over a listed name."""
    table, capitalised, upper = _curated()
    listed: dict[str, list[str]] = {}
    for ticker, name in names.items():
        usable = usable_name(name)
        if usable:
            listed.setdefault(usable, []).append(ticker.upper())
    # "Zorblax" for "Zorblax Industries": a distinctive first word that no other company starts with.
    firsts: dict[str, set[str]] = {}
    for name in listed:
        words = [t.key for t in _tokens(name)]
        if len(words) > 1 and len(words[0]) >= 4 and words[0].isalpha() and words[0] not in _ENGLISH:
            firsts.setdefault(words[0], set()).add(name)
    for first, owners_names in firsts.items():
        if len(owners_names) == 1 and first not in listed:
            listed[first] = listed[next(iter(owners_names))]
    curated_keys = {_key(n) for n in table}
    for name, owners in listed.items():
        words = [t.key for t in _tokens(name)]
        if not words or _key(name) in curated_keys:
            continue
        if len(words) == 1 and words[0] in _ENGLISH:
            continue  # "Target", "Block", "Next": generic unless curated
        # Primary: a US listing (no exchange suffix) before foreign ones, then alphabetical.
        table[name] = tuple(sorted(set(owners), key=lambda t: ("." in t, t)))
        if all(w in _ENGLISH for w in words):
            capitalised.add(name)
        elif len(words) == 1 and len(words[0]) <= 3:
            upper.add(name)
    casual = {t for line in _CURATED.strip().splitlines() for t in line.split(":", 1)[0].split()}
    return SymbolResolver([*tickers, *names], table, preferred, capitalised, upper, casual)


@functools.cache
def _default(preferred: frozenset[str]) -> SymbolResolver:
    from brokerage.company_profiles import default_profiles

    profiles = default_profiles()
    # An alias profile (FB beside META) repeats its target's name; the target stays the primary.
    names = {p.symbol: p.company_name for p in profiles if "alias_of" not in p.facts}
    return from_names(names, [p.symbol for p in profiles], preferred)


def default_resolver(preferred: Iterable[str] = ("AAPL", "MSFT", "IBM", "GOOG", "FB")) -> SymbolResolver:
    """The resolver over the offline company list; built once per `preferred` set (it takes a while)."""
    return _default(frozenset(s.upper() for s in preferred))
