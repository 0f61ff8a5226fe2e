"""``manage.py insert_data [--file F]``: run a batch through the concurrent insert service.

Prints one table per model (submitted id, status, reason) and a summary. Exits 1 only when
a database failed records; rejections are an expected outcome, not an error.
"""

from django.core.management.base import BaseCommand, CommandError

from api.domain.batches import ASSIGNMENT_FILE, InvalidBatch, read_batch
from api.domain.results import BatchResult
from api.domain.stores import STORE_NAMES
from api.services.batch_insert import batch_insert


class Command(BaseCommand):
    help = "Insert users, products and orders from a JSON file concurrently, with validation."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--file",
            default=str(ASSIGNMENT_FILE),
            help=f"JSON object with {', '.join(STORE_NAMES)} lists "
            "(default: the assignment fixture).",
        )

    def handle(self, *args, **options) -> None:
        try:
            batch = read_batch(options["file"])
        except InvalidBatch as exc:
            raise CommandError(str(exc)) from exc
        result = batch_insert(**batch, deadline_s=None)  # a command waits out a lock
        self.stdout.write(render_tables(batch, result))
        if result.has_failures:
            raise CommandError("some records failed: a database was unavailable; run again")


def render_tables(batch: dict[str, list], result: BatchResult) -> str:
    """Plain-text tables, one per model, with the submitted id of each record."""
    lines = []
    summary_lines = result.summary_lines()
    for name, results in result.by_model().items():
        lines.append(summary_lines[name])
        lines.append(f"  {'#':>3}  {'id':>6}  {'status':<9} reason")
        for r in results:
            record = batch[name][r.index]
            submitted = record.get("id", "-") if isinstance(record, dict) else "-"
            stored = f" (stored as {r.id})" if r.status == "inserted" and r.id != submitted else ""
            lines.append(
                f"  {r.index + 1:>3}  {submitted!s:>6}  {r.status:<9} {r.reason}{stored}".rstrip()
            )
        lines.append("")
    return "\n".join(lines)
