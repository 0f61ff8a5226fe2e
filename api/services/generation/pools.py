"""Seeded pools of realistic values, drawn from Faker once so rows never call Faker.

Faker is slow per value; a million rows would spend minutes in it
(``docs/performance.md``). Instead, `build_people` and `build_brands` ask Faker (seeded,
one instance per country) for a few hundred first names, last names, cities, companies and
e-mail domains, and the row generators combine them with a seeded `random.Random`; the
same seed always gives the same pools, in any process (whatever its hash seed).

A person's name, city, phone prefixes and free-mail domain come from the same country, so
a user looks like one person. E-mail local parts are ASCII letters (accents folded, other
characters dropped); the users generator appends the user id, which makes every e-mail
unique by construction.
"""

import unicodedata
from dataclasses import dataclass

from faker import Faker

NAMES_PER_COUNTRY = 300
CITIES_PER_COUNTRY = 80
COMPANIES = 400
BRANDS = 200
# The providers the pools draw from (names, cities, companies, domains). Faker's default is
# every provider, each looked up per locale on disk: most of the pools' build time.
FAKER_PROVIDERS = [
    f"faker.providers.{name}" for name in ("person", "address", "company", "internet")
]


@dataclass(frozen=True)
class Country:
    """A market: Faker locale, share of users, calling code and phone number shapes.

    A phone number is ``<calling code> <prefix> <subscriber>``, the subscriber number
    drawn from ``subscriber_low + [0, subscriber_span)`` (no leading zero).
    """

    locale: str
    weight: int
    calling_code: str
    landline: tuple[str, ...]
    mobile: tuple[str, ...]
    subscriber_low: int
    subscriber_span: int


def _country(locale, weight, code, landline, mobile, digits) -> Country:
    low = 2 * 10 ** (digits - 1)
    return Country(locale, weight, code, landline, mobile, low, 10**digits - low)


COUNTRIES = (
    _country("en_US", 34, "+1", ("212", "312", "415", "617", "713"), ("646", "917"), 7),
    _country("en_GB", 12, "+44", ("20", "121", "161", "131"), ("7700", "7911"), 6),
    _country("de_DE", 11, "+49", ("30", "40", "89", "221"), ("151", "160", "171"), 7),
    _country("fr_FR", 9, "+33", ("1", "4", "5"), ("6", "7"), 8),
    _country("es_ES", 7, "+34", ("91", "93", "96"), ("6", "7"), 7),
    _country("it_IT", 7, "+39", ("02", "06", "011"), ("320", "347", "333"), 7),
    _country("nl_NL", 5, "+31", ("20", "10", "70"), ("6",), 8),
    _country("pt_BR", 6, "+55", ("11", "21", "31"), ("119", "219"), 8),
    _country("en_IN", 6, "+91", ("11", "22", "80"), ("98", "99", "97"), 8),
    _country("pl_PL", 3, "+48", ("22", "12", "61"), ("50", "60", "69"), 7),
)


@dataclass(frozen=True)
class CountryPeople:
    """One country's pools; ``first``/``last`` pair each display name with its letters."""

    country: Country
    first: tuple[tuple[str, str], ...]
    last: tuple[tuple[str, str], ...]
    cities: tuple[str, ...]
    domains: tuple[str, ...]


@dataclass(frozen=True)
class People:
    """The users generator's pools: people per country, and organisations' domains."""

    countries: tuple[CountryPeople, ...]
    company_domains: tuple[str, ...]


def build_people(*, seed: int) -> People:
    """Draw names, cities and domains from Faker; the same seed gives the same pools."""
    countries = tuple(_country_people(country, seed=seed) for country in COUNTRIES)
    fake = _faker("en_US", seed=f"{seed}:companies")
    domains = {f"{_ascii(fake.company())}.{fake.tld()}" for _ in range(COMPANIES)}
    return People(countries, tuple(sorted(domains)))


def build_brands(*, seed: int) -> tuple[str, ...]:
    """Brand names for products: Faker last names, as many brands are."""
    fake = _faker("en_US", seed=f"{seed}:brands")
    return tuple(sorted({fake.last_name() for _ in range(BRANDS)}))


def _faker(locale: str, *, seed: str) -> Faker:
    # Unweighted picks are 20× faster and, for pools, just as realistic.
    fake = Faker(locale, providers=FAKER_PROVIDERS, use_weighting=False)
    fake.seed_instance(seed)
    # it_IT builds its list of cities from a set: its order, and so the seeded picks,
    # changed with each process's hash seed (PYTHONHASHSEED). A sorted copy is stable.
    for provider in fake.get_providers():
        if isinstance(getattr(provider, "cities", None), list):
            provider.cities = sorted(provider.cities)
    return fake


def _country_people(country: Country, *, seed: int) -> CountryPeople:
    fake = _faker(country.locale, seed=f"{seed}:{country.locale}")
    first = _named(fake.first_name() for _ in range(NAMES_PER_COUNTRY))
    last = _named(fake.last_name() for _ in range(NAMES_PER_COUNTRY))
    cities = tuple(sorted({fake.city() for _ in range(CITIES_PER_COUNTRY)}))
    domains = tuple(sorted({fake.free_email_domain() for _ in range(60)}))
    return CountryPeople(country, first, last, cities, domains)


def _named(names) -> tuple[tuple[str, str], ...]:
    """Distinct ``(display, letters)`` pairs, dropping names without any ASCII letter."""
    pairs = {(name, _ascii(name)) for name in names}
    return tuple(sorted((name, letters) for name, letters in pairs if letters))


_UNDECOMPOSABLE = str.maketrans({"ł": "l", "ø": "o", "ß": "ss", "æ": "ae", "œ": "oe", "đ": "d"})


def _ascii(text: str) -> str:
    """Lower-case ASCII letters only: ``"Łukasz-Zięcik"`` → ``"lukaszziecik"``."""
    text = text.lower().translate(_UNDECOMPOSABLE)
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded if "a" <= ch <= "z")
