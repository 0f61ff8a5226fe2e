"""A run of the ``/run/`` page, carried in its URL: ``/run/?result=<token>``.

The POST runs the batch and redirects (303) to a GET whose ``result`` parameter holds the
outcome of every record, JSON compressed and signed with ``SECRET_KEY``
(`django.core.signing`), so a reload shows the same result and submits nothing, and no
server state (sessions, a table) is needed. The assignment's 30 records take 400 to 460
characters of URL. A token that does not verify, altered or signed elsewhere, is `BadResult`;
so is one of an older format: the salt names the format and changes with it.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.core import signing

from api.domain.results import ALREADY_STORED, REJECTED, BatchResult, RecordResult
from api.domain.stores import STORE_NAMES

RESULT_PARAM = "result"
RESULT_SALT = "api.views.run_result.v1"  # names the format


class BadResult(ValueError):
    """The ``result`` parameter is not a run this server signed in this format."""


@dataclass(frozen=True)
class Run:
    """A batch's results, when it ran and the id each record was submitted with."""

    ran_at: datetime
    result: BatchResult
    submitted: dict[str, list[Any]]  # per model, by record index

    @classmethod
    def of(cls, batch: dict[str, list], result: BatchResult) -> "Run":
        """The run that gave ``result`` for ``batch``, now."""
        submitted = {
            name: [record.get("id") if isinstance(record, dict) else None for record in records]
            for name, records in batch.items()
        }
        return cls(datetime.now(UTC).replace(microsecond=0), result, submitted)

    def rows(self) -> dict[str, list[tuple[Any, RecordResult]]]:
        """Per model: ``(submitted id, result)`` of each record, in submission order."""
        return {
            name: [(self.submitted[name][r.index], r) for r in results]
            for name, results in self.result.by_model().items()
        }

    def count(self, *, status: str, code: str | None = None) -> int:
        """Records with ``status`` (and ``code``, when given), over all models."""
        return sum(
            r.status == status and (code is None or r.code == code)
            for results in self.result.by_model().values()
            for r in results
        )

    @property
    def records(self) -> int:
        return sum(map(len, self.result.by_model().values()))

    def already_stored_note(self) -> str:
        """What to tell when records were rejected because their ids are stored; ``""``
        when none were."""
        stored = self.count(status=REJECTED, code=ALREADY_STORED)
        if not stored:
            return ""
        why = "a row with the same id exists: this batch ran before, or other data holds it"
        if self.count(status=REJECTED) < self.records:
            return f"{stored} of {self.records} records were rejected as already stored ({why})."
        others = self.records - stored
        who = "they are" if not others else f"{stored} {'is' if stored == 1 else 'are'}"
        rest = f"; the other {others} broke a rule" if others else ""
        return (
            f"All {self.records} records were rejected and row counts are unchanged: "
            f"{who} already stored ({why}){rest}."
        )

    def token(self) -> str:
        """This run, compressed and signed: the value of ``?result=``."""
        rows = {
            name: [[r.index, r.status, r.id, r.reason, r.code, submitted] for submitted, r in rs]
            for name, rs in self.rows().items()
        }
        payload = {"at": int(self.ran_at.timestamp()), "rows": rows}
        return signing.dumps(payload, salt=RESULT_SALT, compress=True)

    @classmethod
    def from_token(cls, token: str) -> "Run":
        """The run `token` made. Raises `BadResult` when it does not verify."""
        try:
            payload = signing.loads(token, salt=RESULT_SALT)
            ran_at = datetime.fromtimestamp(payload["at"], UTC)
            results, submitted = {}, {}
            for name in STORE_NAMES:
                rows = payload["rows"][name]
                results[name] = [RecordResult(*row[:4], code=row[4]) for row in rows]
                submitted[name] = [None] * len(rows)
                for row in rows:
                    submitted[name][row[0]] = row[5]
        except (signing.BadSignature, IndexError, KeyError, TypeError, ValueError) as exc:
            raise BadResult(str(exc)) from exc
        return cls(ran_at, BatchResult(**results), submitted)
