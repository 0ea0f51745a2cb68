"""The words and patterns the offline intent reader looks for, one compiled pattern per intent.

Kept apart from the reading logic so the vocabulary can grow (people find new ways to ask) without
touching how clauses are cut and combined. Patterns run on the masked, lower-cased message: a company
is `§A`, `§B`..., a date or period is `§t`, number words are digits.
"""

from __future__ import annotations

import re

CONFIRM = re.compile(
    r"(?:(?:yes|yeah|yea|yep|yup|y|sure|ok|okay|k|confirm|confirmed|i confirm|do it|go ahead|go for it|proceed|"
    r"execute|execute it|place it|place the order|submit|submit it|approve|approved|sounds good|absolutely|"
    r"please|pls|correct|that's right|thats right|affirmative|let's do it|lets do it|do that|send it|"
    r"make it so|definitely|of course|right|alright|all right|now|then|it|please do|go|done)\s*)+"
)
CANCEL = re.compile(
    r"(?:(?:no|nope|nah|cancel|cancel it|stop|never ?mind|forget it|don't|dont|abort|not now|thanks|thank you|"
    r"please)\s*)+"
)
GREETING = re.compile(r"(?:(?:hi|hello|hey|thanks|thank you|good morning|good evening|yo|howdy)\s*)+")

ADVICE = re.compile(
    r"\bshould (?:i|we)\b|\bis (?:it|now|this|today) (?:a )?(?:good|bad|right|smart|wise|the right)\b|"
    r"\bgood (?:time|idea|moment)\b|\bworth (?:it|buying|selling|adding|holding|getting|investing)\b|"
    r"\bwould you (?:buy|sell|add|hold|invest|recommend)\b|\bdo you (?:think|recommend|suggest)\b|"
    r"\brecommend|\badvi[cs]e|\byour (?:thoughts|opinion|take|view)\b|\bthoughts on\b|\bopinion on\b|"
    r"\bwhat do you think\b|\btime to (?:buy|sell|get)\b|\b(?:good|bad|smart) (?:buy|investment|move|stock)\b|"
    r"\bmakes? sense to\b|\bbetter to (?:buy|sell|hold)\b|\b(?:buy|sell),? or (?:hold|sell|buy)\b|"
    r"\bhold or sell\b|\bwise to\b|\bok to (?:buy|sell)\b|\bis §[A-Z] a buy\b"
)
BUY = re.compile(
    r"\b(?:buy|buying(?! power)|purchase|purchasing|acquire|grab|pick up|get me|invest|investing|put|add|adding|"
    r"accumulate|load up(?: on)?|scoop up|place (?:an |a )?order for|order|go long(?: on)?)\b|"
    r"\b(?:i want|i'd like|i would like|get)\s+(?=\$|\d)"
)
SELL = re.compile(
    r"\b(?:sell|selling|dump|unload|liquidate|get rid of|exit|close(?: out)?|trim|offload|ditch|"
    r"cash out(?: of)?|take profits?(?: on| in)?|short)\b"
)
PAST_TRADE = re.compile(r"\b(?:did|have|has|had) (?:i|we) (?:\w+ )?(?:buy|sell|purchase|trade|bought|sold)\b")

PERF = re.compile(
    r"\bperform|\breturns?\b|\bgain(?:ed|s)?\b|\blos(?:s|t|ses)\b|\bup or down\b|"
    r"\bhow (?:much )?(?:has|have|did) .*?\b(?:done|do|gone|moved|changed|grown|grew|risen|rose|fallen|fell|"
    r"dropped|climbed|fared|been doing)\b|\bcompar|\bvs\.?\b|\bversus\b|\bchart|\btrend|\bhistory\b|"
    r"\bhistorical|\btrack record\b|\bgrowth\b|\bchanged?\b|\bover time\b|\blately\b|\brecently\b|\bbeen doing\b|"
    r"\bsince\b"
)
QUOTE = re.compile(
    r"\bprices?\b|\bquotes?\b|\btrading at\b|\btrades at\b|\bworth\b|\bcosts?\b|\bvalued\b|\bvalue of\b|"
    r"\bmarket (?:cap|value)\b|\bhow much (?:is|are|does|do)\b|\bwhat(?:'s| is) .*\bat\b|\bshare price\b|"
    r"\bstock price\b|\bticker\b"
)
QUOTE_WEAK = re.compile(
    r"\btoday\b|\bright now\b|\bcurrently\b|\bdoing\b|\bhow(?:'s| is| are)\b|\bmoving\b|\bup\b|\bdown\b"
)
PROFILE = re.compile(
    r"\btell me (?:about|more)\b|\bwhat (?:does|do) .*\bdo\b|\bwho (?:is|are|owns|runs|makes)\b|\bprofile\b|"
    r"\binfo\b|\binformation\b|\boverview\b|\bbackground\b|\bbusiness\b|\bdescribe\b|\bdescription\b|"
    r"\bsector\b|\bindustry\b|\bheadquarter|\bceo\b|\bfounded\b|\bemployees\b|\blearn about\b|"
    r"\bknow about\b|\bwhat (?:kind|sort|type) of\b|\bexplain\b|\bsummary\b|\bsummari[sz]e\b|"
    r"\bfundamentals\b|\bdetails? (?:on|about|of)\b|\bwhat §[A-Z] (?:does|do|makes|sells)\b|\brundown\b|\blowdown\b"
)
PROFILE_WEAK = re.compile(r"\bwhat(?:'s| is| are)\b|\babout\b|\bwho\b|\bcompany\b")

CASH = re.compile(
    r"\bhow much (?:cash|money|funds)\b|\bbuying power\b|\bcash (?:balance|available|on hand|position|do i|left|"
    r"have i)\b|\bavailable (?:cash|funds|balance|to (?:invest|trade|spend))\b|\b(?:cash|money|funds) "
    r"(?:is |do i have )?(?:available|free|left|uninvested)\b|\buninvested\b|\bidle cash\b|\bspare cash\b|"
    r"\bhow much (?:can|could) i (?:invest|spend|afford|trade|buy)\b|\bmy cash\b|\bspending power\b|"
    r"\bcash do i\b|\bmoney do i have\b|\bsitting in cash\b|\bhow much (?:do|can) i have (?:left|available)\b|"
    r"\bleft to (?:trade|invest|spend)\b|\bto (?:trade|invest) with\b"
)
ACTIVITY = re.compile(
    r"\bactivity\b|\btransactions?\b|\bstatements?\b|\bdeposits?\b|\bdeposited\b|\bwithdrawals?\b|\bwithdrew\b|"
    r"\bwithdrawn\b|\btransfers?\b|\btransferred\b|\bfills?\b|\bfilled\b|\bexecutions?\b|\borders\b|"
    r"\btrades\b|\bpurchases\b|\bbuys\b|\bsales\b|\bbought\b|\bsold\b|\bpurchased\b|\bmy (?:last |recent )?order\b|"
    r"\b(?:account|order|trade|trading|purchase|transaction|deposit|withdrawal|funding) history\b|"
    r"\bfunding\b|\bledger\b|\b(?:did|have) (?:i|we) (?:\w+ )?(?:buy|sell|purchase|trade|bought|sold)\b|"
    r"\bcash (?:movements|flows?|in and out)\b|\bmoney (?:in|out|i put in)\b"
)
ACTIVITY_TRADES = re.compile(
    r"\btrad|\border|\bfill|\bexecution|\bpurchas|\bbuys?\b|\bbought\b|\bsold\b|\bsell|\bsales\b"
)
ACTIVITY_CASH = re.compile(r"\bdeposit|\bwithdr|\btransfer|\bcash\b|\bfunding\b|\bmoney\b")
REBALANCE = re.compile(r"\bre-?balanc|\breallocat|\brealign|\btarget (?:allocation|mix|weights?)\b|\bequal[- ]?weight")
# carrying a rebalance out (orders, each confirmed) rather than seeing the plan
EXECUTE = re.compile(
    r"\b(?:execute|place|submit|carry out|go ahead with|go through with|make|do|start|trade|run|perform)\b"
    r".*\b(?:re-?balanc\w*|trades|orders)\b.*|\bre-?balanc\w* (?:it |everything |my \w+ )?for me\b|"
    r"\bre-?balanc\w*\b.*\b(?:and|then) (?:place|execute|submit|make|do) (?:the |those |these |all )?(?:trades|"
    r"orders)\b"
)
TARGET_CHANGE = re.compile(
    r"\b(?:make|shift|move|switch|turn|change|adjust|go|convert|reposition|restructure|split|spread|divide|"
    r"distribute|allocate|weight|put)\b"
)
TARGETS = (
    (
        "equal_weight",
        re.compile(r"\bequal[- ]?weight|\bequally\b|\bevenly\b|\bequal (?:parts|amounts|split|shares)\b|\bsame amount"),
    ),
    (
        "conservative",
        re.compile(r"\bconservative|\bsafer\b|\bless risk|\blower risk|\bdefensive|\bcautious|\bless aggressive"),
    ),
    ("balanced", re.compile(r"\bbalanced\b|\bmoderate\b|\bmiddle of the road\b|\bin between\b")),
    ("aggressive", re.compile(r"\baggressive|\bgrowth\b|\briskier\b|\bmore risk|\bhigher risk|\bmore growth")),
)
RISK = re.compile(
    r"\brisk|\bvolatil|\bsharpe\b|\bbeta\b|\bdraw-?downs?\b|\bvar\b|\bvalue at risk\b|\bstandard deviation\b|"
    r"\bstd dev\b|\bsortino\b|\bhow safe\b|\bdownside\b|\bswings?\b|\bdrops?\b"
)
DIVERSIFY = re.compile(
    r"\bdiversif|\bconcentrat|\bover-?exposed\b|\btoo much (?:in|of|exposure)\b|\bspread out\b|"
    r"\beggs in one basket\b|\boverweight\b|\bsingle stock\b|\bcorrelat|\btoo many\b|\btoo few\b|\bbalanced enough\b"
)
PORTFOLIO = re.compile(
    r"\bportfolio|\bholdings?\b|\bpositions?\b|\bwhat do i (?:\w+ )?(?:own|have|hold)\b|\bwhat i (?:own|hold)\b|"
    r"\bmy (?:stocks|shares|investments|account|assets|equities|money)\b|\ballocation\b|\bbreakdown\b|"
    r"\bnet worth\b|\bhow am i doing\b|\bhow are my\b|\bwhat(?:'s| is) in my\b|\binvested in\b|"
    r"\btotal value\b|\baccount value\b|\bbalance\b|\bexposure\b|\bwhat stocks\b|\bstake\b|\bby sector\b|"
    r"\bsector (?:breakdown|exposure|split|weights?|allocation|mix)\b|"
    r"\bgains? and loss|\bp&l\b|\bpnl\b"
)
HOLDING = re.compile(
    r"\bmy §[A-Z]|\bdo i (?:own|have|hold)\b|\bi (?:own|hold)\b|\bhow (?:much|many) .*\b(?:do|did) i (?:own|have|"
    r"hold)\b|"
    r"§[A-Z]\s+(?:position|holding|stake|shares i)\b|\bexposure to\b|\bin my (?:portfolio|account)\b"
)
# A stock-level "how risky is Tesla" has no portfolio tool; its history is the closest answer.
MINE = re.compile(r"\bmy\b|\bportfolio\b|\bi\b|\bme\b")
SYMBOL_MARK = re.compile(r"§([A-Z])")

# Words after "buy"/"of"/"about" that are not a company's name.
NOT_A_NAME = frozenset(
    """some more stuff something things thing anything everything stock stocks shares share it that this them
    these those the my a an any one ones your you yourself company companies market markets of in into on
    for worth dollars bucks me us money cash please now today again too also just right more few lot bit
    what which how why when where who there here their its all funds fund etf etfs portfolio position
    positions holdings good great best other another new different whatever anyone someone up in-between""".split()
)
CANDIDATE = re.compile(
    r"\b(?:of|in|into|on|about|buy|sell|purchase|for|price|quote|is|doing)\s+(?:(?:some|more|the|my|a|an|"
    r"shares|share|stock|worth|of|in|company|called)\s+)*(?P<name>[a-z][\w&'.-]*)"
)

# Where a message is cut into clauses: sentence ends, "and"/"then"/"also", commas not inside a number.
SPLIT = re.compile(
    r"\s*(?:[?!;]+|\.(?=\s|$)|,(?!\d)\s*(?:and|then|also|plus)?\b|\s(?:and then|and also|and|also|plus|then|"
    r"as well as|&|but)\s)\s*"
)
