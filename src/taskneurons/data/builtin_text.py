"""The word lists, fact tables and example generators behind the built-in demo tasks.

Each ``_<task>_example(rng, label, items) -> Example`` draws one example of ``label`` (``""``
for generation tasks); each ``_<task>_items(rng)`` splits a table into disjoint train/test
pools. :mod:`taskneurons.data.builtin` registers them as tasks.
"""

from __future__ import annotations

import random
from typing import Any

from taskneurons.data.tasks import Example

# --------------------------------------------------------------------------------------------
# sentiment

_REVIEW_SUBJECTS = (
    "food", "pasta", "soup", "service", "staff", "waiter", "dessert", "coffee", "pizza",
    "movie", "plot", "acting", "ending", "soundtrack", "film", "story", "hotel", "room",
    "bed", "view", "breakfast", "phone", "battery", "screen", "camera", "laptop", "book",
    "concert", "show", "game",
)  # fmt: skip
_POSITIVE_ADJ = (
    "excellent", "wonderful", "great", "lovely", "fantastic", "superb", "pleasant",
    "impressive", "amazing", "brilliant", "charming", "delightful", "outstanding", "enjoyable",
    "good", "nice",
)  # fmt: skip
_NEGATIVE_ADJ = (
    "terrible", "awful", "poor", "disappointing", "horrible", "dreadful", "boring", "bad",
    "mediocre", "unpleasant", "annoying", "dull", "weak", "useless", "sloppy", "bland",
)  # fmt: skip
_ADVERBS = ("really", "quite", "very", "truly", "rather", "absolutely", "pretty")
_OPENERS = ("", "Honestly, ", "I thought ", "To be fair, ", "Overall, ", "In my opinion, ")


def _sentiment_example(rng: random.Random, label: str, items: Any) -> Example:
    """A review sentence of polarity ``label``; one in four uses a negated opposite adjective."""
    del items
    pos = label == "good"
    subj = rng.choice(_REVIEW_SUBJECTS)
    opener = rng.choice(_OPENERS)
    the = "the" if opener else "The"
    if rng.random() < 0.25:  # "was not <opposite>"
        adj = rng.choice(_NEGATIVE_ADJ if pos else _POSITIVE_ADJ)
        text = f"{opener}{the} {subj} was not {adj}."
    elif rng.random() < 0.4:  # two clauses of the same polarity
        subj2 = rng.choice([s for s in _REVIEW_SUBJECTS if s != subj])
        adjs = _POSITIVE_ADJ if pos else _NEGATIVE_ADJ
        a1, a2 = rng.sample(adjs, 2)
        text = f"{opener}{the} {subj} was {a1} and the {subj2} was {a2}."
    else:
        adj = rng.choice(_POSITIVE_ADJ if pos else _NEGATIVE_ADJ)
        text = f"{opener}{the} {subj} was {rng.choice(_ADVERBS)} {adj}."
    return Example(f"Review: {text}", label)


# --------------------------------------------------------------------------------------------
# past tense (generation)

_SUBJECTS_SG = ("The dog", "My sister", "The teacher", "Tom", "The old man", "Anna",
                "The farmer", "My friend", "The pilot", "The girl")  # fmt: skip
_SUBJECTS_PL = ("The children", "We", "They", "My parents", "The students", "I",
                "The workers", "You")  # fmt: skip
# (third person singular, plural / base, past, complements)
_VERBS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("eats", "eat", "ate", ("an apple", "breakfast", "a sandwich", "dinner at home")),
    ("drinks", "drink", "drank", ("a cup of tea", "cold water", "some milk")),
    ("runs", "run", "ran", ("to the park", "around the lake", "home")),
    ("goes", "go", "went", ("to school", "to the market", "to bed early")),
    ("writes", "write", "wrote", ("a letter", "a short story", "an email")),
    ("tells", "tell", "told", ("a story", "the truth", "a funny joke")),
    ("sees", "see", "saw", ("a bird", "the mountains", "an old friend")),
    ("buys", "buy", "bought", ("a new coat", "some bread", "two tickets")),
    ("brings", "bring", "brought", ("a cake", "the keys", "an umbrella")),
    ("sings", "sing", "sang", ("a song", "in the choir", "a lullaby")),
    ("swims", "swim", "swam", ("in the river", "across the pool", "in the sea")),
    ("takes", "take", "took", ("the bus", "a photo", "the train to work")),
    ("makes", "make", "made", ("a cake", "a mistake", "some tea")),
    ("finds", "find", "found", ("a coin", "the lost cat", "a good book")),
    ("gives", "give", "gave", ("a gift", "a speech", "the answer")),
    ("builds", "build", "built", ("a house", "a sandcastle", "a small boat")),
    ("drives", "drive", "drove", ("to the city", "a red car", "the truck")),
    ("catches", "catch", "caught", ("the ball", "a fish", "the early train")),
    ("teaches", "teach", "taught", ("the class", "math", "a lesson")),
    ("sleeps", "sleep", "slept", ("on the sofa", "all night", "in a tent")),
    ("walks", "walk", "walked", ("to the station", "the dog", "along the river")),
    ("plays", "play", "played", ("the piano", "football", "a board game")),
    ("cooks", "cook", "cooked", ("dinner", "some rice", "a big meal")),
    ("paints", "paint", "painted", ("the fence", "a picture", "the kitchen wall")),
    ("visits", "visit", "visited", ("the museum", "the library", "the zoo")),
    ("cleans", "clean", "cleaned", ("the room", "the windows", "the car")),
    ("watches", "watch", "watched", ("a movie", "the sunset", "the game")),
    ("opens", "open", "opened", ("the door", "the window", "a present")),
    ("carries", "carry", "carried", ("a heavy bag", "the baby", "the boxes")),
    ("studies", "study", "studied", ("history", "for the exam", "the map")),
    ("helps", "help", "helped", ("a neighbor", "the teacher", "a classmate")),
    ("calls", "call", "called", ("the doctor", "a friend", "home")),
)


def _past_tense_example(rng: random.Random, label: str, items: Any) -> Example:
    """``Sentence: <present>`` -> ``<past>`` (generation; ``label`` and ``items`` unused)."""
    del label, items
    third, base, past, comps = rng.choice(_VERBS)
    comp = rng.choice(comps)
    if rng.random() < 0.5:
        subj, present = rng.choice(_SUBJECTS_SG), third
    else:
        subj, present = rng.choice(_SUBJECTS_PL), base
    return Example(f"Sentence: {subj} {present} {comp}.", f"{subj} {past} {comp}.")


# --------------------------------------------------------------------------------------------
# country or city (classification; fact table, split by country)

# (country, cities): capitals first. Places whose city and country share a name (Singapore,
# Luxembourg, ...) list no city; city names shared by several countries or that are common
# English words (Male, Split) are left out.
_COUNTRIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Algeria", ("Algiers", "Oran")),
    ("Angola", ("Luanda",)),
    ("Benin", ("Porto-Novo", "Cotonou")),
    ("Botswana", ("Gaborone",)),
    ("Burkina Faso", ("Ouagadougou",)),
    ("Burundi", ("Gitega", "Bujumbura")),
    ("Cameroon", ("Yaounde", "Douala")),
    ("Cape Verde", ("Praia",)),
    ("Central African Republic", ("Bangui",)),
    ("Chad", ("N'Djamena",)),
    ("Comoros", ("Moroni",)),
    ("Democratic Republic of the Congo", ("Kinshasa", "Lubumbashi")),
    ("Republic of the Congo", ("Brazzaville",)),
    ("Egypt", ("Cairo", "Alexandria")),
    ("Equatorial Guinea", ("Malabo",)),
    ("Eritrea", ("Asmara",)),
    ("Eswatini", ("Mbabane",)),
    ("Ethiopia", ("Addis Ababa",)),
    ("Gabon", ("Libreville",)),
    ("Gambia", ("Banjul",)),
    ("Ghana", ("Accra", "Kumasi")),
    ("Guinea", ("Conakry",)),
    ("Guinea-Bissau", ("Bissau",)),
    ("Ivory Coast", ("Yamoussoukro", "Abidjan")),
    ("Kenya", ("Nairobi", "Mombasa")),
    ("Lesotho", ("Maseru",)),
    ("Liberia", ("Monrovia",)),
    ("Libya", ("Benghazi",)),
    ("Madagascar", ("Antananarivo",)),
    ("Malawi", ("Lilongwe",)),
    ("Mali", ("Bamako", "Timbuktu")),
    ("Mauritania", ("Nouakchott",)),
    ("Mauritius", ("Port Louis",)),
    ("Morocco", ("Rabat", "Casablanca", "Marrakesh")),
    ("Mozambique", ("Maputo",)),
    ("Namibia", ("Windhoek",)),
    ("Niger", ("Niamey",)),
    ("Nigeria", ("Abuja", "Lagos")),
    ("Rwanda", ("Kigali",)),
    ("Senegal", ("Dakar",)),
    ("Sierra Leone", ("Freetown",)),
    ("Somalia", ("Mogadishu",)),
    ("South Africa", ("Pretoria", "Johannesburg", "Cape Town", "Durban")),
    ("South Sudan", ("Juba",)),
    ("Sudan", ("Khartoum",)),
    ("Tanzania", ("Dodoma", "Dar es Salaam")),
    ("Togo", ("Lome",)),
    ("Tunisia", ("Tunis",)),
    ("Uganda", ("Kampala",)),
    ("Zambia", ("Lusaka",)),
    ("Zimbabwe", ("Harare",)),
    ("Afghanistan", ("Kabul",)),
    ("Bahrain", ("Manama",)),
    ("Bangladesh", ("Dhaka", "Chittagong")),
    ("Bhutan", ("Thimphu",)),
    ("Cambodia", ("Phnom Penh",)),
    ("China", ("Beijing", "Shanghai", "Guangzhou", "Shenzhen")),
    ("India", ("New Delhi", "Mumbai", "Bangalore", "Kolkata")),
    ("Indonesia", ("Jakarta", "Surabaya")),
    ("Iran", ("Tehran", "Isfahan")),
    ("Iraq", ("Baghdad", "Basra")),
    ("Japan", ("Tokyo", "Osaka", "Kyoto")),
    ("Jordan", ("Amman",)),
    ("Kuwait", ("Kuwait City",)),
    ("Kyrgyzstan", ("Bishkek",)),
    ("Laos", ("Vientiane",)),
    ("Lebanon", ("Beirut",)),
    ("Malaysia", ("Kuala Lumpur",)),
    ("Maldives", ()),
    ("Mongolia", ("Ulaanbaatar",)),
    ("Myanmar", ("Naypyidaw", "Yangon")),
    ("Nepal", ("Kathmandu",)),
    ("North Korea", ("Pyongyang",)),
    ("Oman", ("Muscat",)),
    ("Pakistan", ("Islamabad", "Karachi", "Lahore")),
    ("Philippines", ("Manila",)),
    ("Qatar", ("Doha",)),
    ("Saudi Arabia", ("Riyadh", "Jeddah", "Mecca")),
    ("Singapore", ()),
    ("South Korea", ("Seoul", "Busan")),
    ("Sri Lanka", ("Colombo",)),
    ("Syria", ("Damascus", "Aleppo")),
    ("Taiwan", ("Taipei",)),
    ("Tajikistan", ("Dushanbe",)),
    ("Thailand", ("Bangkok", "Chiang Mai")),
    ("Turkmenistan", ("Ashgabat",)),
    ("United Arab Emirates", ("Abu Dhabi", "Dubai")),
    ("Uzbekistan", ("Tashkent", "Samarkand")),
    ("Vietnam", ("Hanoi", "Ho Chi Minh City")),
    ("Yemen", ("Sanaa",)),
    ("Albania", ("Tirana",)),
    ("Andorra", ("Andorra la Vella",)),
    ("Austria", ("Vienna", "Salzburg")),
    ("Belarus", ("Minsk",)),
    ("Belgium", ("Brussels", "Antwerp")),
    ("Bosnia and Herzegovina", ("Sarajevo",)),
    ("Bulgaria", ("Sofia",)),
    ("Croatia", ("Zagreb", "Dubrovnik")),
    ("Czech Republic", ("Prague",)),
    ("Denmark", ("Copenhagen",)),
    ("Estonia", ("Tallinn",)),
    ("Finland", ("Helsinki",)),
    ("France", ("Paris", "Lyon", "Marseille")),
    ("Germany", ("Berlin", "Munich", "Hamburg", "Frankfurt")),
    ("Greece", ("Athens",)),
    ("Hungary", ("Budapest",)),
    ("Iceland", ("Reykjavik",)),
    ("Ireland", ("Dublin",)),
    ("Italy", ("Rome", "Milan", "Venice", "Naples")),
    ("Latvia", ("Riga",)),
    ("Liechtenstein", ("Vaduz",)),
    ("Lithuania", ("Vilnius",)),
    ("Luxembourg", ()),
    ("Malta", ("Valletta",)),
    ("Moldova", ("Chisinau",)),
    ("Montenegro", ("Podgorica",)),
    ("Netherlands", ("Amsterdam", "Rotterdam")),
    ("North Macedonia", ("Skopje",)),
    ("Norway", ("Oslo", "Bergen")),
    ("Poland", ("Warsaw", "Krakow")),
    ("Portugal", ("Lisbon", "Porto")),
    ("Romania", ("Bucharest",)),
    ("Serbia", ("Belgrade",)),
    ("Slovakia", ("Bratislava",)),
    ("Slovenia", ("Ljubljana",)),
    ("Spain", ("Madrid", "Barcelona", "Seville")),
    ("Sweden", ("Stockholm", "Gothenburg")),
    ("Switzerland", ("Bern", "Zurich", "Geneva")),
    ("Ukraine", ("Kyiv", "Lviv")),
    ("United Kingdom", ("London", "Manchester", "Edinburgh")),
    ("Bahamas", ("Nassau",)),
    ("Barbados", ("Bridgetown",)),
    ("Belize", ("Belmopan",)),
    ("Canada", ("Ottawa", "Toronto", "Montreal", "Vancouver")),
    ("Costa Rica", ("San Jose",)),
    ("Cuba", ("Havana",)),
    ("Dominican Republic", ("Santo Domingo",)),
    ("El Salvador", ("San Salvador",)),
    ("Guatemala", ("Guatemala City",)),
    ("Haiti", ("Port-au-Prince",)),
    ("Honduras", ("Tegucigalpa",)),
    ("Jamaica", ("Kingston",)),
    ("Mexico", ("Mexico City", "Guadalajara", "Cancun")),
    ("Nicaragua", ("Managua",)),
    ("Panama", ("Panama City",)),
    ("Trinidad and Tobago", ("Port of Spain",)),
    (
        "United States",
        (
            "Washington, D.C.",
            "New York",
            "Los Angeles",
            "Chicago",
            "Houston",
            "Miami",
            "Boston",
            "Seattle",
        ),
    ),
    ("Argentina", ("Buenos Aires", "Cordoba")),
    ("Bolivia", ("La Paz", "Sucre")),
    ("Brazil", ("Brasilia", "Sao Paulo", "Rio de Janeiro", "Salvador")),
    ("Chile", ("Santiago", "Valparaiso")),
    ("Colombia", ("Bogota", "Medellin", "Cartagena")),
    ("Ecuador", ("Quito", "Guayaquil")),
    ("Guyana", ()),
    ("Paraguay", ("Asuncion",)),
    ("Peru", ("Lima", "Cusco")),
    ("Suriname", ("Paramaribo",)),
    ("Uruguay", ("Montevideo",)),
    ("Venezuela", ("Caracas", "Maracaibo")),
    ("Australia", ("Canberra", "Sydney", "Melbourne", "Brisbane", "Perth")),
    ("Fiji", ("Suva",)),
    ("Kiribati", ("Tarawa",)),
    ("Marshall Islands", ("Majuro",)),
    ("Nauru", ()),
    ("New Zealand", ("Wellington", "Auckland", "Christchurch")),
    ("Palau", ()),
    ("Papua New Guinea", ("Port Moresby",)),
    ("Samoa", ("Apia",)),
    ("Solomon Islands", ("Honiara",)),
    ("Tonga", ("Nuku'alofa",)),
    ("Tuvalu", ("Funafuti",)),
    ("Vanuatu", ("Port Vila",)),
)


def _place_items(rng: random.Random) -> dict[str, dict[str, list[str]]]:
    """A third of the countries (with their cities) go to test, the rest to train."""
    order = list(range(len(_COUNTRIES)))
    rng.shuffle(order)
    cut = len(order) // 3
    out: dict[str, dict[str, list[str]]] = {}
    for split, idx in (("test", order[:cut]), ("train", order[cut:])):
        out[split] = {
            "country": [_COUNTRIES[i][0] for i in idx],
            "city": [c for i in idx for c in _COUNTRIES[i][1]],
        }
    return out


def _place_example(rng: random.Random, label: str, items: Any) -> Example:
    return Example(f"Place: {rng.choice(items[label])}", label)


# --------------------------------------------------------------------------------------------
# animal or plant (classification; split by item)

_ANIMALS = (
    "tiger", "horse", "rabbit", "eagle", "snake", "elephant", "frog", "wolf", "sheep", "owl",
    "bear", "dolphin", "mouse", "camel", "duck", "lion", "giraffe", "zebra", "monkey", "fox",
    "deer", "goat", "cow", "pig", "donkey", "squirrel", "hedgehog", "badger", "otter", "beaver",
    "kangaroo", "koala", "penguin", "parrot", "crow", "swan", "goose", "turtle", "lizard",
    "crocodile", "shark", "whale", "salmon", "bee", "butterfly", "spider", "ant", "beetle",
)  # fmt: skip
_PLANTS = (
    "oak", "rose", "tulip", "cactus", "fern", "maple", "daisy", "bamboo", "pine", "sunflower",
    "ivy", "lily", "willow", "moss", "clover", "birch", "cedar", "palm tree", "orchid",
    "daffodil", "lavender", "poppy", "violet", "dandelion", "thistle", "nettle", "basil",
    "mint plant", "thyme", "tomato plant", "potato plant", "apple tree", "cherry tree",
    "lemon tree", "grapevine", "pumpkin vine", "hawthorn", "holly", "heather", "reed",
    "seaweed", "spruce", "elm", "ash tree", "magnolia", "jasmine", "begonia", "geranium",
)  # fmt: skip
_LIVING_PLACES = ("in the garden", "near the river", "on the hill", "in the forest",
                  "behind the house", "at the farm", "by the road", "next to the school",
                  "in the park", "on the island")  # fmt: skip
_LIVING_TEMPLATES = ("There is {a} {x} {p}.", "I saw {a} {x} {p}.", "We found {a} {x} {p}.",
                     "My sister photographed {a} {x} {p}.")  # fmt: skip


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _living_items(rng: random.Random) -> dict[str, dict[str, list[str]]]:
    """A third of the animals and of the plants go to test, the rest to train."""
    out: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for label, names in (("animal", _ANIMALS), ("plant", _PLANTS)):
        shuffled = list(names)
        rng.shuffle(shuffled)
        cut = len(shuffled) // 3
        out["test"][label] = shuffled[:cut]
        out["train"][label] = shuffled[cut:]
    return out


def _animal_plant_example(rng: random.Random, label: str, items: Any) -> Example:
    x = rng.choice(items[label])
    text = rng.choice(_LIVING_TEMPLATES).format(a=_article(x), x=x, p=rng.choice(_LIVING_PLACES))
    return Example(f"Sentence: {text}", label)


# --------------------------------------------------------------------------------------------
# arithmetic (generation)


def _arithmetic_example(rng: random.Random, label: str, items: Any) -> Example:
    """``a + b`` or ``a - b`` (a >= b) with a, b in 1..20; the output is the number."""
    del label, items
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    if rng.random() < 0.5:
        return Example(f"Question: {a} + {b}", str(a + b))
    a, b = max(a, b), min(a, b)
    return Example(f"Question: {a} - {b}", str(a - b))
