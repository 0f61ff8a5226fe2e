"""Rows for the ``users`` table: people with a country, an organisation and a segment.

Each user is drawn from one country's pools (name, city, phone numbers with that country's
calling code, a free-mail domain), then given a customer type, and from the type a
credit limit, balances, a segment with its discount and, for organisations, an
``organization_id`` and an e-mail on the organisation's domain.

The e-mail is ``<letters><id>@<domain>``: the local part's letters come from the name and
never end in a digit, so the id suffix makes every generated e-mail unique, and it is
lower-case as the validation rules store it. Rows come out in the model's column order,
`USER_COLUMNS`, one batch (a list of tuples) at a time, so memory stays flat.
"""

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from api.models import User
from api.services.generation.pools import CountryPeople, build_people
from api.services.generation.values import (
    WINDOW_START_TS,
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
) -> Iterator[list[tuple]]:
    """Yield ``count`` users with ids from ``first_id``, ``batch_size`` rows at a time.

    ``taken`` (when appending to stored users) returns which of a batch's e-mails are
    already stored; those users get a variant (``…<id>.<n>@…``) that is not.
    """
    rng = random.Random(f"{seed}:users")
    r = rng.random
    people = build_people(seed=seed)
    countries = slots([(_flat(p), p.country.weight) for p in people.countries])
    kinds = slots([(_flat_profile(kind), weight) for kind, weight in _TYPE_WEIGHTS])
    n_countries, n_kinds = len(countries), len(kinds)
    org_domains, n_org_domains = people.company_domains, len(people.company_domains)
    organizations = max(1, count // USERS_PER_ORGANIZATION)
    step, day, clock = window_step(count), day_texts(), time_texts()
    for start in range(0, count, batch_size):
        batch = []
        for k in range(start, min(start + batch_size, count)):
            uid = first_id + k
            firsts, lasts, cities, domains, code, landline, mobile, low, span = countries[
                int(r() * n_countries)
            ]
            first, first_letters = firsts[int(r() * len(firsts))]
            last, last_letters = lasts[int(r() * len(lasts))]
            kind, min_credit, credit_steps, credit_step, segments, in_org = kinds[
                int(r() * n_kinds)
            ]
            if in_org:
                org = 1 + int(organizations * r() ** 2)
                local, domain = f"{first_letters}.{last_letters}", org_domains[org % n_org_domains]
            else:
                org, local = None, _personal_local(first_letters, last_letters, r())
                domain = domains[int(r() * len(domains))]
            credit = min_credit + credit_step * int(r() * credit_steps)  # whole units
            segment, discount = segments[int(r() * len(segments))]
            phone = f"{code} {landline[int(r() * len(landline))]} {low + int(r() * span)}"
            has_mobile = r() < 0.85
            batch.append(
                (
                    uid,
                    f"{first} {last}",
                    f"{local}{uid}@{domain}",
                    org,
                    phone,
                    f"{code} {mobile[int(r() * len(mobile))]} {low + int(r() * span)}"
                    if has_mobile
                    else "",
                    code,
                    cities[int(r() * len(cities))],
                    f"{credit}.00",
                    money(int(credit * r() * 90) if r() < 0.7 else 0),
                    money(int(credit * r() * 600)),
                    kind,
                    segment,
                    discount,
                    r() < 0.95,
                    day[(s := int(WINDOW_START_TS + (k + r()) * step)) // 86_400]
                    + clock[s % 86_400],
                )
            )
        if taken is not None:
            batch = _without_taken(batch, taken)
        yield batch


def _flat(p: CountryPeople) -> tuple:
    """One country's pools as a tuple, unpacked in one step per row."""
    c = p.country
    return (
        p.first,
        p.last,
        p.cities,
        p.domains,
        c.calling_code,
        c.landline,
        c.mobile,
        c.subscriber_low,
        c.subscriber_span,
    )


def _flat_profile(kind: User.CustomerType) -> tuple:
    """A customer type with its profile as a tuple; discounts already as decimal text."""
    profile = PROFILES[kind]
    low, high, step = profile.credit
    segments = tuple((name, money(discount)) for name, discount in profile.segments)
    return kind.value, low, (high - low) // step + 1, step, segments, profile.in_organization


def _personal_local(first: str, last: str, u: float) -> str:
    """The letters of a personal address, in one of the usual shapes."""
    if u < 0.35:
        return f"{first}.{last}"
    if u < 0.55:
        return f"{first}{last}"
    if u < 0.7:
        return f"{first[0]}{last}"
    if u < 0.8:
        return f"{first}_{last}"
    if u < 0.9:
        return f"{last}.{first}"
    return first


def _without_taken(batch: list[tuple], taken: Callable[[list[str]], set[str]]) -> list[tuple]:
    """Replace e-mails already stored (never generated ones: those end in a fresh id)."""
    stored = taken([row[2] for row in batch])
    if not stored:
        return batch
    fixed = []
    for row in batch:
        if row[2] in stored:
            local, domain = row[2].split("@")
            n = 1
            while taken([f"{local}.{n}@{domain}"]):
                n += 1
            row = (*row[:2], f"{local}.{n}@{domain}", *row[3:])
        fixed.append(row)
    return fixed
