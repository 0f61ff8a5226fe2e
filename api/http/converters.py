"""URL converter for primary keys that fit a 64-bit integer column.

Django's ``int`` converter accepts any number of digits; an id beyond 2**63 - 1 would
overflow the database driver and surface as a 500 instead of a 404.
"""

from api.domain.limits import MAX_ID


class IdConverter:
    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 1 <= number <= MAX_ID:
            raise ValueError(value)
        return number

    def to_url(self, value: int) -> str:
        return str(value)
