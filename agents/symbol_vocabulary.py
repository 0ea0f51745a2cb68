"""The words the symbol resolver reads: the curated company aliases and the English words it refuses.

Data only, kept apart from `agents.symbols` so the lists can grow without touching how a message
is tokenised and matched.
"""

from __future__ import annotations

# Curated aliases, one company a line: tickers (primary first) then its names. The primary is the
# pick when none of the tickers is in the resolver's `preferred` set.
CURATED = """
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
ENGLISH = frozenset(
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
