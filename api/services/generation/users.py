"""Rows for the ``users`` table: people with a country, an organisation and a segment.

Each user is drawn from one country's pools (name, city, phone numbers with that country's
calling code, a free-mail domain), then given a customer type, and from the type a
credit limit, balances, a segment with its discount and, for organisations, an
``organization_id`` and an e-mail on the organisation's domain.

The e-mail is ``<letters><id>@<domain>``: the local part's letters come from the name and
never end in a digit, so the id suffix makes every generated e-mail unique, and it is
lower-case as the validation rules store it. Rows come out in the model's column order,
`USER_COLUMNS`, one batch (a list of tuples) at a time, so memory stays flat.

For PostgreSQL's ``COPY`` the same rows come as lines of its text format instead
(``copy_text=True``): one f-string per row costs what building the tuple costs, and saves
encoding the tuple afterwards (psycopg's ``write_row``), a large share of the loader's CPU
(``docs/performance.md``). The draws are shared, so both forms hold the same values.
"""

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from math import trunc  # int() of a float, as a plain call: cheaper per pick

from api.models import User
from api.services.generation.pools import CountryPeople, build_people
from api.services.generation.values import (
    CENTS,
    COPY_NULL,
    WINDOW_START_TS,
    copy_escape,
    day_texts,
    money,
    slots,
    time_texts,
    window_step,
)

USER_COLUMNS = (
    "id",
    "name",
    "email",
    "organization_id",
    "phone",
    "mobile",
    "country_code",
    "city",
    "credit_limit",
    "outstanding_amount",
    "total_sales",
    "customer_type",
    "segment_name",
    "segment_discount",
    "is_active",
    "created_at",
)
USERS_PER_ORGANIZATION = 40


@dataclass(frozen=True)
class Profile:
    """What a customer type implies: credit range and step (whole units), segments.

    Segment discounts are in hundredths of a percent (``1250`` is 12.50%).
    """

    credit: tuple[int, int, int]
    segments: tuple[tuple[str, int], ...]
    in_organization: bool


_T = User.CustomerType
PROFILES = {
    _T.INDIVIDUAL: Profile(
        (500, 10_000, 100),
        (("Consumer", 0), ("Consumer Plus", 250), ("Loyalty Gold", 500)),
        in_organization=False,
    ),
    _T.BUSINESS: Profile(
        (5_000, 250_000, 500),
        (("Small Business", 500), ("Mid-Market", 750), ("Wholesale", 1250)),
        in_organization=True,
    ),
    _T.ENTERPRISE: Profile(
        (100_000, 5_000_000, 5_000),
        (("Enterprise", 1500), ("Strategic Account", 2000), ("Global Account", 2250)),
        in_organization=True,
    ),
    _T.GOVERNMENT: Profile(
        (50_000, 2_000_000, 5_000),
        (("Public Sector", 1000), ("Education", 1250), ("Healthcare", 1200)),
        in_organization=True,
    ),
}
_TYPE_WEIGHTS = ((_T.INDIVIDUAL, 55), (_T.BUSINESS, 28), (_T.ENTERPRISE, 10), (_T.GOVERNMENT, 7))


def user_batches(
    *,
    seed: int,
    first_id: int,
    count: int,
    batch_size: int,
    taken: Callable[[list[str]], set[str]] | None = None,
    copy_text: bool = False,
) -> Iterator[list[tuple]] | Iterator[list[str]]:
    """Yield ``count`` users with ids from ``first_id``, ``batch_size`` rows at a time.

    ``taken`` (when appending to stored users) returns which of a batch's e-mails are
    already stored; those users get a variant (``…<id>.<n>@…``) that is not.

    ``copy_text``: each row is one line (``str``, ending in ``\\n``) of PostgreSQL's ``COPY``
    text format, the columns in `USER_COLUMNS` order, tab-separated, ``\\N`` for NULL,
    booleans ``t``/``f``; otherwise a tuple. Text from the pools is escaped once, up front
    (`copy_escape`); e-mails need no escaping (ASCII letters, digits, dots, domains).
    """
    rng = random.Random(f"{seed}:users")
    r = rng.random
    people = build_people(seed=seed)
    text = copy_escape if copy_text else str
    countries = slots([(_flat(p, text), p.country.weight) for p in people.countries])
    kinds = slots([(_flat_profile(kind, text), weight) for kind, weight in _TYPE_WEIGHTS])
    n_countries, n_kinds = len(countries), len(kinds)
    org_domains, n_org_domains = people.company_domains, len(people.company_domains)
    organizations = max(1, count // USERS_PER_ORGANIZATION)
    step, day, clock = window_step(count), day_texts(), time_texts()
    cents, null = CENTS, COPY_NULL
    for start in range(0, count, batch_size):
        batch = []
        append = batch.append
        for k in range(start, min(start + batch_size, count)):
            # The draws' order is the rows' identity (same seed, same rows, test-pinned):
            # reorder a statement and every value after it changes.
            uid = first_id + k
            (
                firsts, n_firsts, lasts, n_lasts, cities, n_cities, domains, n_domains,
                code, landlines, n_landlines, mobiles, n_mobiles, low, span,
            ) = countries[trunc(r() * n_countries)]  # fmt: skip
            first, first_letters = firsts[trunc(r() * n_firsts)]
            last, last_letters = lasts[trunc(r() * n_lasts)]
            kind, credits, n_credits, segments, n_segments, in_org = kinds[trunc(r() * n_kinds)]
            if in_org:
                org = 1 + trunc(organizations * r() ** 2)
                email = f"{first_letters}.{last_letters}{uid}@{org_domains[org % n_org_domains]}"
            else:
                # A personal address in one of the usual shapes, built in one f-string.
                org, shape, domain = None, r(), domains[trunc(r() * n_domains)]
                if shape < 0.35:
                    email = f"{first_letters}.{last_letters}{uid}@{domain}"
                elif shape < 0.55:
                    email = f"{first_letters}{last_letters}{uid}@{domain}"
                elif shape < 0.7:
                    email = f"{first_letters[0]}{last_letters}{uid}@{domain}"
                elif shape < 0.8:
                    email = f"{first_letters}_{last_letters}{uid}@{domain}"
                elif shape < 0.9:
                    email = f"{last_letters}.{first_letters}{uid}@{domain}"
                else:
                    email = f"{first_letters}{uid}@{domain}"
            credit, credit_text = credits[trunc(r() * n_credits)]  # whole units
            segment, discount = segments[trunc(r() * n_segments)]
            # Phone numbers as prefix and subscriber: joined in the row's own f-string.
            landline, landline_no = landlines[trunc(r() * n_landlines)], low + trunc(r() * span)
            if r() < 0.85:
                mobile, mobile_no = mobiles[trunc(r() * n_mobiles)], low + trunc(r() * span)
            else:
                mobile = mobile_no = ""
            city = cities[trunc(r() * n_cities)]
            outstanding = trunc(credit * r() * 90) if r() < 0.7 else 0  # cents
            sales = trunc(credit * r() * 600)  # cents
            active = r() < 0.95
            s = trunc(WINDOW_START_TS + (k + r()) * step)
            if copy_text:
                # The tuple below, as one line; one f-string, no intermediate strings.
                append(
                    f"{uid}\t{first} {last}\t{email}\t{null if org is None else org}\t"
                    f"{landline}{landline_no}\t{mobile}{mobile_no}\t{code}\t{city}\t{credit_text}\t"
                    f"{outstanding // 100}.{cents[outstanding % 100]}\t"
                    f"{sales // 100}.{cents[sales % 100]}\t{kind}\t{segment}\t{discount}\t"
                    f"{'t' if active else 'f'}\t{day[s // 86_400]}{clock[s % 86_400]}\n"
                )
                continue
            append(
                (
                    uid,
                    f"{first} {last}",
                    email,
                    org,
                    f"{landline}{landline_no}",
                    f"{mobile}{mobile_no}",
                    code,
                    city,
                    credit_text,
                    f"{outstanding // 100}.{cents[outstanding % 100]}",
                    f"{sales // 100}.{cents[sales % 100]}",
                    kind,
                    segment,
                    discount,
                    active,
                    day[s // 86_400] + clock[s % 86_400],
                )
            )
        if taken is not None:
            batch = _without_taken(batch, taken)
        yield batch


def row_email(row: tuple | str) -> str:
    """The e-mail of a row in either form (`user_batches`)."""
    return row.split("\t", 3)[2] if isinstance(row, str) else row[2]


def with_email(row: tuple | str, email: str) -> tuple | str:
    """The row, in the same form, with ``email`` instead of its own."""
    if isinstance(row, str):
        fields = row.split("\t", 3)
        fields[2] = email
        return "\t".join(fields)
    return (*row[:2], email, *row[3:])


def _flat(p: CountryPeople, text: Callable[[str], str]) -> tuple:
    """One country's pools with their lengths, unpacked in one step per row.

    Phone prefixes come with the calling code and the spaces: one format per number.
    Display text (names, cities) goes through ``text`` (the ``COPY`` escaping, or none);
    a name's letters for e-mails are plain ASCII letters either way.
    """
    c = p.country
    landlines = tuple(text(f"{c.calling_code} {prefix} ") for prefix in c.landline)
    mobiles = tuple(text(f"{c.calling_code} {prefix} ") for prefix in c.mobile)
    first = tuple((text(name), letters) for name, letters in p.first)
    last = tuple((text(name), letters) for name, letters in p.last)
    cities = tuple(text(city) for city in p.cities)
    return (
        first, len(first), last, len(last), cities, len(cities),
        p.domains, len(p.domains), text(c.calling_code), landlines, len(landlines),
        mobiles, len(mobiles), c.subscriber_low, c.subscriber_span,
    )  # fmt: skip


def _flat_profile(kind: User.CustomerType, text: Callable[[str], str]) -> tuple:
    """A customer type with its profile as a tuple, lengths included.

    Every credit limit the type allows comes with its text (at most a thousand), and
    discounts come as decimal text: the rows pick text instead of formatting it. Names go
    through ``text``, as in `_flat`.
    """
    profile = PROFILES[kind]
    low, high, step = profile.credit
    credits = tuple((credit, f"{credit}.00") for credit in range(low, high + 1, step))
    segments = tuple((text(name), money(discount)) for name, discount in profile.segments)
    return (
        text(kind.value),
        credits,
        len(credits),
        segments,
        len(segments),
        profile.in_organization,
    )


def _without_taken(batch: list, taken: Callable[[list[str]], set[str]]) -> list:
    """Replace e-mails already stored (never generated ones: those end in a fresh id)."""
    stored = taken([row_email(row) for row in batch])
    if not stored:
        return batch
    fixed = []
    for row in batch:
        email = row_email(row)
        if email in stored:
            local, domain = email.split("@")
            n = 1
            while taken([f"{local}.{n}@{domain}"]):
                n += 1
            row = with_email(row, f"{local}.{n}@{domain}")
        fixed.append(row)
    return fixed
